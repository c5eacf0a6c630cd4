#!/usr/bin/env bash
# Stage benchmark: assembling 50 chunk commits into one writable root and
# committing it back, arbor vs ostree, on the same data in one run.
#
# Data: the debootstrap minbase tree of bench/pull.sh (5,330 files, 206 MB),
# split into 50 chunks: file i of the sorted file list goes to chunk i % 50,
# with its parent directories (same metadata in every chunk). The last chunk
# also deletes one file of the first through a `.wh.` whiteout. Each chunk is
# committed by ostree into a bare repository on a fresh loop-mounted ext4
# (see BENCHMARKS.md for why not the root filesystem).
#
# Timed, RUNS times each (medians):
# - arbor: `stage create` of the 50 commits with the checkout cache empty
#   (cold) and already filled (warm), on the overlay backend; `stage commit`
#   after the integration step changed 1 file (the first commit also
#   computes the layers' merged tree), then 1,000 files, then one more.
# - ostree: 50 x `ostree checkout --union --whiteouts` (hardlinks) into one
#   directory; `ostree commit --link-checkout-speedup` of it after the same
#   changes. The changes replace files (write a copy, rename it over) so
#   that no hardlinked store object is written through in either case.
#
# Usage: bench/stage.sh [RUNS]       (default 5; needs root)
# Env:   BENCH_DIR (default /var/tmp/arbor-bench; needs tree1 from bench/pull.sh)
set -euo pipefail
runs=${1:-5}
cd "$(dirname "$0")/.."
top=$PWD
work=${BENCH_DIR:-/var/tmp/arbor-bench}
tree=$work/tree1
if [ ! -e "$tree/.complete" ]; then
  echo "no $tree: run bench/pull.sh once first (it builds the tree)" >&2
  exit 1
fi
cargo build --release --quiet
arbor=${CARGO_TARGET_DIR:-$top/target}/release/arbor

