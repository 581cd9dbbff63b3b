#!/usr/bin/env bash
# Prints a directory holding the kernel's own KTAP parser (tools/testing/kunit/kunit_parser.py
# and kunit_printer.py, which it imports), fetching it on first use into
# ${PVMTEST_CACHE_DIR:-~/.cache/pvmtest}/kunit. harness/tests/ktap.rs parses
# `pvmtest run --format ktap` with it when PVMTEST_KUNIT_PARSER names that directory:
#
#   export PVMTEST_KUNIT_PARSER=$(scripts/kunit-parser.sh)
#
# The files come from Debian's linux-source-6.1 package (`apt-get download`, about 140 MB,
# once). They are GPL-2.0 and are not committed here: only fetched into the cache.
set -euo pipefail
cache=${PVMTEST_CACHE_DIR:-$HOME/.cache/pvmtest}/kunit
if [[ -f $cache/kunit_parser.py && -f $cache/kunit_printer.py ]]; then
  echo "$cache"
  exit 0
fi
pkg=linux-source-6.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "$pkg" >&2; then
  apt-get update >&2
  apt-get download "$pkg" >&2
fi
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './usr/src/linux-source-*.tar.xz'
tar -xJf usr/src/linux-source-*.tar.xz --wildcards '*/tools/testing/kunit/kunit_*.py' '*/COPYING' '*/LICENSES/preferred/GPL-2.0'
src=$(dirname "$(find . -path '*/tools/testing/kunit/kunit_parser.py' | head -1)")
mkdir -p "$cache.tmp"
cp "$src"/kunit_*.py "$cache.tmp/"
cp "$src"/../../../COPYING "$cache.tmp/COPYING" 2>/dev/null || true
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
