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
# shellcheck source=bench/pull-common.sh
source "$(dirname "$0")/pull-common.sh"
src=$work/srv/repo

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
