#!/usr/bin/env bash
# Builds a kernel from source for `kernel-matrix run --kernel-image` / `compare --candidate`,
# the way a kernel developer would: out of tree (O=), x86_64_defconfig, no modules, plus the
# options the guest and the cases need. Prints the bzImage path and its version string.
#
# Usage: scripts/build-test-kernel.sh SRC OUT [--upstream-yama]
#   SRC   a kernel source tree (never written to: the build goes to OUT)
#   OUT   the build directory; the image is OUT/arch/x86/boot/bzImage
#   --upstream-yama
#         SRC is a Debian tree (linux-source-X.Y with Debian's patches applied), whose
#         "yama: Disable by default" patch sets the initial Yama ptrace_scope to 0
#         (YAMA_SCOPE_DISABLED). Copy SRC to $UPSTREAMISH (default SRC-upstreamish; copied
#         once) and revert just that line there to upstream's YAMA_SCOPE_RELATIONAL (1), then
#         build the copy. SRC itself is left untouched.
# Environment: JOBS (default: nproc), NICE (default 10), TRIM=0 to keep DRM/sound/wireless
# (default 1: drop them, they only cost build time; the guest uses a serial console),
# CONFIG_ONLY=1 to stop after writing and checking OUT/.config.
#
# Example (Debian's linux-source-7.3 with upstream's Yama default):
#   UPSTREAMISH=/tmp/ksrc/linux-7.3-upstreamish \
#     scripts/build-test-kernel.sh /tmp/ksrc/linux-source-7.3 /tmp/kbuild-7.3 --upstream-yama
#   kernel-matrix compare --baseline 7.3 --candidate /tmp/kbuild-7.3/arch/x86/boot/bzImage
#
# Needs: gcc, make, flex, bison, bc, perl, libelf-dev, libssl-dev
#   (apt-get install build-essential flex bison bc libelf-dev libssl-dev).
set -euo pipefail

src=${1:?usage: $0 SRC OUT [--upstream-yama]}
out=${2:?usage: $0 SRC OUT [--upstream-yama]}
upstream_yama=0
[ "${3:-}" = "--upstream-yama" ] && upstream_yama=1
jobs=${JOBS:-$(nproc)}
nice=${NICE:-10}
trim=${TRIM:-1}

src=$(cd "$src" && pwd)
if [ "$upstream_yama" = 1 ]; then
  copy=${UPSTREAMISH:-${src%/}-upstreamish}
  yama=security/yama/yama_lsm.c
  if [ ! -d "$copy" ]; then
    echo "copying $src to $copy"
    cp -a "$src" "$copy.tmp"
    mv "$copy.tmp" "$copy"
  fi
  if grep -q '^static int ptrace_scope = YAMA_SCOPE_DISABLED;$' "$copy/$yama"; then
    # Debian's debian/yama-disable-by-default.patch changes exactly this initializer.
    sed -i 's/^static int ptrace_scope = YAMA_SCOPE_DISABLED;$/static int ptrace_scope = YAMA_SCOPE_RELATIONAL;/' "$copy/$yama"
    echo "reverted Debian's Yama default in $copy/$yama (ptrace_scope = YAMA_SCOPE_RELATIONAL)"
  fi
  grep -q '^static int ptrace_scope = YAMA_SCOPE_RELATIONAL;$' "$copy/$yama" ||
    { echo "$copy/$yama: no upstream ptrace_scope initializer found" >&2; exit 1; }
  src=$copy
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
k() { nice -n "$nice" make -C "$src" O="$out" "$@"; }

k x86_64_defconfig
cfg() { "$src/scripts/config" --file "$out/.config" "$@"; }
# Built in, no modules: the initramfs carries no modules and nothing loads them.
cfg --disable MODULES
# What the guest needs to boot and talk (initramfs, consoles and data ports on 8250 UARTs,
# devtmpfs/tmpfs/proc/sysfs mounts) and what the cases probe for.
need="BLK_DEV_INITRD SERIAL_8250 SERIAL_8250_CONSOLE DEVTMPFS TMPFS PROC_FS SYSFS
      SECURITY SECURITY_YAMA IA32_EMULATION USERFAULTFD HUGETLBFS TRANSPARENT_HUGEPAGE
      MEMFD_CREATE SECRETMEM PID_NS PRINTK"
for o in $need; do cfg --enable "$o"; done
if [ "$trim" = 1 ]; then
  for o in DRM SOUND WLAN WIRELESS CFG80211 MAC80211 RFKILL BT; do cfg --disable "$o"; done
fi
k olddefconfig

missing=""
for o in $need; do
  grep -q "^CONFIG_$o=y$" "$out/.config" || missing="$missing CONFIG_$o"
done
[ -z "$missing" ] || { echo "not =y after olddefconfig:$missing" >&2; exit 1; }
[ "${CONFIG_ONLY:-0}" = 1 ] && { echo "config: $out/.config"; exit 0; }

start=$(date +%s)
k -j"$jobs" bzImage
end=$(date +%s)
echo "build: $((end - start)) s with -j$jobs"
echo "image: $out/arch/x86/boot/bzImage"
echo "version: $(cat "$out/include/config/kernel.release") ($(cat "$out/include/generated/utsversion.h" 2>/dev/null | sed -n 's/.*UTS_VERSION "\(.*\)"/\1/p'))"
