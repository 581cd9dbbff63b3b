#!/usr/bin/env python3
"""Parses a KTAP file with the kernel's own parser and prints what it made of it.

Usage: ktap-check.py KUNIT_DIR FILE

KUNIT_DIR holds tools/testing/kunit/kunit_parser.py and kunit_printer.py from a kernel tree
(scripts/kunit-parser.sh fetches them). kunit_parser.parse_run_tests is what `kunit.py parse
FILE` runs on a raw KTAP log. Its own report goes to stderr; the last line on stdout is
`ktap-check: {json}` with the overall status, the counts (passed, failed, crashed, skipped,
errors: parse errors) and each test's name and status. Exits 1 if the parser reported a
parse error or found no tests.
"""
import json
import sys

kunit_dir, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, kunit_dir)
import kunit_parser  # noqa: E402
import kunit_printer  # noqa: E402

# The printer writes to the stream it was given at import time; keep stdout for the verdict.
kunit_printer.stdout = kunit_printer.Printer(sys.stderr)
kunit_parser.stdout = kunit_printer.stdout

with open(path, encoding="utf-8") as f:
    test = kunit_parser.parse_run_tests(f.readlines())
c = test.counts
verdict = {
    "status": test.status.name,
    "passed": c.passed,
    "failed": c.failed,
    "crashed": c.crashed,
    "skipped": c.skipped,
    "errors": c.errors,
    "tests": [{"name": t.name, "status": t.status.name} for t in test.subtests],
}
print("ktap-check: " + json.dumps(verdict))
sys.exit(1 if c.errors or test.status.name in ("NO_TESTS", "FAILURE_TO_PARSE_TESTS") else 0)
