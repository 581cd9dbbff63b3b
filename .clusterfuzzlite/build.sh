#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: every cargo-fuzz target into $OUT, each with its seed
# corpus as <target>_seed_corpus.zip. The base image's cargo wrapper adds the sanitizer
# flags ($SANITIZER); `cargo fuzz build -O` is what its Rust docs prescribe.
cd "$SRC/pvmtest"
cargo fuzz build -O
bin="${CARGO_TARGET_DIR:-fuzz/target}/x86_64-unknown-linux-gnu/release"
for target in model_vs_kernel case_file; do
    cp "$bin/$target" "$OUT/"
    if [ -d "fuzz/corpus/$target" ]; then
        (cd "fuzz/corpus/$target" && zip -q -r "$OUT/${target}_seed_corpus.zip" .)
    fi
done
