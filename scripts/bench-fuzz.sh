#!/usr/bin/env bash
# Fuzzing benchmark: builds the fuzz targets (nightly, cargo-fuzz, no sanitizer), runs each
# for a fixed time from a copy of its committed seed corpus (fuzz/corpus/<target>/), and
# prints exec/s, the corpus size and libFuzzer's coverage (cov = edges, ft = features) from
# its final stats. Usage: scripts/bench-fuzz.sh [SECONDS]   (default 60)
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
cargo +nightly fuzz build -O -s none >/dev/null 2>&1
bin=target/x86_64-unknown-linux-gnu/release
printf '%-16s %8s %10s %8s %8s %12s %s\n' target seconds exec/s cov ft corpus "executor stats"
for t in model_vs_kernel case_file; do
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/"
    seeds=$(ls "$work" | wc -l)
    log="$work.log"
    status=0
    "$bin/$t" "$work" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work.artifact-" >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
    eps=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+)/\1/p' "$log")
    stats=$(sed -nE 's/^model_vs_kernel executor: //p' "$log" | tail -1)
    printf '%-16s %8s %10s %8s %8s %12s %s\n' "$t" "$secs" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?} (from $seeds seeds)" "$stats"
    if [ "$status" -ne 0 ]; then
        echo "  $t stopped early (status $status): see $log and $work.artifact-*" >&2
    fi
done
