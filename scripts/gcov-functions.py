#!/usr/bin/env python3
"""Groundwork for `kernel-matrix coverage` (docs/COVERAGE.md): line and branch coverage of the
syscall path's functions, from gcc's `gcov -b -j -t` JSON (one file per object).

Usage: gcov-functions.py GCOV_JSON...
Lines are those gcov lists inside each function's [start_line, end_line]; a line with no code
of its own (a bare `return -ENOMEM;` at -O2, say) is not listed by gcov, so branches are
reported too: an untaken arc shows such paths.
"""
import json
import sys

FUNCS = [
    ("mm/process_vm_access.c", "process_vm_rw"),
    ("mm/process_vm_access.c", "process_vm_rw_core"),
    ("mm/process_vm_access.c", "process_vm_rw_single_vec"),
    ("mm/process_vm_access.c", "process_vm_rw_pages"),
    ("lib/iov_iter.c", "__import_iovec"),
    ("lib/iov_iter.c", "__import_iovec_ubuf"),
    ("lib/iov_iter.c", "iovec_from_user"),
    ("lib/iov_iter.c", "copy_iovec_from_user"),
    ("lib/iov_iter.c", "copy_compat_iovec_from_user"),
    ("kernel/ptrace.c", "__ptrace_may_access"),
    ("kernel/ptrace.c", "ptrace_has_cap"),
    ("kernel/ptrace.c", "task_still_dumpable"),
]


def main():
    if len(sys.argv) < 2:
        print("usage: gcov-functions.py GCOV_JSON...", file=sys.stderr)
        sys.exit(2)
    files = []
    for p in sys.argv[1:]:
        try:
            files += json.load(open(p))["files"]
        except (OSError, ValueError, KeyError) as e:
            print(f"gcov-functions: {p}: not gcov JSON ({e})", file=sys.stderr)
            sys.exit(2)
    print(f"{'function':29} {'lines':>11} {'cover':>6} {'arcs':>7}  unreached lines / lines with an untaken arc")
    for src, name in FUNCS:
        f = next((f for f in files if f["file"].endswith(src)), None)
        fn = f and next((x for x in f["functions"] if x["name"] == name), None)
        if not fn:
            print(f"{name:29} not in the data (is {src} built with GCOV_PROFILE?)")
            continue
        lines = [l for l in f["lines"] if fn["start_line"] <= l["line_number"] <= fn["end_line"]]
        miss = [l["line_number"] for l in lines if l["count"] == 0]
        arcs = [(l["line_number"], b["count"]) for l in lines for b in l["branches"]]
        untaken = sorted({n for n, c in arcs if c == 0})
        hit = len(lines) - len(miss)
        print(f"{name:29} {hit:>5}/{len(lines):<5} {100.0 * hit / len(lines):>5.1f}% "
              f"{sum(c > 0 for _, c in arcs):>3}/{len(arcs):<3}  "
              f"{','.join(map(str, miss)) or '-'} / {','.join(map(str, untaken)) or '-'}")


main()
