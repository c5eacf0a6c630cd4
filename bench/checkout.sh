#!/usr/bin/env bash
# Benchmark: `ostree checkout` vs `arbor checkout` of a realistic tree, in
# hardlink mode (the default of both) and in copy mode
# (`ostree checkout --force-copy` vs `arbor checkout --link copy`).
#
# The tree is a copy of this machine's /usr/share (without locale/, doc/
# and package-lists/) plus /usr/lib/python3*, about 330 MB in 37,000
# files, committed once by ostree into a bare repository. Each timed run
# checks out into a fresh directory: the preparation step moves the last
# output out of the way (into a trash directory deleted at the end) and
# syncs; with COLD=1 it also drops the page cache, so the repository is
# read from disk.
#
# Why not `rm -rf` between runs: on ext4, allocating inodes within 30 s of
# deleting many (dirty_expire_centisecs) scans past every recently deleted
# one (`recently_deleted()` in the kernel's inode allocator); after removing
# 37,000 files that cost dominated both tools' times (copy mode: 20-30 s
# instead of 1-10 s) and measured the kernel, not the checkout.
#
# Usage: bench/checkout.sh            (RUNS=5 COLD=0 BENCH_DIR=/tmp/arbor-bench)
#        REBUILD=1 bench/checkout.sh  (rebuild the tree and the repository)
# Needs root (the tree has root-owned files; COLD=1 drops caches), ostree,
# and hyperfine (installed with apt-get when missing; else a plain loop).
set -euo pipefail
cd "$(dirname "$0")/.."

W=${BENCH_DIR:-/tmp/arbor-bench}
RUNS=${RUNS:-5}
COLD=${COLD:-0}
REPO=$W/repo
OUT=$W/out
TRASH=$W/trash

if ! command -v hyperfine >/dev/null; then
  (apt-get install -y -qq hyperfine >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq hyperfine; } >/dev/null 2>&1) || true
fi

cargo build --release --quiet
ARBOR=$PWD/target/release/arbor

if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$REPO/config" ]; then
  rm -rf "$W"
  mkdir -p "$W/tree"
  echo "building the tree in $W/tree" >&2
  py=$(cd / && ls -d usr/lib/python3.* 2>/dev/null | head -n 1 || true)
  tar -C / --exclude=usr/share/locale --exclude=usr/share/doc \
    --exclude=usr/share/package-lists -cf - usr/share $py | tar -C "$W/tree" -xf -
  ostree --repo="$REPO" init --mode=bare
  echo "committing it with ostree" >&2
  ostree --repo="$REPO" commit --fsync=false -b main --tree=dir="$W/tree" >/dev/null
fi

# Earlier outputs go now, and then the allocator's memory of them.
if [ -e "$TRASH" ] || [ -e "$OUT" ]; then
  rm -rf "$TRASH" "$OUT"
  sleep 35
fi
mkdir -p "$TRASH"
trash() { for d in "$@"; do [ -e "$d" ] && mv "$d" "$(mktemp -d -p "$TRASH")/"; done; true; }
prep="if [ -e $OUT ]; then mv $OUT \$(mktemp -d -p $TRASH)/; fi; sync"
if [ "$COLD" = 1 ]; then
  prep="$prep; echo 3 > /proc/sys/vm/drop_caches"
fi

echo "== machine" >&2
{
  echo "cpus: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "filesystem of $W: $(findmnt -n -o FSTYPE,OPTIONS -T "$W")"
  echo "ostree: $(ostree --version | awk -F"'" '/Version/ {print $2}')"
  echo "tree: $(du -sh "$W/tree" | cut -f1), $(find "$W/tree" -type f | wc -l) files," \
    "$(find "$W/tree" -type l | wc -l) symlinks, $(find "$W/tree" -type d | wc -l) directories"
  echo "runs: $RUNS per command, COLD=$COLD"
} | tee "$W/machine.txt" >&2

# Both tools must produce the same tree before their speed means anything.
same_tree() {
  local mode=$1 flags_o=$2 flags_a=$3
  ostree --repo="$REPO" checkout $flags_o main "$W/o"
  "$ARBOR" --repo "$REPO" checkout $flags_a main "$W/a"
  if ! diff <(cd "$W/o" && find . -printf '%p %y %m %U %G %s %l\n' | grep -v ' d ' | sort) \
            <(cd "$W/a" && find . -printf '%p %y %m %U %G %s %l\n' | grep -v ' d ' | sort) >/dev/null ||
     ! diff <(cd "$W/o" && find . -type d -printf '%p %m %U %G\n' | sort) \
            <(cd "$W/a" && find . -type d -printf '%p %m %U %G\n' | sort) >/dev/null; then
    echo "$mode: ostree and arbor checkouts differ" >&2
    exit 1
  fi
  trash "$W/o" "$W/a"
}

bench() {
  local mode=$1 ostree_cmd=$2 arbor_cmd=$3
  if command -v hyperfine >/dev/null; then
    hyperfine --style basic --runs "$RUNS" --prepare "$prep" \
      --export-json "$W/$mode.json" \
      -n "ostree $mode" "$ostree_cmd" -n "arbor $mode" "$arbor_cmd" >&2
    python3 - "$W/$mode.json" "$mode" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
mode = sys.argv[2]
o, a = r["ostree " + mode], r["arbor " + mode]
print(f"{mode}: ostree median {o['median']:.3f} s (mean {o['mean']:.3f} ± {o['stddev']:.3f}), "
      f"arbor median {a['median']:.3f} s (mean {a['mean']:.3f} ± {a['stddev']:.3f}), "
      f"arbor/ostree = {a['median'] / o['median']:.2f}")
EOF
  else
    local name cmd t
    for name in ostree arbor; do
      if [ $name = ostree ]; then cmd=$ostree_cmd; else cmd=$arbor_cmd; fi
      : >"$W/$mode-$name.times"
      for _ in $(seq "$RUNS"); do
        bash -c "$prep"
        t=$(date +%s.%N)
        bash -c "$cmd" >/dev/null
        echo "$(date +%s.%N) - $t" | bc >>"$W/$mode-$name.times"
      done
    done
    python3 - "$W" "$mode" <<'EOF'
import statistics, sys
w, mode = sys.argv[1:]
med = {n: statistics.median(float(l) for l in open(f"{w}/{mode}-{n}.times")) for n in ("ostree", "arbor")}
print(f"{mode}: ostree median {med['ostree']:.3f} s, arbor median {med['arbor']:.3f} s, "
      f"arbor/ostree = {med['arbor'] / med['ostree']:.2f}")
EOF
  fi
}

same_tree hardlink "" "--link hardlink"
same_tree copy "--force-copy" "--link copy"

echo "== results" >&2
{
  bench hardlink "ostree --repo=$REPO checkout main $OUT" \
    "$ARBOR --repo $REPO checkout --link hardlink main $OUT"
  bench copy "ostree --repo=$REPO checkout --force-copy main $OUT" \
    "$ARBOR --repo $REPO checkout --link copy main $OUT"
} | tee "$W/results.txt"
echo "removing the outputs (slow: many files)" >&2
rm -rf "$OUT" "$TRASH"
