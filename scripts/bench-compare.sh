#!/usr/bin/env bash
# Times the kernel developer's loop (issue 11 item 7) on one source tree: a minimal build
# cold (fresh O= directory) and incremental (one-file patch), then `compare` of the two
# resulting local images, whole catalogue, over N runs (default 3).
# Usage: scripts/bench-compare.sh SRC [RUNS]
#   SRC: an unpacked kernel tree, e.g. Debian's linux_6.12.107.orig.tar.xz
#        (scripts/fetch-debian-orig.py puts one in the cache).
# Set COLD=0 to keep the builds of a previous run (then only the compare is timed).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: scripts/bench-compare.sh SRC [RUNS]}
runs=${2:-3}
patch=kernel-matrix/tests/fixtures/accept-flag-1.patch
cargo build --release -q -p kernel-matrix
km=$PWD/target/release/kernel-matrix
dir=${BENCH_DIR:-${TMPDIR:-/tmp}/pvmtest-bench-compare}
mkdir -p "$dir"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) / 1e9}'; }
stats() { sort -n | awk '{a[NR]=$1} END {printf "min %.1f, median %.1f, max %.1f s", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), host kernel $(uname -r), $(gcc --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
# A cache of its own, so the first build is cold; compare itself uses the normal cache.
bc=(--cache-dir "$dir/cache")
[ "${COLD:-1}" = 1 ] && rm -rf "$dir/cache"
s=$(now); "$km" build "$src" "${bc[@]}" >"$out/base.out" 2>"$out/base.log" || { cat "$out/base.log" >&2; exit 1; }; e=$(now)
echo "build, minimal config, $([ "${COLD:-1}" = 1 ] && echo cold || echo up to date): $(secs "$s" "$e") s"
s=$(now); "$km" build "$src" "${bc[@]}" --patch "$patch" >"$out/patched.out" 2>"$out/patched.log" || { cat "$out/patched.log" >&2; exit 1; }; e=$(now)
echo "build, incremental (one-file patch $(basename "$patch")): $(secs "$s" "$e") s"
a=$(tail -1 "$out/base.out"); b=$(tail -1 "$out/patched.out")
[ -f "$a" ] && [ -f "$b" ] || { echo "build did not print an image path ($a, $b)" >&2; exit 1; }
times=()
for i in $(seq "$runs"); do
  s=$(now)
  rc=0; "$km" compare --baseline "base=$a" --candidate "patched=$b" --report "$out/c$i" >/dev/null 2>&1 || rc=$?
  e=$(now)
  [ "$rc" = 1 ] || { echo "compare exited $rc, expected 1 (the patch changes pinned outcomes)" >&2; exit 1; }
  times+=("$(secs "$s" "$e")")
done
echo "compare of the two local images, whole catalogue, wall over $runs runs: $(printf '%s\n' "${times[@]}" | stats)"
