#!/usr/bin/env bash
# Times the kernel matrix with a warm cache: the whole matrix (every kernel in kernels.yaml ×
# the whole catalogue) and a single-kernel `exec`, over N runs each (default 3), plus boot
# and run seconds per kernel from report.json.
# Usage: scripts/bench-matrix.sh [RUNS] [RUN-ARGS...]   (e.g. `3 --vms 2`: extra `run` arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
cargo build --release -q -p kernel-matrix
km=target/release/kernel-matrix
# Warm up: kernels in the cache, the static guest harness built, the KVM verdict cached.
"$km" fetch >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$km" run "$@" --report "$out/warm" >/dev/null 2>&1 || { echo "the matrix does not pass; fix that first" >&2; exit 1; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "min %d, median %d, max %d", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), host kernel $(uname -r), $(qemu-system-x86_64 --version | head -1)"
times=()
for i in $(seq "$runs"); do
  s=$(date +%s%N); "$km" run "$@" --report "$out/r$i" >/dev/null 2>&1; e=$(date +%s%N)
  times+=("$(ms "$s" "$e")")
done
echo "whole matrix, wall ms over $runs runs: $(printf '%s\n' "${times[@]}" | stats)"
python3 - "$out/r1/report.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in d["kernels"]:
    s = k["summary"]
    print(f"  {k['id']:5} {k['version']:18} {k['accel']}  boot {k['boot_s']:.1f} s  run {k['run_s']:.1f} s  "
          f"{len(k['results'])} cases: {s['pass']} pass, {s['fail']} fail, {s['skip']} skip, {s['broken']} broken")
PY
times=()
for _ in $(seq "$runs"); do
  s=$(date +%s%N); "$km" exec --kernel 6.1 -- /bin/true; e=$(date +%s%N)
  times+=("$(ms "$s" "$e")")
done
echo "exec --kernel 6.1 -- /bin/true, wall ms over $runs runs: $(printf '%s\n' "${times[@]}" | stats)"
