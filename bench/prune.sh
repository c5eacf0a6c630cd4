#!/usr/bin/env bash
# Prune benchmark: `arbor prune` vs `ostree prune` on copies of the same
# repository, in the same run, and how long a pull running meanwhile is
# held up by each.
#
# The repository (bare mode, built once with `ostree commit` and cached):
# 20 commits on `main` of a debootstrap --variant=minbase tree (the tree
# bench/pull.sh caches), each round editing ~3% of the files, adding 50 new
# ones and removing ~1%; `release` points at round 10. Cases:
#   history: prune --refs-only --depth=0   (drops 18 commits' own objects)
#   orphans: prune                         (walks everything, deletes nothing)
# Every measurement starts from a fresh copy on a freshly made ext4 on a
# loop device (see BENCHMARKS.md: deleting on the filesystem where earlier
# runs deleted measures ext4's allocator, not the tools), page cache warm
# from the copy, `sync` before. The tools alternate who goes first.
#
# Concurrent pull: while each tool prunes the history, tiny one-file
# commits are pulled from a local repository one after another (arbor
# pull / ostree pull-local), and the longest such pull is reported next to
# the same pull's time on an idle store. libostree holds the exclusive lock
# for the whole prune; arbor holds it in short batches.
#
# Usage: bench/prune.sh [RUNS]      (default 3; needs root)
# Env:   BENCH_DIR (default /var/tmp/arbor-bench), SUITE, MIRROR as pull.sh
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
top=$PWD
work=${BENCH_DIR:-/var/tmp/arbor-bench}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work"

need=()
for pair in ostree:ostree debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
arbor=${CARGO_TARGET_DIR:-$top/target}/release/arbor

# --- data -----------------------------------------------------------------
if [ ! -e "$work/tree1/.complete" ]; then
  rm -rf "$work/tree1"
  debootstrap --variant=minbase "$suite" "$work/tree1" "$mirror" >"$work/debootstrap.log" 2>&1
  touch "$work/tree1/.complete"
fi
find "$work/tree1/dev" -mindepth 1 -delete 2>/dev/null || true
p=$work/prune
template=$p/template
if [ ! -e "$p/.complete" ]; then
  rm -rf "$p"
  mkdir -p "$p"
  ostree --repo="$template" init --mode=bare
  cp -a "$work/tree1" "$p/tree"
  rm -f "$p/tree/.complete"
  for i in $(seq 20); do
    if [ "$i" -gt 1 ]; then
      find "$p/tree" -type f ! -path '*/opt/*' | sort | awk -v i="$i" 'NR % 37 == i' |
        while read -r f; do echo "# round $i" >>"$f"; done
      find "$p/tree" -type f ! -path '*/opt/*' | sort | awk -v i="$i" 'NR % 101 == i' | xargs -r rm -f
      mkdir -p "$p/tree/opt/round$i"
      for j in $(seq 50); do head -c 8192 /dev/urandom >"$p/tree/opt/round$i/f$j"; done
    fi
    ostree --repo="$template" commit --fsync=false -b main --tree=dir="$p/tree" \
      -s "round $i" --timestamp=@$((1700000000 + i * 86400)) >/dev/null
    if [ "$i" = 10 ]; then ostree --repo="$template" refs --create=release main; fi
  done
  # The pulls that run during a prune: 40 commits of one small file each.
  ostree --repo="$p/small" init --mode=bare-user
  mkdir -p "$p/small-tree"
  for k in $(seq 40); do
    echo "small $k" >"$p/small-tree/f"
    ostree --repo="$p/small" commit --fsync=false -b "small/$k" --tree=dir="$p/small-tree" >/dev/null
  done
  touch "$p/.complete"
fi
files=$(find "$work/tree1" -type f | wc -l)
size=$(du -sh "$template/objects" | cut -f1)

