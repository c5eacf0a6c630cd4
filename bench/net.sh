#!/usr/bin/env bash
# Pull benchmark over far-away servers: arbor vs ostree through a proxy
# that adds a fixed delay each way in front of nginx (this kernel has no
# netem; the proxy is examples/latency-proxy.rs, which also makes every new
# connection wait one round trip, as TCP's handshake does).
#
# Same data as bench/pull.sh (debootstrap minbase, C1 and C2 in an archive
# repository), served by nginx on 127.0.0.1. For each round trip time, in
# the same run: a cold pull of C1 into an empty bare store and the update
# to C2, by `ostree pull` and by `arbor pull` (medians of RUNS, peak RSS;
# each store on a fresh loop-mounted ext4, `ostree fsck` after arbor).
# With DELTAS=1 the same is measured against a copy of the repository that
# also publishes static deltas (`ostree static-delta generate` C1→C2 and a
# scratch delta for C1, indexed in the summary).
#
# Counts what both tools asked of the server in the first cold pull:
# requests (nginx's access log) and TCP connections opened (the proxy's
# count).
#
# Usage: bench/net.sh [RUNS]       (default 3; needs root)
# Env:   RTTS (default "20 50": round trips in ms; 0 = nginx directly)
#        DELTAS (default 0), BENCH_DIR, SUITE, MIRROR (see pull-common.sh)
#        ARBOR_ARGS: extra `arbor pull` options (e.g. "--jobs 64")
set -euo pipefail
runs=${1:-3}
rtts=${RTTS:-20 50}
deltas=${DELTAS:-0}
# shellcheck source=bench/pull-common.sh
source "$(dirname "$0")/pull-common.sh"
cargo build --release --quiet --example latency-proxy
proxy_bin=${CARGO_TARGET_DIR:-$top/target}/release/examples/latency-proxy

repos=(repo)
if [ "$deltas" = 1 ]; then
  exec 9>"$work/.data.lock"
  flock 9
  if [ ! -e "$work/srv/repo-deltas/.complete-$c1-$c2" ]; then
    rm -rf "$work/srv/repo-deltas"
    # Hardlinked objects; the summary is rewritten, so not linked.
    cp -al "$work/srv/repo" "$work/srv/repo-deltas"
    rm -f "$work/srv/repo-deltas/summary"
    ostree --repo="$work/srv/repo-deltas" static-delta generate --empty --to="$c1" >/dev/null
    ostree --repo="$work/srv/repo-deltas" static-delta generate --from="$c1" --to="$c2" >/dev/null
    ostree --repo="$work/srv/repo-deltas" summary -u
    touch "$work/srv/repo-deltas/.complete-$c1-$c2"
  fi
  flock -u 9
  repos+=(repo-deltas)
fi

# --- servers --------------------------------------------------------------
port=$(free_port)
cat >"$work/net-nginx.conf" <<CONF
worker_processes 2;
pid $work/net-nginx.pid;
error_log $work/net-nginx-error.log;
events { worker_connections 4096; }
http {
  log_format uri '\$request_uri \$status';
  access_log $work/net-access.log uri;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $work/srv; }
}
CONF
proxies=()
cleanup() {
  umount "$mnt" 2>/dev/null || true
  for p in "${proxies[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$(cat "$work/net-nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
nginx -c "$work/net-nginx.conf"
declare -A front
for rtt in $rtts; do
  if [ "$rtt" = 0 ]; then front[$rtt]=$port; continue; fi
  "$proxy_bin" 127.0.0.1:0 "127.0.0.1:$port" $((rtt / 2)) "$work/proxy-$rtt.conns" >"$work/proxy-$rtt.port" 2>"$work/proxy-$rtt.err" &
  proxies+=($!)
  for _ in $(seq 100); do [ -s "$work/proxy-$rtt.port" ] && break; sleep 0.05; done
  front[$rtt]=$(cat "$work/proxy-$rtt.port")
done

# Connections the proxy of a round trip accepted so far.
connections() {
  if [ "$1" = 0 ]; then echo 0; return; fi
  sleep 0.1; cat "$work/proxy-$1.conns" 2>/dev/null || echo 0
}

# --- runs -----------------------------------------------------------------
dst=$mnt/dst
rm -f "$work"/net-*.times "$work"/net-*.counts
requests() { wc -l <"$work/net-access.log"; }
for rtt in $rtts; do
  for repo in "${repos[@]}"; do
    url=http://127.0.0.1:${front[$rtt]}/$repo
    tag=$rtt-$repo
    for run in $(seq "$runs"); do
      fresh_fs; ostree --repo="$dst" init --mode=bare
      ostree --repo="$dst" remote add --no-gpg-verify origin "$url"
      before=$(requests); cbefore=$(connections "$rtt")
      measure "net-ostree-cold-$tag" ostree --repo="$dst" pull origin "main@$c1"
      [ "$run" = 1 ] && echo "ostree $(( $(requests) - before )) $(( $(connections "$rtt") - cbefore ))" >>"$work/net-$tag.counts"
      ostree --repo="$dst" fsck -q >/dev/null
      measure "net-ostree-update-$tag" ostree --repo="$dst" pull origin "main@$c2"
      fresh_fs; "$arbor" --repo "$dst" init --mode bare
      before=$(requests); cbefore=$(connections "$rtt")
      # shellcheck disable=SC2086 # ARBOR_ARGS is a list of options
      measure "net-arbor-cold-$tag" "$arbor" --repo "$dst" pull ${ARBOR_ARGS:-} "$url" "main@$c1"
      [ "$run" = 1 ] && echo "arbor $(( $(requests) - before )) $(( $(connections "$rtt") - cbefore ))" >>"$work/net-$tag.counts"
      ostree --repo="$dst" fsck -q >/dev/null
      # shellcheck disable=SC2086
      measure "net-arbor-update-$tag" "$arbor" --repo "$dst" pull ${ARBOR_ARGS:-} "$url" "main@$c2"
      ostree --repo="$dst" fsck -q >/dev/null
    done
  done
done

echo "Tree: debootstrap --variant=minbase $suite, $files files, $size ($packed as archive objects)"
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); stores on a fresh loop-mounted ext4 per run; ostree $(ostree --version | awk -F\' '/Version/ {print $2}'); $runs runs each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round trip | server | pull | ostree (s) | arbor (s) | arbor / ostree | RSS ostree / arbor (MiB) | requests ostree / arbor | connections ostree / arbor |"
echo "|---|---|---|---|---|---|---|---|---|"
for rtt in $rtts; do
  for repo in "${repos[@]}"; do
    tag=$rtt-$repo
    server=objects; [ "$repo" = repo-deltas ] && server="objects + deltas"
    for kind in cold update; do
      o=$(col 1 "net-ostree-$kind-$tag"); a=$(col 1 "net-arbor-$kind-$tag")
      orss=$(col 2 "net-ostree-$kind-$tag"); arss=$(col 2 "net-arbor-$kind-$tag")
      reqs=""; conns=""
      if [ "$kind" = cold ]; then
        reqs="$(awk '$1=="ostree"{print $2}' "$work/net-$tag.counts") / $(awk '$1=="arbor"{print $2}' "$work/net-$tag.counts")"
        [ "$rtt" != 0 ] && conns="$(awk '$1=="ostree"{print $3}' "$work/net-$tag.counts") / $(awk '$1=="arbor"{print $3}' "$work/net-$tag.counts")"
      fi
      echo "| $rtt ms | $server | $kind | $o | $a | $(ratio "$a" "$o") | $((orss / 1024)) / $((arss / 1024)) | $reqs | $conns |"
    done
  done
done
