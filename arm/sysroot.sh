#!/usr/bin/env bash
# Builds an arm64 Debian bookworm root filesystem at $ARM_WORK/rootfs-arm64 without any
# emulation: debootstrap's first stage only downloads and unpacks, and we unpack the rest
# of the downloaded .debs ourselves instead of running the (arm64) second stage.
#
# The result serves two purposes:
#   - a sysroot for cross-compiling (headers, libc, libpython3.11 for aarch64), used by
#     arm/build-wheels.sh;
#   - a rootfs whose python3 runs under qemu-aarch64-static -L, used by
#     arm/test-wheel-arm64.sh.
# No maintainer script ran, so it is not a bootable system; it does not need to be.
#
# Usage: arm/sysroot.sh [--force]     (--force rebuilds even when complete)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOTFS="$ARM_WORK/rootfs-arm64"
SUITE=bookworm
PACKAGES=python3,libpython3.11-dev,libc6-dev
STAMP="$ROOTFS/.pillion-sysroot"
# What the stamp records: a different package list or suite means rebuild.
WANT="$SUITE $PACKAGES"

[ "$(id -u)" = 0 ] || die "debootstrap needs root (run with sudo)"

if [ "${1:-}" = "--force" ]; then
    rm -f "$STAMP"
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "==> sysroot already complete: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1)); --force rebuilds it"
    exit 0
fi

run_step "install host packages (debootstrap)" need_debs debootstrap debian-archive-keyring file

step "debootstrap --foreign $SUITE arm64 (download + first-stage unpack)"
# A half-made tree from an interrupted run cannot be trusted: start over.
rm -rf "$ROOTFS"
mkdir -p "$ARM_WORK"
MIRROR="$(debian_mirror)"
echo "    mirror: $MIRROR"
debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ARM_WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$ARM_WORK/debootstrap.log" >&2; die "debootstrap failed (log: $ARM_WORK/debootstrap.log)"; }
done_step

step "unpack every downloaded .deb into the rootfs"
n=0
for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do
    # --keep-directory-symlink: the rootfs is merged-/usr (/lib -> usr/lib); without it tar
    # would replace those symlinks by real directories and break the loader paths.
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$ROOTFS"
    n=$((n + 1))
done
echo "    $n packages unpacked"
done_step

step "check the sysroot"
for f in usr/bin/python3 usr/include/python3.11/Python.h \
    usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py \
    usr/lib/aarch64-linux-gnu/libc.so lib/ld-linux-aarch64.so.1; do
    [ -e "$ROOTFS/$f" ] || die "missing in the sysroot: $f"
done
file -L "$ROOTFS/usr/bin/python3" | grep -q 'ARM aarch64' || die "rootfs python3 is not aarch64"
done_step

echo "$WANT" >"$STAMP"
echo "==> sysroot ready: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
