#!/usr/bin/env bash
# Keeps README.md's sample output true: runs the real catalogue (`pvmtest run`, release) and
# `pvmtest explain` on the case the README shows, and compares them with the README's two
# sample blocks, so the README cannot go stale unnoticed (.ci/run runs the check).
#
# Usage: scripts/readme-sample.sh           check; exit 1 with the differences if stale
#        scripts/readme-sample.sh --write   rewrite both blocks (and the line above the first)
#                                           from this run; review with `git diff README.md`
#
# Checked:
# - every result row shown in the "Sample output" block is a line of the real run, verbatim
#   (the block is trimmed: it shows some rows, not all; --write keeps the same cases);
# - the closing lines `kernel K: N cases` and `pvmtest: P passed, F failed, S skipped` are
#   the real ones, and the N in the line above the block is the real case count;
# - the `$ cargo run -q -- explain CASE` block is exactly what explain prints.
# Pass and skip counts, rows and the explain text depend on the kernel and on privileges
# (skips). The kernel's name is substituted (a local suffix such as -fc-v769 changes between
# boots of the same kernel); on another kernel version only the case count and the explain
# text are compared, and a note says so. Regenerate on the project's dev/CI machine as root
# (docs/BENCHMARKS.md, "Machine").
set -euo pipefail
mode=check
case "${1:-}" in
    "") ;;
    --write) mode=write ;;
    *)
        echo "usage: scripts/readme-sample.sh [--write]" >&2
        exit 2
        ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! build_log=$(cargo build --release -q -p pvmtest --bin pvmtest 2>&1); then
    printf '%s\n' "$build_log" | tail -n 30 >&2
    echo "readme-sample: building pvmtest failed" >&2
    exit 2
fi
MODE=$mode python3 - <<'PY'
import os, re, subprocess, sys, time

MODE = os.environ["MODE"]
BIN = "target/release/pvmtest"
README = "README.md"
text = open(README).read()
lines = text.split("\n")


def fence(start):
    """Index of the ```text line at or after start, and of its closing ```."""
    i = start
    while not lines[i].startswith("```text"):
        i += 1
    j = i + 1
    while lines[j] != "```":
        j += 1
    return i, j


intro = next((i for i, l in enumerate(lines) if l.startswith("Sample output (`cargo run --release -- run`")), None)
if intro is None:
    sys.exit("readme-sample: README.md has no line starting 'Sample output (`cargo run --release -- run`'")
a_open, a_close = fence(intro)
explain_at = next((i for i, l in enumerate(lines) if l.startswith("$ cargo run -q -- explain ")), None)
if explain_at is None or not lines[explain_at - 1].startswith("```text"):
    sys.exit("readme-sample: README.md has no ```text block starting '$ cargo run -q -- explain CASE'")
b_open, b_close = explain_at - 1, fence(explain_at - 1)[1]
explain_case = lines[explain_at].split()[-1]

t0 = time.monotonic()
run = subprocess.run([BIN, "run", "--color", "never", "cases/"], capture_output=True, text=True)
wall = time.monotonic() - t0
if run.returncode not in (0, 1):
    sys.exit(f"readme-sample: pvmtest run exited {run.returncode}:\n{run.stderr}")
real = [l.rstrip() for l in run.stdout.splitlines()]
kline = next((l for l in real if re.match(r"^kernel \S+: \d+ cases?$", l)), None)
pline = next((l for l in real if l.startswith("pvmtest: ") and " passed, " in l), None)
if kline is None or pline is None:
    sys.exit("readme-sample: the run printed no 'kernel K: N cases' / 'pvmtest: ...' lines:\n" + run.stdout[-2000:])
closing = [l for l in real[real.index(kline):] if l]
kernel, count = re.match(r"^kernel (\S+): (\d+)", kline).groups()
ex = subprocess.run([BIN, "explain", explain_case], capture_output=True, text=True)
if ex.returncode != 0:
    sys.exit(f"readme-sample: pvmtest explain {explain_case} exited {ex.returncode}:\n{ex.stderr}")
