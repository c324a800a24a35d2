#!/usr/bin/env bash
# Makes local container base images for Dockerfile.arm64 when no registry can be reached
# (so python:3.11-slim-bookworm cannot be pulled): a Debian bookworm minbase root
# filesystem with python3 (3.11, matching the cp311 wheels), python3-venv (ensurepip and
# its bundled pip wheel, so `python3 -m venv` gives a working pip offline) and
# ca-certificates, committed with buildah as
#
#   localhost/pillion-base:bookworm-arm64    localhost/pillion-base:bookworm-amd64
#
# plus a manifest list localhost/pillion-base:bookworm holding both.
#
# arm64 needs a full two-stage debootstrap run under qemu-user through binfmt_misc (about
# 11 minutes on 2 cores). The no-emulation rootfs of arm/sysroot.sh is not reused: it is
# an unconfigured tree (no maintainer script ran: no /etc/passwd for useradd, no
# byte-compiled stdlib), has no python3-venv, and carries compiler headers a runtime
# base does not want.
#
# Usage: arm/base-image.sh [--force] [arm64|amd64 ...]    (default: both architectures)
# Idempotent: an architecture whose image exists is skipped unless --force.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
NAME=localhost/pillion-base
FORCE=0
ARCHES=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        arm64 | amd64) ARCHES+=("$arg") ;;
        *) die "usage: $0 [--force] [arm64|amd64 ...]" ;;
    esac
done
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(arm64 amd64)
[ "$(id -u)" = 0 ] || die "debootstrap and buildah here need root (run with sudo)"
[ "$(uname -m)" = x86_64 ] || die "written for an x86_64 build host"

run_step "install host packages (debootstrap, buildah, qemu-user-static, binfmt-support)" \
    need_debs debootstrap debian-archive-keyring buildah qemu-user-static binfmt-support

enable_binfmt() {
    # binfmt_misc is not mounted at boot on this kind of host; qemu-user-static registers
    # with the F (fix binary) flag, so chroots need no copy of the emulator.
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
        || die "could not register qemu-aarch64 with binfmt_misc"
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

make_base() {
    local arch="$1"
    local rootfs="$ARM_WORK/base-rootfs-$arch" tarball="$ARM_WORK/base-rootfs-$arch.tar"
    local tag="$NAME:$SUITE-$arch" log="$ARM_WORK/base-debootstrap-$arch.log" ctr
    if [ "$FORCE" = 0 ] && image_exists "$tag"; then
        step "$tag exists (use --force to rebuild)"
        done_step
        return 0
    fi
    if [ "$arch" = arm64 ]; then
        run_step "enable qemu-aarch64 through binfmt_misc" enable_binfmt
    fi

    step "debootstrap $SUITE $arch minbase with $PACKAGES$([ "$arch" = arm64 ] && echo ' (emulated: ~11 min)')"
    rm -rf "$rootfs"
    mkdir -p "$ARM_WORK"
    debootstrap --arch="$arch" --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$rootfs" "$(debian_mirror)" >"$log" 2>&1 \
        || { tail -20 "$log" >&2; die "debootstrap $arch failed (log: $log)"; }
    done_step

    step "check python3 in the $arch rootfs and trim it"
    chroot "$rootfs" /usr/bin/python3 -c 'import sys, ssl, venv, ensurepip; assert sys.version_info[:2] == (3, 11)'
    # Nothing in a container base needs the package lists, download cache, docs or
    # translations; apt itself stays so derived images can still apt-get install.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log \
        "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/root/.cache \
        "$rootfs"/var/cache/debconf/*-old
    # glibc's iconv modules (9 MB): Python has its own codecs and never loads them.
    rm -rf "$rootfs"/usr/lib/*-linux-gnu/gconv
    # debootstrap copies the build host's resolver and host name in: not part of an image.
    : >"$rootfs/etc/resolv.conf"
    rm -f "$rootfs/etc/hostname"
    echo "    rootfs: $(du -sh "$rootfs" | cut -f1)"
    done_step

    step "commit $tag with buildah"
    tar -C "$rootfs" --numeric-owner -cf "$tarball" .
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tarball" / >/dev/null
    buildah config --arch "$arch" --os linux --env LANG=C.UTF-8 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd '["python3"]' --label org.opencontainers.image.description="Debian $SUITE minbase + python3 (pillion base)" \
        "$ctr"
    buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
    rm -f "$tarball"
    rm -rf "$rootfs"
    echo "    $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag")"
    done_step
}

for arch in "${ARCHES[@]}"; do
    make_base "$arch"
done

step "manifest list $NAME:$SUITE (both architectures that exist)"
buildah manifest rm "$NAME:$SUITE" >/dev/null 2>&1 || true
buildah manifest create "$NAME:$SUITE" >/dev/null
for arch in arm64 amd64; do
    if image_exists "$NAME:$SUITE-$arch"; then
        buildah manifest add --arch "$arch" --os linux "$NAME:$SUITE" "$NAME:$SUITE-$arch" >/dev/null
        echo "    added $NAME:$SUITE-$arch"
    fi
done
done_step
