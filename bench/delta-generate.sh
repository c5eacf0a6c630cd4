#!/usr/bin/env bash
# Static-delta generation benchmark: `arbor static-delta generate` vs
# `ostree static-delta generate` on the same repository, in the same run,
# for C1→C2 and for --empty of C1 (a whole debootstrap tree).
#
# The data is bench/pull.sh's: a debootstrap --variant=minbase tree (C1) and
# an update of it (C2), committed by ostree into an archive repository,
# cached in $BENCH_DIR (default /var/tmp/arbor-bench). This script builds it
# the same way when pull.sh has not. Each tool generates each delta into a
# copy of that repository (the other tool's delta removed first); time is
# wall clock with `sync` before each run, size is the delta's superblock and
# parts (fallback objects listed apart: clients fetch them as ordinary
# objects). After the runs, arbor's --empty delta is applied with
# `ostree static-delta apply-offline` and checked with `ostree fsck`, and the
# C1→C2 delta on top of it, so the numbers are for deltas ostree accepts.
#
# Usage: bench/delta-generate.sh [RUNS]      (default 3; needs root)
# Env:   BENCH_DIR, SUITE, MIRROR (as bench/pull.sh), JOBS (arbor --jobs;
#        default: all cores)
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

# --- data (as bench/pull.sh) ------------------------------------------------
if [ ! -e "$work/tree1/.complete" ]; then
  rm -rf "$work/tree1"
  debootstrap --variant=minbase "$suite" "$work/tree1" "$mirror" >"$work/debootstrap.log" 2>&1
  touch "$work/tree1/.complete"
fi
find "$work/tree1/dev" -mindepth 1 -delete 2>/dev/null || true
if [ ! -e "$work/srv/repo/summary" ]; then
  rm -rf "$work/srv" "$work/tree2"
  mkdir -p "$work/srv"
  ostree --repo="$work/srv/repo" init --mode=archive
  ostree --repo="$work/srv/repo" commit -b main --tree=dir="$work/tree1" -s one --timestamp=@1700000000 >/dev/null
  cp -a "$work/tree1" "$work/tree2"
  find "$work/tree2/usr/share/doc" -type f -name 'copyright' | awk 'NR % 4 == 0' | while read -r f; do echo "# updated" >>"$f"; done
  mkdir -p "$work/tree2/opt/new" && for i in $(seq 200); do head -c 4096 /dev/urandom >"$work/tree2/opt/new/f$i"; done
  find "$work/tree2/usr/share/locale" -mindepth 1 -maxdepth 1 -type d | awk 'NR % 3 == 0' | xargs -r rm -rf
  ostree --repo="$work/srv/repo" commit -b main --tree=dir="$work/tree2" -s two --timestamp=@1700000100 >/dev/null
  ostree --repo="$work/srv/repo" summary -u
fi
src=$work/srv/repo
c2=$(ostree --repo="$src" rev-parse main)
c1=$(ostree --repo="$src" rev-parse main^)
files=$(find "$work/tree1" -type f | wc -l)
size=$(du -sh "$work/tree1" | cut -f1)

# --- runs -----------------------------------------------------------------
repo=$work/delta-repo
rm -rf "$repo"
mkdir -p "$repo"
cp -a "$src/config" "$src/objects" "$src/refs" "$repo/"
mkdir -p "$repo/tmp" "$repo/state"

b64() { python3 -c 'import base64,binascii,sys; print(base64.b64encode(binascii.unhexlify(sys.argv[1])).decode().rstrip("=").replace("/","_"))' "$1"; }
deltadir() { # FROM|"" TO
  local t; t=$(b64 "$2")
  if [ -z "$1" ]; then echo "$repo/deltas/${t:0:2}/${t:2}"; else
    local f; f=$(b64 "$1"); echo "$repo/deltas/${f:0:2}/${f:2}-$t"; fi
}
measure() { # name, then the command; appends seconds to $work/NAME.times
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >/dev/null 2>"$work/$name.err" || { cat "$work/$name.err"; exit 1; }
  cat "$work/time.out" >>"$work/$name.times"
}
delta_bytes() { # dir: superblock + parts
  find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s}'
}
jobs_arg=()
[ -n "${JOBS:-}" ] && jobs_arg=(--jobs "$JOBS")

rm -f "$work"/dg-*.times "$work"/dg-*.size
for _ in $(seq "$runs"); do
  for kind in update empty; do
    if [ $kind = update ]; then from=$c1; oargs=(--from="$c1" --to="$c2"); aargs=(--from "$c1" --to "$c2");
    else from=""; oargs=(--empty --to="$c1"); aargs=(--empty --to "$c1"); fi
    dir=$(deltadir "$from" "$([ $kind = update ] && echo "$c2" || echo "$c1")")
    rm -rf "$repo/deltas"
    measure "dg-ostree-$kind" ostree --repo="$repo" static-delta generate "${oargs[@]}"
    delta_bytes "$dir" >"$work/dg-ostree-$kind.size"
    rm -rf "$repo/deltas"
    measure "dg-arbor-$kind" "$arbor" --repo "$repo" static-delta generate "${jobs_arg[@]}" "${aargs[@]}"
    delta_bytes "$dir" >"$work/dg-arbor-$kind.size"
  done
done

# arbor's deltas are applied by ostree: --empty into a fresh store, then C1→C2.
rm -rf "$repo/deltas" "$work/apply"
# Without fallbacks (objects a pull would fetch apart, which apply-offline
# cannot), so that everything goes through the parts.
"$arbor" --repo "$repo" static-delta generate --empty --to "$c1" --min-fallback-size 0 "${jobs_arg[@]}" >/dev/null
"$arbor" --repo "$repo" static-delta generate --from "$c1" --to "$c2" --min-fallback-size 0 "${jobs_arg[@]}" >/dev/null
ostree --repo="$work/apply" init --mode=bare-user
ostree --repo="$work/apply" static-delta apply-offline "$(deltadir "" "$c1")/superblock"
ostree --repo="$work/apply" static-delta apply-offline "$(deltadir "$c1" "$c2")/superblock"
ostree --repo="$work/apply" pull-local "$repo" "$c2" >/dev/null
ostree --repo="$work/apply" fsck -q >/dev/null
rm -rf "$work/apply"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { cut -d' ' -f"$1" <"$work/$2.times" | median; }
echo "Tree: debootstrap --variant=minbase $suite, $files files, $size; C2 as in bench/pull.sh"
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); ostree $(ostree --version | awk -F\' '/Version/ {print $2}'); $runs runs each; arbor --jobs ${JOBS:-$(nproc)}"
echo
echo "| static-delta generate | median wall (s) | peak RSS (MiB) | delta bytes | time vs ostree | size vs ostree |"
echo "|---|---|---|---|---|---|"
for kind in update empty; do
  label=$([ $kind = update ] && echo "C1→C2" || echo "--empty C1")
  o=$(col 1 "dg-ostree-$kind"); a=$(col 1 "dg-arbor-$kind")
  orss=$(col 2 "dg-ostree-$kind"); arss=$(col 2 "dg-arbor-$kind")
  os=$(cat "$work/dg-ostree-$kind.size"); as=$(cat "$work/dg-arbor-$kind.size")
  echo "| ostree, $label | $o | $((orss / 1024)) | $os | 1.00 | 1.00 |"
  echo "| arbor, $label | $a | $((arss / 1024)) | $as | $(awk -v a="$a" -v o="$o" 'BEGIN {printf "%.2f", a / o}') | $(awk -v a="$as" -v o="$os" 'BEGIN {printf "%.3f", a / o}') |"
done