# --- runs -----------------------------------------------------------------
img=$work/prune-fs.img
mnt=$work/prune-mnt
mkdir -p "$mnt"
fresh_copy() { # a fresh ext4 holding a copy of the template at $mnt/repo
  umount "$mnt" 2>/dev/null || true
  truncate -s 6G "$img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$img"
  mount -o loop "$img" "$mnt"
  cp -a "$template" "$mnt/repo"
  sync
}
trap 'umount "$mnt" 2>/dev/null || true' EXIT
measure() { # name, then the command; appends "seconds rss_kb cpu_s" to $p/NAME.times
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$p/time.out" "$@" >"$p/$name.out" 2>"$p/$name.err" || { cat "$p/$name.err"; exit 1; }
  awk '{print $1, $2, $3 + $4}' "$p/time.out" >>"$p/$name.times"
}
now() { date +%s.%N; }
# Pulls small commits one after another while PID runs; appends the
# longest pull to $p/NAME.blocked and the number of pulls to $p/NAME.pulls.
pulls_during() { # name pid pull-command-prefix...
  local name=$1 pid=$2; shift 2
  local k=0 longest=0
  while kill -0 "$pid" 2>/dev/null; do
    k=$((k + 1))
    [ "$k" -le 40 ] || break
    local t0 t1
    t0=$(now)
    "$@" "small/$k" >/dev/null 2>&1
    t1=$(now)
    longest=$(awk -v a="$longest" -v d="$(awk -v x="$t0" -v y="$t1" 'BEGIN {print y - x}')" 'BEGIN {print (d > a) ? d : a}')
  done
  echo "$longest" >>"$p/$name.blocked"
  echo "$k" >>"$p/$name.pulls"
}
idle_pull() { # name pull-command-prefix...: one pull on an idle store
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@" small/40 >/dev/null 2>&1; t1=$(now)
  awk -v x="$t0" -v y="$t1" 'BEGIN {print y - x}' >>"$p/$name.idle"
}

rm -f "$p"/*.times "$p"/*.blocked "$p"/*.pulls "$p"/*.idle
run_case() { # tool case
  local tool=$1 case=$2 args
  case $case in
    history) args=(--refs-only --depth=0) ;;
    orphans) args=() ;;
  esac
  fresh_copy
  if [ "$tool" = ostree ]; then
    measure "ostree-$case" ostree --repo="$mnt/repo" prune "${args[@]}"
  else
    measure "arbor-$case" "$arbor" --repo "$mnt/repo" prune "${args[@]}"
  fi
  ostree --repo="$mnt/repo" fsck -q >/dev/null
}
run_concurrent() { # tool
  local tool=$1
  fresh_copy
  if [ "$tool" = ostree ]; then
    idle_pull ostree ostree --repo="$mnt/repo" pull-local "$p/small"
    ostree --repo="$mnt/repo" prune --refs-only --depth=0 >/dev/null &
    pulls_during ostree $! ostree --repo="$mnt/repo" pull-local "$p/small"
  else
    idle_pull arbor "$arbor" --repo "$mnt/repo" pull -q "$p/small"
    "$arbor" --repo "$mnt/repo" prune --refs-only --depth=0 --json >"$p/arbor-concurrent.json" &
    pulls_during arbor $! "$arbor" --repo "$mnt/repo" pull -q "$p/small"
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["longest_lock_hold_ms"], v["lock_holds"])' \
      "$p/arbor-concurrent.json" >>"$p/arbor.holds"
  fi
  wait
  ostree --repo="$mnt/repo" fsck -q >/dev/null
}
rm -f "$p/arbor.holds"
for r in $(seq "$runs"); do
  for case in history orphans; do
    if [ $((r % 2)) = 1 ]; then run_case ostree "$case"; run_case arbor "$case"
    else run_case arbor "$case"; run_case ostree "$case"; fi
  done
  run_concurrent ostree
  run_concurrent arbor
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { cut -d' ' -f"$1" <"$p/$2.times" | median; }
deleted=$(grep -o 'Deleted [0-9]* objects' "$p/ostree-history.out" | head -1)
echo "Repository: 20 commits of debootstrap --variant=minbase $suite ($files files), bare mode, $size of objects; history: $deleted"
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); each run on a fresh loop-mounted ext4; ostree $(ostree --version | awk -F\' '/Version/ {print $2}'); $runs runs each"
echo
echo "| prune | median wall (s) | median CPU, user+sys (s) | peak RSS (MiB) | wall vs ostree |"
echo "|---|---|---|---|---|"
for case in history orphans; do
  o=$(col 1 "ostree-$case"); a=$(col 1 "arbor-$case")
  orss=$(col 2 "ostree-$case"); arss=$(col 2 "arbor-$case")
  label=$([ "$case" = history ] && echo "--refs-only --depth=0" || echo "(no options)")
  echo "| ostree prune $label | $o | $(col 3 "ostree-$case") | $((orss / 1024)) | 1.00 |"
  echo "| arbor prune $label | $a | $(col 3 "arbor-$case") | $((arss / 1024)) | $(awk -v a="$a" -v o="$o" 'BEGIN {printf "%.2f", a / o}') |"
done
echo
echo "| pull of a one-file commit | idle store (s) | longest during a prune (s) | pulls during the prune |"
echo "|---|---|---|---|"
for tool in ostree arbor; do
  echo "| $tool | $(median <"$p/$tool.idle") | $(median <"$p/$tool.blocked") | $(median <"$p/$tool.pulls") |"
done
echo
echo "arbor's exclusive lock holds during those prunes (longest ms, count): $(tr '\n' ';' <"$p/arbor.holds")"