# --- a fresh filesystem for everything written --------------------------
img=$work/stage-fs.img
mnt=$work/stage-mnt
mkdir -p "$mnt"
umount -R "$mnt" 2>/dev/null || true
rm -f "$img"
truncate -s 6G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
cleanup() {
  for m in $(awk -v p="$mnt" '$5 ~ "^"p {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  umount "$mnt" 2>/dev/null || true
  rm -f "$img"
}
trap cleanup EXIT
repo=$mnt/repo

# --- chunks -----------------------------------------------------------------
echo "splitting the tree into 50 chunks and committing them" >&2
ostree --repo="$repo" init --mode=bare
(cd "$tree" && find . -mindepth 1 ! -type d ! -path './dev/*' ! -name .complete | sort) >"$mnt/files"
victim=$(awk '/\/usr\/bin\// && NR % 50 == 1 {print; exit}' "$mnt/files")
for k in $(seq 0 49); do
  d=$mnt/chunks/$k
  mkdir -p "$d"
  awk -v k="$k" 'NR % 50 == k' "$mnt/files" | while read -r f; do
    p=$(dirname "$f")
    while [ "$p" != . ]; do echo "$p"; p=$(dirname "$p"); done
    echo "$f"
  done | sort -u >"$mnt/list.$k"
  tar -C "$tree" --no-recursion -cf - -T "$mnt/list.$k" | tar -C "$d" -xpf -
done
# The last chunk deletes a file of the first.
touch "$mnt/chunks/49/$(dirname "$victim")/.wh.$(basename "$victim")"
for k in $(seq 0 49); do
  ostree --repo="$repo" commit --fsync=false -b "chunk/$k" --tree=dir="$mnt/chunks/$k" \
    --timestamp=@1700000000 >/dev/null
done
refs=$(for k in $(seq 0 49); do printf 'chunk/%s ' "$k"; done)
sync

# The integration step: replace COUNT files from the FIRST-th on (copy,
# append, rename over).
change() { # DIR FIRST COUNT
  (cd "$1" && find usr/share -type f | sort | sed -n "$2,$(($2 + $3 - 1))p" | while read -r f; do
    cp -p "$f" "$f.new" && echo "# changed" >>"$f.new" && mv "$f.new" "$f"
  done)
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

declare -A T
add() { T[$1]="${T[$1]:-} $2"; }

for r in $(seq "$runs"); do
  echo "run $r/$runs" >&2
  # arbor: cold stage create (empty cache), warm create, commits.
  "$arbor" --repo "$repo" stage destroy s >/dev/null 2>&1 || true
  rm -rf "$repo/extensions/arbor/checkouts"
  sync; sleep 1
  t=$(now); "$arbor" --repo "$repo" stage create s $refs --backend overlay >/dev/null 2>&1; add arbor_create_cold "$(elapsed "$t")"
  "$arbor" --repo "$repo" stage destroy s
  sync
  t=$(now); root=$("$arbor" --repo "$repo" stage create s $refs --backend overlay 2>/dev/null); add arbor_create_warm "$(elapsed "$t")"
  change "$root" 1 1; sync
  t=$(now); "$arbor" --repo "$repo" stage commit s -b out/arbor1 >/dev/null; add arbor_commit_1 "$(elapsed "$t")"
  change "$root" 2 1000; sync
  t=$(now); "$arbor" --repo "$repo" stage commit s -b out/arbor1000 >/dev/null; add arbor_commit_1000 "$(elapsed "$t")"
  change "$root" 1002 1; sync
  t=$(now); "$arbor" --repo "$repo" stage commit s -b out/arbor1001 >/dev/null; add arbor_commit_1001 "$(elapsed "$t")"
  "$arbor" --repo "$repo" stage destroy s

  # ostree: union checkout of the 50 chunks, commits.
  o=$mnt/ostree-root.$r
  sync
  t=$(now)
  for ref in $refs; do ostree --repo="$repo" checkout --union --whiteouts "$ref" "$o"; done
  add ostree_create "$(elapsed "$t")"
  change "$o" 1 1; sync
  t=$(now); ostree --repo="$repo" commit --link-checkout-speedup -b out/ostree1 --tree=dir="$o" >/dev/null; add ostree_commit_1 "$(elapsed "$t")"
  change "$o" 2 1000; sync
  t=$(now); ostree --repo="$repo" commit --link-checkout-speedup -b out/ostree1000 --tree=dir="$o" >/dev/null; add ostree_commit_1000 "$(elapsed "$t")"
  change "$o" 1002 1; sync
  t=$(now); ostree --repo="$repo" commit --link-checkout-speedup -b out/ostree1001 --tree=dir="$o" >/dev/null; add ostree_commit_1001 "$(elapsed "$t")"
done

# Both tools must have built the same tree.
a=$(ostree --repo="$repo" ls -d -C out/arbor1001 / | awk '{print $5}')
b=$(ostree --repo="$repo" ls -d -C out/ostree1001 / | awk '{print $5}')
if [ "$a" != "$b" ]; then
  echo "MISMATCH: arbor's tree $a, ostree's $b" >&2
  exit 1
fi
ostree --repo="$repo" fsck >/dev/null

m() { echo "${T[$1]}" | tr ' ' '\n' | grep . | median; }
echo
echo "Machine: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), ostree $(ostree --version | awk -F"'" '/Version/ {print $2}')"
echo "Data: 50 chunks of debootstrap minbase ($(wc -l <"$mnt/files") files), bare repository on a fresh loop-mounted ext4; $runs runs, medians in seconds."
echo
echo "| step | ostree | arbor (overlay) | arbor / ostree |"
echo "|---|---|---|---|"
row() { printf '| %s | %.3f | %.3f | %.2fx |\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"; }
row "assemble 50 commits, checkout cache empty" "$(m ostree_create)" "$(m arbor_create_cold)"
row "assemble 50 commits, checkout cache filled" "$(m ostree_create)" "$(m arbor_create_warm)"
row "commit after changing 1 file" "$(m ostree_commit_1)" "$(m arbor_commit_1)"
row "commit after changing 1,000 files" "$(m ostree_commit_1000)" "$(m arbor_commit_1000)"
row "commit after changing 1 more file" "$(m ostree_commit_1001)" "$(m arbor_commit_1001)"
