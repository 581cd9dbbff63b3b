#!/usr/bin/env python3
"""Groundwork for `kernel-matrix coverage` (docs/COVERAGE.md): writes the .gcda files a guest
booted with `pvmtest.gcov=1` printed on its console (harness/src/guest.rs, dump_gcov) into the
kernel's build directory, next to the .gcno files gcov needs.

Usage: gcov-from-console.py CONSOLE_LOG BUILD_DIR
The guest prints `@@GCOV begin PATH LEN`, `@@GCOV data HEX`..., `@@GCOV end PATH`; PATH is
/sys/kernel/debug/gcov + the build directory's absolute path + the object's path in it.
"""
import os
import sys


def fail(msg):
    print(f"gcov-from-console: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    if len(sys.argv) != 3:
        fail("usage: gcov-from-console.py CONSOLE_LOG BUILD_DIR")
    log, build = sys.argv[1], os.path.abspath(sys.argv[2])
    try:
        text = open(log, "rb").read().decode("latin-1")
    except OSError as e:
        fail(f"{log}: {e.strerror}")
    cur, written = None, 0
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        at = line.find("@@GCOV ")
        if at < 0:
            continue
        kind, _, rest = line[at + 7:].partition(" ")
        if kind == "begin":
            path, size = rest.rsplit(" ", 1)
            cur = (path, int(size), bytearray())
        elif kind == "data" and cur:
            cur[2].extend(bytes.fromhex(rest.strip()))
        elif kind == "end" and cur:
            path, size, data = cur
            if len(data) != size:
                fail(f"{log}: {path}: {len(data)} bytes decoded, {size} announced (a console line was garbled; rerun)")
            rel = path.removeprefix("/sys/kernel/debug/gcov")
            if not rel.startswith(build + "/"):
                fail(f"{log}: {path} is not under {build} (pass the directory the kernel was built in, O=...)")
            with open(rel, "wb") as f:
                f.write(data)
            print(f"{rel}: {size} bytes")
            written += 1
            cur = None
        elif kind == "error":
            print(f"guest: {rest}", file=sys.stderr)
    if written == 0:
        fail(f"{log}: no @@GCOV files (boot with PVMTEST_KERNEL_APPEND=pvmtest.gcov=1 and a CONFIG_GCOV_KERNEL kernel)")


main()
