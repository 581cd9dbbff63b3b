#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: case_file into $OUT with its seed corpus as
# case_file_seed_corpus.zip. The base image's cargo wrapper adds the sanitizer flags
# ($SANITIZER); `cargo fuzz build -O` is what its Rust docs prescribe.
#
# model_vs_kernel is not built here: under AddressSanitizer (ClusterFuzzLite's default) it
# refuses to start, because ASan's shadow memory covers addresses the model takes to be
# unmapped, and it needs process_vm_readv and credential changes that a default container
# seccomp profile refuses. It is fuzzed without a sanitizer by scripts/bench-fuzz.sh in CI
# (.ci/run) and by `cargo +nightly fuzz run -O -s none model_vs_kernel` (docs/FUZZING.md).
cd "$SRC/pvmtest"
cargo fuzz build -O case_file
bin="${CARGO_TARGET_DIR:-fuzz/target}/x86_64-unknown-linux-gnu/release"
cp "$bin/case_file" "$OUT/"
(cd fuzz/corpus/case_file && zip -q -r "$OUT/case_file_seed_corpus.zip" .)
