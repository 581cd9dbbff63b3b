#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed time from a copy of its committed seed corpus
# (fuzz/corpus/<target>/), one process each, one after the other, and prints libFuzzer's final
# exec/s, cov (edges), ft (features), the corpus size and, for model_vs_kernel, the persistent
# executor's counters. Exits 1 if any target stopped early (a crash: a panic in case_file, a
# model/kernel mismatch in model_vs_kernel, a timeout or an out-of-memory), after printing the
# end of its log and the artifact to turn into a case (`pvmtest import-crash ARTIFACT`).
#
# Usage: scripts/bench-fuzz.sh [SECONDS]   (default 60; .ci/run uses 60)
#        STAGES=1 scripts/bench-fuzz.sh [SECONDS]   also runs model_vs_kernel stopped after
#        each stage (decode, plan, model: nothing reaches the kernel), the floor under the
#        full target's exec/s (docs/BENCHMARKS.md).
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Built with `-s none`:
# AddressSanitizer's shadow memory covers the compat (below 4 GiB) address range, where
# model_vs_kernel must map compat layouts (docs/FUZZING.md). Each input has a 10 s timeout.
# Logs and artifacts stay in $FUZZ_OUT (default target/fuzz-run).
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/target/fuzz-run}
cd "$root/fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "bench-fuzz: cargo-fuzz or the nightly toolchain is missing: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi
if ! build_log=$(cargo +nightly fuzz build -O -s none 2>&1); then
    printf '%s\n' "$build_log" | tail -n 30 >&2
    echo "bench-fuzz: building the fuzz targets failed" >&2
    exit 2
fi
bin=target/x86_64-unknown-linux-gnu/release
rm -rf "$out"
mkdir -p "$out"
failed=0
printf '%-16s %8s %10s %8s %8s %22s %s\n' target seconds exec/s cov ft "corpus (seeds)" "executor stats"
for t in model_vs_kernel case_file; do
    work="$out/$t-corpus"
    mkdir -p "$work"
    cp -r "corpus/$t/." "$work/"
    seeds=$(find "$work" -type f | wc -l)
    log="$out/$t.log"
    status=0
    "$bin/$t" "$work" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/$t-" >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
    eps=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+)/\1/p' "$log")
    stats=$(sed -nE 's/^model_vs_kernel executor: //p' "$log" | tail -1)
    printf '%-16s %8s %10s %8s %8s %22s %s\n' "$t" "$secs" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?} ($seeds)" "$stats"
    if [ "$status" -ne 0 ]; then
        failed=1
        echo "--- $t stopped early (status $status); the end of $log:" >&2
        tail -n 60 "$log" >&2
        for a in "$out/$t"-*; do
            [ -f "$a" ] || continue
            echo "--- artifact $a: turn it into a case with: cargo run -q -- import-crash $a" >&2
        done
    fi
done
if [ "${STAGES:-0}" = 1 ]; then
    printf '\n%-24s %10s %8s\n' "model_vs_kernel up to" exec/s cov
    for stage in decode plan model; do
        work="$out/stage-$stage-corpus"
        mkdir -p "$work"
        cp -r corpus/model_vs_kernel/. "$work/"
        log="$out/stage-$stage.log"
        PVMTEST_FUZZ_STOP_AFTER=$stage "$bin/model_vs_kernel" "$work" -max_total_time="$secs" \
            -print_final_stats=1 >"$log" 2>&1 || failed=1
        eps=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+)/\1/p' "$log")
        cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed -nE 's/.* cov: ([0-9]+).*/\1/p')
        printf '%-24s %10s %8s\n' "$stage" "${eps:-?}" "${cov:-?}"
    done
fi
exit "$failed"
