#!/usr/bin/env bash
# Static-delta benchmark: arbor vs ostree applying the same deltas, served
# by nginx on 127.0.0.1 (loopback: this measures applying, not the network).
#
# Uses bench/pull.sh's data (a debootstrap --variant=minbase tree and a
# modified second version, committed to an archive repository and cached in
# BENCH_DIR); this script first runs `bench/pull.sh 0`-style preparation if
# that repository is missing. A copy of it (hardlinked objects) gets two
# deltas made by `ostree static-delta generate`: from scratch to commit 1,
# and commit 1 → commit 2, plus `ostree summary -u` (which writes the delta
# indexes). Then, in the same run, into an empty bare store on a freshly
# made ext4 each time:
#   cold:   pull commit 1 (both tools use the scratch delta)
#   update: pull commit 2 on top (both use the 1 → 2 delta)
# Medians of RUNS runs, peak RSS; `ostree fsck` after every pull, and the
# arbor log is checked to have used the delta. Prints a Markdown table for
# BENCHMARKS.md.
#
# Usage: bench/delta.sh [RUNS]     (default 5; needs root)
# Env:   BENCH_DIR (default /var/tmp/arbor-bench), SUITE, MIRROR (as pull.sh)
set -euo pipefail
runs=${1:-5}
# shellcheck source=bench/pull-common.sh
source "$(dirname "$0")/pull-common.sh"

# --- the deltas --------------------------------------------------------------
flock 9
drepo=$work/srv-delta/repo
if [ ! -e "$drepo/.complete-$c1-$c2" ]; then
  rm -rf "$work/srv-delta"
  mkdir -p "$work/srv-delta"
  cp -al "$work/srv/repo" "$drepo"
  rm -f "$drepo/summary"
  ostree --repo="$drepo" static-delta generate --empty --to="$c1" >"$work/delta-gen.log" 2>&1
  ostree --repo="$drepo" static-delta generate --from="$c1" --to="$c2" >>"$work/delta-gen.log" 2>&1
  ostree --repo="$drepo" summary -u
  touch "$drepo/.complete-$c1-$c2"
fi
flock -u 9

# --- server ------------------------------------------------------------------
port=$(free_port)
cat >"$work/nginx-delta.conf" <<CONF
worker_processes 2;
pid $work/nginx-delta.pid;
error_log $work/nginx-delta-error.log;
events { worker_connections 1024; }
http {
  access_log $work/nginx-delta-access.log;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $work/srv-delta; }
}
CONF
rm -f "$work/nginx-delta-access.log"
nginx -c "$work/nginx-delta.conf"
url=http://127.0.0.1:$port/repo

trap 'umount "$mnt" 2>/dev/null || true; kill "$(cat "$work/nginx-delta.pid")" 2>/dev/null || true' EXIT
# Both tools must have used the delta (superblock and parts fetched); the
# loose objects each fetched besides (the delta's fallbacks: files over
# 4 MB by default) are counted for the table.
check_used_delta() { # name
  grep -q '/deltas/.*/superblock HTTP/1.1" 200' "$work/nginx-delta-access.log" || { echo "$1: no superblock fetched" >&2; exit 1; }
  grep -q '/deltas/.*/[0-9]* HTTP/1.1" 200' "$work/nginx-delta-access.log" || { echo "$1: no part fetched" >&2; exit 1; }
  local n
  n=$(grep -c '\.filez HTTP' "$work/nginx-delta-access.log" || true)
  echo "${n:-0}" >>"$work/$1.loose"
  : >"$work/nginx-delta-access.log"
  kill -USR1 "$(cat "$work/nginx-delta.pid")"
}
dst=$mnt/dst
rm -f "$work"/delta-*.times "$work"/delta-*.loose
for _ in $(seq "$runs"); do
  fresh_fs; ostree --repo="$dst" init --mode=bare
  ostree --repo="$dst" remote add --no-gpg-verify origin "$url"
  : >"$work/nginx-delta-access.log"; kill -USR1 "$(cat "$work/nginx-delta.pid")"
  measure delta-ostree-cold ostree --repo="$dst" pull origin "main@$c1"
  check_used_delta delta-ostree-cold
  ostree --repo="$dst" fsck -q >/dev/null
  measure delta-ostree-update ostree --repo="$dst" pull origin "main@$c2"
  check_used_delta delta-ostree-update
  ostree --repo="$dst" fsck -q >/dev/null

  fresh_fs; "$arbor" --repo "$dst" init --mode bare
  "$arbor" --repo "$dst" remote add origin "$url" --no-sign-verify >/dev/null
  measure delta-arbor-cold "$arbor" --repo "$dst" pull origin "main@$c1"
  check_used_delta delta-arbor-cold
  ostree --repo="$dst" fsck -q >/dev/null
  measure delta-arbor-update "$arbor" --repo "$dst" pull origin "main@$c2"
  check_used_delta delta-arbor-update
  ostree --repo="$dst" fsck -q >/dev/null
done

echo "Tree: debootstrap --variant=minbase $suite, $files files; deltas by ostree static-delta generate (defaults)"
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); stores on a fresh loop-mounted ext4 per run; nginx on loopback; ostree $(ostree --version | awk -F\' '/Version/ {print $2}'); $runs runs each"
echo
echo "| delta pull into a bare store | median wall (s) | peak RSS (MiB) | loose objects fetched | vs ostree |"
echo "|---|---|---|---|---|"
for kind in cold update; do
  o=$(col 1 "delta-ostree-$kind"); a=$(col 1 "delta-arbor-$kind")
  orss=$(col 2 "delta-ostree-$kind"); arss=$(col 2 "delta-arbor-$kind")
  label=$([ "$kind" = cold ] && echo "scratch delta to commit 1" || echo "delta commit 1 → 2")
  oloose=$(median <"$work/delta-ostree-$kind.loose"); aloose=$(median <"$work/delta-arbor-$kind.loose")
  echo "| ostree pull ($label) | $o | $((orss / 1024)) | $oloose | 1.00 |"
  echo "| arbor pull ($label) | $a | $((arss / 1024)) | $aloose | $(awk -v a="$a" -v o="$o" 'BEGIN {printf "%.2f", a / o}') |"
done
