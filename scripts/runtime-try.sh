#!/usr/bin/env bash
# Reproduces by hand the runtime runs in docs/CONFORMANCE.md (groundwork for issue 12):
# the catalogue under gVisor (runsc do), User-mode Linux (hostfs root) and qemu-user.
#
#   scripts/runtime-try.sh fetch                 # .debs into $RT/deb, unpacked under $RT
#   scripts/runtime-try.sh gvisor VERSION PLATFORM   # VERSION 20240729|20221219, PLATFORM systrap|ptrace
#   scripts/runtime-try.sh uml
#   scripts/runtime-try.sh qemu
#
# Needs root (runsc do, UML's hostfs root). PVMTEST must be a static pvmtest binary:
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p pvmtest \
#     --target x86_64-unknown-linux-gnu --target-dir target/guest
# Results go to $RT/out/*.json. Nothing here is installed with apt-get install.
set -euo pipefail

RT=${RT:-/work/rt}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PVMTEST=${PVMTEST:-$REPO/target/guest/x86_64-unknown-linux-gnu/release/pvmtest}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
POOL=$MIRROR/pool/main/g/golang-gvisor-gvisor
mkdir -p "$RT/deb" "$RT/out"

die() { echo "runtime-try: $*" >&2; exit 2; }

fetch() {
    cd "$RT/deb"
    # bookworm is the host's suite: apt-get download takes the pinned versions from its index.
    apt-get download runsc user-mode-linux qemu-user golang-gvisor-gvisor-dev
    # trixie's runsc (0.0~20240729.0-4+b7) and the matching upstream source.
    curl -fsSO "$POOL/runsc_0.0~20240729.0-4+b7_amd64.deb"
    curl -fsSO "$POOL/golang-gvisor-gvisor_0.0~20240729.0.orig.tar.gz"
    sha256sum ./*.deb ./*.tar.gz
    cd "$RT"
    dpkg-deb -x deb/runsc_0.0~20221219.0-2+b3_amd64.deb runsc-20221219
    dpkg-deb -x deb/runsc_0.0~20240729.0-4+b7_amd64.deb runsc-20240729
    dpkg-deb -x deb/user-mode-linux_*_amd64.deb uml
    dpkg-deb -x deb/qemu-user_*_amd64.deb qemu-user
    dpkg-deb -x deb/golang-gvisor-gvisor-dev_0.0~20221219.0-2_all.deb src-20221219
    mkdir -p src-20240729 && tar -xzf deb/golang-gvisor-gvisor_0.0~20240729.0.orig.tar.gz -C src-20240729
}

gvisor() {
    local version=${1:?version} platform=${2:-systrap} state
    local runsc=$RT/runsc-$version/usr/bin/runsc
    [ -x "$runsc" ] || die "$runsc missing: run '$0 fetch' first"
    [ -x "$PVMTEST" ] || die "PVMTEST=$PVMTEST is not an executable static pvmtest"
    state=$(mktemp -d /tmp/runsc-state.XXXXXX)
    trap 'rm -rf "$state"' RETURN
    # stdin must not be inherited: with the tool's stdin runsc do printed nothing and hung.
    timeout 300 "$runsc" --root="$state" --network=none --platform="$platform" \
        do /bin/sh -c "cd '$REPO' && '$PVMTEST' run --format json cases" \
        </dev/null >"$RT/out/gvisor-$version-$platform.json" 2>"$RT/out/gvisor-$version-$platform.err" || true
    summary "$RT/out/gvisor-$version-$platform.json"
}

uml() {
    local dir=$RT/uml-run
    [ -x "$RT/uml/usr/bin/linux.uml" ] || die "UML missing: run '$0 fetch' first"
    mkdir -p "$dir/umldir"
    cat >"$dir/init.sh" <<EOF
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp
cd '$REPO'
uname -r -m; grep -E 'stack|vdso|vvar|vsyscall' /proc/self/maps
'$PVMTEST' run --format json cases >'$RT/out/uml.json' 2>'$RT/out/uml.err'
echo "pvmtest exit \$?"
echo o >/proc/sysrq-trigger
EOF
    chmod +x "$dir/init.sh"
    # UML's guest memory is a file in TMPDIR: keep it on a tmpfs.
    TMPDIR=/dev/shm timeout 300 "$RT/uml/usr/bin/linux.uml" mem=256M rootfstype=hostfs rootflags=/ rw \
        init="$dir/init.sh" con=null con0=null,fd:1 uml_dir="$dir/umldir" </dev/null | tail -5
    summary "$RT/out/uml.json"
}

qemu() {
    [ -x "$RT/qemu-user/usr/bin/qemu-x86_64" ] || die "qemu-user missing: run '$0 fetch' first"
    # -d unimp logs "Unsupported syscall: N" for every syscall qemu does not implement.
    timeout 300 "$RT/qemu-user/usr/bin/qemu-x86_64" -d unimp -D "$RT/out/qemu-unimp.log" \
        "$PVMTEST" run --format json cases </dev/null >"$RT/out/qemu.json" 2>"$RT/out/qemu.err" || true
    sort "$RT/out/qemu-unimp.log" | uniq -c
    summary "$RT/out/qemu.json"
}

summary() {
    # qemu's glib assertions print "Bail out!" lines on stdout before the JSON.
    python3 - "$1" <<'EOF'
import collections, json, sys
text = open(sys.argv[1]).read()
d = json.loads(text[text.index("{"):])
print("kernel", d["kernel"], "summary", d["summary"])
by = collections.Counter((r["status"], r["decided_by"]) for r in d["results"] if r["status"] in ("fail", "broken"))
for (status, step), n in by.most_common():
    print(f"  {n:4} {status:6} decided_by={step}")
EOF
}

case ${1:-} in
    fetch) fetch ;;
    gvisor) shift; gvisor "$@" ;;
    uml) uml ;;
    qemu) qemu ;;
    *) die "usage: $0 fetch | gvisor VERSION [PLATFORM] | uml | qemu" ;;
esac
