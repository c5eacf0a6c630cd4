#!/usr/bin/env bash
# Benchmark: the set-up cost of the stage build environment.
#
# Times `arbor stage exec NAME --sandbox -- true` (spelled --chroot, as the
# issue does) with bubblewrap and with the built-in sandbox, against
# `chroot DIR true` (no namespaces, no mounts) and against bubblewrap run
# directly with the same arguments arbor gives it (what arbor adds around
# bubblewrap: opening the store and the stage, locks, mount points).
#
# Two stages of the same small system (sh, true and their libraries, copied
# from this machine), on the overlay backend:
# - `bare`: no /proc, /dev, /sys, /tmp, /run in the commit, as a system
#   made of chunks often is: every run creates those mount points in the
#   root, lists them, and removes them afterwards;
# - `distro`: the commit has them (as a debootstrap tree has), so nothing
#   is created.
#
# Usage: bench/sandbox.sh            (RUNS=50 BENCH_DIR=/tmp/arbor-bench-sandbox)
# Needs root, bubblewrap, and hyperfine (installed with apt-get when
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."

W=${BENCH_DIR:-/tmp/arbor-bench-sandbox}
RUNS=${RUNS:-50}

for tool in hyperfine bwrap; do
  if ! command -v $tool >/dev/null; then
    pkg=$tool; [ $tool = bwrap ] && pkg=bubblewrap
    apt-get install -y -qq $pkg >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq $pkg >/dev/null; }
  fi
done

cargo build --release --quiet
ARBOR=$PWD/target/release/arbor
REPO=$W/repo

# Earlier runs' stages are unmounted by destroying them, not by rm.
if [ -d "$REPO" ]; then
  for s in bare distro; do "$ARBOR" --repo "$REPO" stage destroy $s 2>/dev/null || true; done
fi
rm -rf "$W"
mkdir -p "$W"

# A system of the host's sh and true with the libraries they load.
copy() {
  local p=$1 t
  while [ -L "$p" ]; do
    t=$(readlink "$p")
    mkdir -p "$2$(dirname "$p")"
    [ -e "$2$p" ] || [ -L "$2$p" ] || ln -s "$t" "$2$p"
    case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
  done
  mkdir -p "$2$(dirname "$p")"
  cp -a "$p" "$2$p"
}
tree=$W/tree-bare
mkdir -p "$tree"
for d in bin sbin lib lib64; do
  if [ -L /$d ]; then ln -s "$(readlink /$d)" "$tree/$d"; fi
done
for prog in /usr/bin/sh /usr/bin/true; do
  real=$(readlink -f $prog)
  copy "$prog" "$tree"
  for lib in $(ldd "$real" | grep -o '/[^ ]*'); do
    copy "$(readlink -f "$(dirname "$lib")")/$(basename "$lib")" "$tree"
  done
done
cp -a "$tree" "$W/tree-distro"
mkdir -p "$W/tree-distro"/{proc,dev,sys,tmp,run}
chmod 1777 "$W/tree-distro/tmp"

"$ARBOR" --repo "$REPO" init >/dev/null
for s in bare distro; do
  "$ARBOR" --repo "$REPO" commit -b $s "$W/tree-$s" >/dev/null
  "$ARBOR" --repo "$REPO" stage create $s $s --backend overlay >/dev/null
done

echo "== machine" >&2
{
  echo "cpus: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "bubblewrap: $(bwrap --version)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "runs: $RUNS per command"
} | tee "$W/machine.txt" >&2

for s in bare distro; do
  root=$("$ARBOR" --repo "$REPO" stage path $s)
  # bubblewrap with the arguments arbor passes (see src/stage/sandbox/bwrap.rs).
  bw="env -i PATH=/usr/bin:/bin bwrap --die-with-parent --unshare-pid --unshare-ipc \
--unshare-uts --unshare-net --bind $root / --proc /proc --ro-bind /proc/sys /proc/sys \
--ro-bind-try /proc/sysrq-trigger /proc/sysrq-trigger --dev /dev --perms 1777 --tmpfs /dev/shm \
--ro-bind /sys /sys --perms 1777 --tmpfs /tmp --tmpfs /run --chdir / -- true"
  if [ $s = bare ]; then
    # bubblewrap alone would create the mount points in the stage; use the
    # distro stage's root for it.
    bw=${bw//$root/$("$ARBOR" --repo "$REPO" stage path distro)}
  fi
  hyperfine --style basic -N --warmup 5 --runs "$RUNS" --export-json "$W/$s.json" \
    -n "chroot" "chroot $W/tree-$s true" \
    -n "bwrap alone" "$bw" \
    -n "arbor bwrap" "$ARBOR --repo $REPO stage exec $s --chroot --sandbox-tool bwrap -- true" \
    -n "arbor builtin" "$ARBOR --repo $REPO stage exec $s --chroot --sandbox-tool builtin -- true" \
    >&2
  python3 - "$W/$s.json" "$s" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for x in r:
    print(f"{sys.argv[2]:6} {x['command']:14} median {x['median']*1000:7.2f} ms "
          f"(mean {x['mean']*1000:.2f} ± {x['stddev']*1000:.2f})")
EOF
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for s in bare distro; do "$ARBOR" --repo "$REPO" stage destroy $s; done
