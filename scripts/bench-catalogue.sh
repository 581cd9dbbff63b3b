#!/usr/bin/env bash
# Times the whole catalogue on the running kernel in release mode: wall time of
# `pvmtest run cases/` over N runs (default 10), plus the slowest cases from one JSON run.
# Usage: scripts/bench-catalogue.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release -q
bin=target/release/pvmtest
"$bin" run cases/ >/dev/null || { echo "the catalogue does not pass; fix that first" >&2; exit 1; }
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$bin" run cases/ >/dev/null
  end=$(date +%s%N)
  times+=("$(( (end - start) / 1000000 ))")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "cases: $("$bin" run cases/ --format json | grep -c '"case":')"
echo "wall ms over $runs runs: min $(echo "$sorted" | head -1), median $(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p"), max $(echo "$sorted" | tail -1)"
echo "slowest cases (µs):"
"$bin" run cases/ --format json | python3 -c '
import json, sys
d = json.load(sys.stdin)
for r in sorted(d["results"], key=lambda r: -r["duration_us"])[:5]:
    print("  %8d  %s" % (r["duration_us"], r["case"]))
'
