#!/usr/bin/env bash
# Installs the aarch64 wheel from dist/ with its aarch64 dependencies into a directory of
# the arm64 rootfs and runs arm/smoke_test.py there with the rootfs's Python 3.11 under
# qemu-aarch64-static: compiled modules load, a real `pillion sidecar` serves state and
# pub/sub, and SIGTERM stops it with exit code 0.
#
# "Install" means: `pip download` (on the host, for the aarch64 platform) the wheel's
# dependencies, then unzip every wheel into one target directory put on PYTHONPATH. A
# venv made inside the rootfs would not help: its python symlink resolves to the host's
# binary when the rootfs is not the real root.
#
# Builds the sysroot first when missing (arm/sysroot.sh) and the aarch64 wheel when it
# is missing or older than the sources (arm/build-wheels.sh aarch64).
# Usage: arm/test-wheel-arm64.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOTFS="$ARM_WORK/rootfs-arm64"
WHEELHOUSE="$ARM_WORK/wheelhouse-aarch64"
SITE="$ARM_WORK/site-aarch64"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/src/pillion/_version.py")
EXT_NAMES=$(for f in "$REPO"/ext/*.pyx; do basename "$f" .pyx; done | sort | tr '\n' ' ')

run_step "install host packages (qemu-user-static)" need_debs qemu-user-static file
QEMU=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static not found"

if [ ! -f "$ROOTFS/.pillion-sysroot" ]; then
    run_step "arm64 rootfs (arm/sysroot.sh)" "$REPO/arm/sysroot.sh"
fi
# Up to date in about a second; rebuilt when the sources changed, so what is tested is
# the working tree.
run_step "aarch64 wheel (arm/build-wheels.sh aarch64)" "$REPO/arm/build-wheels.sh" aarch64
WHEEL=$(ls -1t "$REPO"/dist/pillion-"$VERSION"-cp311-cp311-manylinux*_aarch64.whl | head -1)
echo "    wheel: $(basename "$WHEEL")"

step "build venv (pip for downloading)"
# shellcheck disable=SC2119  # no requirements: pip alone is enough
build_venv
done_step

step "download the aarch64 dependency wheels (cp311, manylinux2014_aarch64)"
mkdir -p "$WHEELHOUSE"
# Files already in the wheelhouse are reused; only the index lookup is repeated.
# The pillion wheel itself is copied in too (pip download puts the named wheel there).
rm -f "$WHEELHOUSE"/pillion-*.whl
"$BUILD_PY" -m pip download --quiet --dest "$WHEELHOUSE" \
    --platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.11 \
    --implementation cp "$WHEEL" >"$ARM_WORK/download.log" 2>&1 \
    || { tail -20 "$ARM_WORK/download.log" >&2; die "pip download failed (log: $ARM_WORK/download.log)"; }
ls -1 "$WHEELHOUSE" | sed 's/^/    /'
done_step

step "unzip the wheels into $SITE"
# Fresh every time, so a stale module from an older wheel can never be imported.
rm -rf "$SITE"
mkdir -p "$SITE"
for whl in "$WHEELHOUSE"/*.whl; do
    "$BUILD_PY" -m zipfile -e "$whl" "$SITE"
done
done_step

step "smoke test under qemu-aarch64-static (rootfs Python 3.11)"
PY=("$QEMU" -L "$ROOTFS" "$ROOTFS/usr/bin/python3")
# A clean environment: only what the test needs, PILLION_NO_EXTENSIONS never set, and a
# cwd outside the repository so nothing but $SITE provides the package.
SMOKE_DIR=$(mktemp -d)
at_exit "rm -rf '$SMOKE_DIR'"
(cd "$SMOKE_DIR" && env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PYTHONPATH="$SITE" PYTHONDONTWRITEBYTECODE=1 \
    SMOKE_PYTHON="$(printf '%q ' "${PY[@]}")" \
    "${PY[@]}" "$REPO/arm/smoke_test.py" --machine aarch64 --site "$SITE" --expect-ext "$EXT_NAMES")
done_step
