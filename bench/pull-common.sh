# Shared by bench/pull.sh and bench/net.sh (sourced, not run): the tools,
# the release build, the benchmark data and the measuring helpers.
#
# Data: a realistic OS tree (debootstrap --variant=minbase), committed with
# a modified second version by `ostree` into an archive repository
# ($work/srv/repo, refs main = C2, main^ = C1), cached in $BENCH_DIR.
# Env: BENCH_DIR (default /var/tmp/arbor-bench), SUITE (default bookworm),
#      MIRROR (default http://deb.debian.org/debian)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
top=$PWD
work=${BENCH_DIR:-/var/tmp/arbor-bench}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work"

need=()
for pair in ostree:ostree nginx:nginx debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
arbor=${CARGO_TARGET_DIR:-$top/target}/release/arbor

# --- data -----------------------------------------------------------------
# Other benchmarks (bench/delta.sh) share BENCH_DIR: prepare under a lock.
exec 9>"$work/.data.lock"
flock 9
if [ ! -e "$work/tree1/.complete" ]; then
  rm -rf "$work/tree1"
  debootstrap --variant=minbase "$suite" "$work/tree1" "$mirror" >"$work/debootstrap.log" 2>&1
  touch "$work/tree1/.complete"
fi
# Device nodes cannot be committed (OSTree trees ship an empty /dev).
find "$work/tree1/dev" -mindepth 1 -delete 2>/dev/null || true
if [ ! -e "$work/srv/repo/summary" ]; then
  rm -rf "$work/srv" "$work/tree2"
  mkdir -p "$work/srv"
  ostree --repo="$work/srv/repo" init --mode=archive
  ostree --repo="$work/srv/repo" commit -b main --tree=dir="$work/tree1" -s one --timestamp=@1700000000 >/dev/null
  # The update: a few percent of files changed, some added, some removed.
  cp -a "$work/tree1" "$work/tree2"
  find "$work/tree2/usr/share/doc" -type f -name 'copyright' | awk 'NR % 4 == 0' | while read -r f; do echo "# updated" >>"$f"; done
  mkdir -p "$work/tree2/opt/new" && for i in $(seq 200); do head -c 4096 /dev/urandom >"$work/tree2/opt/new/f$i"; done
  find "$work/tree2/usr/share/locale" -mindepth 1 -maxdepth 1 -type d | awk 'NR % 3 == 0' | xargs -r rm -rf
  ostree --repo="$work/srv/repo" commit -b main --tree=dir="$work/tree2" -s two --timestamp=@1700000100 >/dev/null
  ostree --repo="$work/srv/repo" summary -u
fi
flock -u 9
c2=$(ostree --repo="$work/srv/repo" rev-parse main)
c1=$(ostree --repo="$work/srv/repo" rev-parse main^)
files=$(find "$work/tree1" -type f | wc -l)
size=$(du -sh "$work/tree1" | cut -f1)
packed=$(du -sh "$work/srv/repo/objects" | cut -f1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Every pull goes into a freshly made ext4 (with a journal) on a loop
# device: deleting the previous store and creating a new one on the same
# filesystem makes inode allocation crawl on a journal-less ext4 (ext4 skips
# recently deleted inodes there), which would measure our own cleanup, not
# the pull. Each measurement also starts with no dirty pages.
img=$work/fs.img
mnt=$work/mnt
mkdir -p "$mnt"
# Inode tables and journal are written by mkfs itself (no lazy init): a
# freshly mounted ext4 otherwise zeroes them from a kernel thread during
# the first seconds, which competed with whichever pull ran then and made
# single runs vary by 30%. nodiscard keeps the image's blocks allocated
# in the backing filesystem from one run to the next.
fresh_fs() {
  umount "$mnt" 2>/dev/null || true
  truncate -s 8G "$img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$img"
  mount -o loop "$img" "$mnt"
}
measure() { # name, then the command; appends "seconds rss_kb" to $work/NAME.times
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >/dev/null 2>"$work/$name.err" || { cat "$work/$name.err"; exit 1; }
  cat "$work/time.out" >>"$work/$name.times"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { cut -d' ' -f"$1" <"$work/$2.times" | median; }
ratio() { awk -v a="$1" -v o="$2" 'BEGIN {printf "%.2f", a / o}'; }
