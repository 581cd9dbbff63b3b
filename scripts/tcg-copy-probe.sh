#!/usr/bin/env bash
# Runs scripts/tcg-copy-probe.c inside a matrix kernel under TCG (default 6.1):
# docs/BENCHMARKS.md, "The 2 GiB cases under TCG". Usage: scripts/tcg-copy-probe.sh [KERNEL]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -Wall -static -o "$out/probe" scripts/tcg-copy-probe.c
cargo build --release -q -p kernel-matrix
target/release/kernel-matrix exec --accel tcg --kernel "${1:-6.1}" -- "$out/probe"
