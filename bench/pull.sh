#!/usr/bin/env bash
# Pull benchmark: arbor vs ostree over HTTP on the same data and server.
#
# Builds a realistic OS tree (debootstrap --variant=minbase), commits it and
# a modified second version with `ostree` into an archive repository, serves
# that with nginx on 127.0.0.1, and times, in the same run, cold pulls into
# an empty bare store by `ostree pull` and by `arbor pull` (several runs,
# medians, peak RSS), plus an update pull from the first commit to the
# second. Prints a Markdown table for BENCHMARKS.md.
#
# Usage: bench/pull.sh [RUNS]      (default 5; needs root)
# Env:   BENCH_DIR (default /var/tmp/arbor-bench; the tree is cached there)
#        SUITE (default bookworm), MIRROR (default http://deb.debian.org/debian)
set -euo pipefail
runs=${1:-5}
# shellcheck source=bench/pull-common.sh
source "$(dirname "$0")/pull-common.sh"

# --- server ---------------------------------------------------------------
port=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $work/srv; }
}
CONF
nginx -c "$work/nginx.conf"
trap 'umount "$mnt" 2>/dev/null || true; kill "$(cat "$work/nginx.pid")" 2>/dev/null || true' EXIT
url=http://127.0.0.1:$port/repo

# --- runs -----------------------------------------------------------------
dst=$mnt/dst
prepare_ostree() { fresh_fs; ostree --repo="$dst" init --mode=bare; ostree --repo="$dst" remote add --no-gpg-verify origin "$url"; }
prepare_arbor() { fresh_fs; "$arbor" --repo "$dst" init --mode bare; }
rm -f "$work"/ostree-{cold,update}.times "$work"/arbor-{cold,update}.times
for _ in $(seq "$runs"); do
  prepare_ostree; measure ostree-cold ostree --repo="$dst" pull origin "main@$c1"
  ostree --repo="$dst" fsck -q >/dev/null
  measure ostree-update ostree --repo="$dst" pull origin "main@$c2"
  prepare_arbor; measure arbor-cold "$arbor" --repo "$dst" pull "$url" "main@$c1"
  ostree --repo="$dst" fsck -q >/dev/null
  measure arbor-update "$arbor" --repo "$dst" pull "$url" "main@$c2"
  ostree --repo="$dst" fsck -q >/dev/null
done

echo "Tree: debootstrap --variant=minbase $suite, $files files, $size ($packed as archive objects)"
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); stores on a fresh loop-mounted ext4 per run; ostree $(ostree --version | awk -F\' '/Version/ {print $2}'); $runs runs each"
echo
echo "| pull into an empty bare store | median wall (s) | peak RSS (MiB) | vs ostree |"
echo "|---|---|---|---|"
for kind in cold update; do
  o=$(col 1 "ostree-$kind"); a=$(col 1 "arbor-$kind")
  orss=$(col 2 "ostree-$kind"); arss=$(col 2 "arbor-$kind")
  echo "| ostree pull ($kind) | $o | $((orss / 1024)) | 1.00 |"
  echo "| arbor pull ($kind) | $a | $((arss / 1024)) | $(ratio "$a" "$o") |"
done