explain = [l.rstrip() for l in ex.stdout.rstrip("\n").split("\n")]

shown = [l for l in lines[a_open + 1:a_close] if l.strip()]
rows = [l for l in shown if not l.startswith(("kernel ", "pvmtest: ", "pvmtest "))]
readme_kline = next((l for l in shown if l.startswith("kernel ")), "")
readme_kernel = readme_kline.split(":")[0].removeprefix("kernel ")
by_case = {}
for l in real:
    f = l.split()
    if len(f) >= 2 and f[0] in ("PASS", "FAIL", "SKIP", "BROKEN"):
        by_case[f[1]] = l

if MODE == "write":
    block = []
    for r in rows:
        case = r.split()[1]
        if case in by_case:
            block.append(by_case[case])
        else:
            print(f"readme-sample: {case} is not in this run any more; dropped from the sample", file=sys.stderr)
    block += [""] + closing
    who = "as root" if os.geteuid() == 0 else "unprivileged"
    cores = os.cpu_count()
    new = list(lines)
    new[b_open + 2:b_close] = explain
    new[a_open + 1:a_close] = block
    load = open("/proc/loadavg").read().split()[0]
    new[intro] = (f"Sample output (`cargo run --release -- run` {who}, trimmed; {count} cases took "
                  f"{wall:.2f} s on {cores} cores at load average {load}):")
    open(README, "w").write("\n".join(new))
    print(f"readme-sample: README.md rewritten from this run (kernel {kernel}, {count} cases, {wall:.2f} s); review with git diff README.md")
    sys.exit(0)

bad = []
# The same kernel version with another local build suffix (6.18.44-fc-v769, -fc-v1272: one
# machine's VM kernel, rebuilt) is the same kernel for the sample; its name is substituted.
def version(release):
    m = re.match(r"^\d+\.\d+\.\d+", release)
    return m.group(0) if m else release


same_kernel = version(readme_kernel) == version(kernel)
if readme_kernel:
    closing = [l.replace(kernel, readme_kernel) for l in closing]
m = re.search(r"; (\d+) cases? (?:take|took)", lines[intro])
if not m or m.group(1) != count:
    bad.append(f"the line above the sample says {m.group(1) if m else 'no'} cases; the catalogue has {count}")
rk = re.match(r"^kernel \S+: (\d+) cases?$", readme_kline)
if not rk or rk.group(1) != count:
    bad.append(f"sample: {readme_kline!r}; real: {kline!r}")
readme_explain = lines[b_open + 2:b_close]
got_explain = [l.replace(kernel, readme_kernel) for l in explain] if readme_kernel else explain
if readme_explain != got_explain:
    bad.append("the explain block differs from `pvmtest explain " + explain_case + "`:\n    README: "
               + "\n    README: ".join(readme_explain) + "\n    real:   " + "\n    real:   ".join(got_explain))
if same_kernel:
    for r in rows:
        if r.rstrip() not in real:
            case = r.split()[1] if len(r.split()) > 1 else r
            bad.append(f"sample row {r.rstrip()!r}; real: {by_case.get(case, 'not in the run')!r}")
    readme_closing = shown[shown.index(readme_kline):] if readme_kline else []
    if readme_closing != closing:
        bad.append(f"closing lines: sample {' / '.join(readme_closing)!r}; real {' / '.join(closing)!r}")
if bad:
    print("readme-sample: README.md's sample output is stale:", file=sys.stderr)
    for b in bad:
        print("  " + b, file=sys.stderr)
    print("regenerate it as root on the dev/CI machine: scripts/readme-sample.sh --write", file=sys.stderr)
    sys.exit(1)
note = "" if same_kernel else (f" (this kernel is {kernel}, the sample's {readme_kernel}: rows and pass/skip counts not compared)")
print(f"readme-sample: README.md matches this run: {count} cases, explain {explain_case}{note}")
PY
