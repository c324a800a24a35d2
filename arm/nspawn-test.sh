#!/usr/bin/env bash
# Boots real systemd (systemd-nspawn, amd64 Debian 12 minbase) and checks pillion.service
# end to end: `pillion init --system`, Type=notify start (READY=1), a hung process killed
# by the watchdog and restarted, and a clean stop.
#
#   arm/nspawn-test.sh            # uses dist/pillion-*-cp311-*x86_64*.whl, else builds one
#
# Idempotent: the rootfs under $ARM_WORK/nspawn is reused, the wheel reinstalled each run.
# The container has its own network namespace (loopback only), so its ports never
# collide with the host's.
set -euo pipefail
# shellcheck source=arm/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NS="$ARM_WORK/nspawn"
ROOTFS="$NS/rootfs"
WHEELS="$NS/wheels"
LOG="$NS/boot.log"
WATCHDOG_SEC=4  # the test's drop-in: a short watchdog so the hang is caught quickly

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and systemd-nspawn need it)"
[ "$(uname -m)" = x86_64 ] || die "this script boots an amd64 rootfs: run it on x86_64"

run_step "Debian packages: systemd-container debootstrap" need_debs systemd-container debootstrap

step "rootfs: Debian 12 minbase with systemd, dbus, python3, pip"
if [ ! -f "$ROOTFS/.pillion-rootfs-ok" ]; then
    rm -rf "$ROOTFS"
    mkdir -p "$NS"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-pip \
        bookworm "$ROOTFS" "$(debian_mirror)" >"$NS/debootstrap.log" 2>&1 \
        || { tail -20 "$NS/debootstrap.log" >&2; die "debootstrap failed"; }
    echo pillion-test >"$ROOTFS/etc/hostname"
    touch "$ROOTFS/.pillion-rootfs-ok"
else
    echo "    reusing $ROOTFS"
fi
py_in_root=$(chroot "$ROOTFS" python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
echo "    python3 in the rootfs: $py_in_root"
[ "$py_in_root" = cp311 ] || die "the rootfs python3 is $py_in_root, the wheels are cp311"
done_step

step "wheels: Pillion (dist/ or built here) and its dependencies"
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
# shellcheck disable=SC2012  # wheel names have no odd characters; ls -t gives the newest
wheel=$(ls -t "$REPO"/dist/pillion-*-cp311-*x86_64*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ] && [ -n "$(find "$REPO/src" "$REPO/ext" "$REPO/setup.py" "$REPO/pyproject.toml" \
        -newer "$wheel" -type f -print -quit 2>/dev/null)" ]; then
    echo "    $wheel is older than the sources: building a fresh one instead"
    wheel=""
fi
if [ -n "$wheel" ]; then
    echo "    using $wheel"
    cp "$wheel" "$WHEELS/"
else
    host_py=$(command -v python3)
    "$host_py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
        || die "no dist/ wheel and the host python3 is not 3.11: build a cp311 wheel into dist/ first"
    echo "    building with $host_py -m pip wheel (log: $NS/wheel.log)"
    "$host_py" -m pip wheel --no-deps -w "$WHEELS" "$REPO" >"$NS/wheel.log" 2>&1 \
        || { tail -20 "$NS/wheel.log" >&2; die "pip wheel failed"; }
fi
python3 -m pip download -q -d "$WHEELS" --only-binary=:all: \
    "uvloop>=0.19" "httptools>=0.6" "orjson>=3.8" "lmdb>=1.4" "pyyaml>=6.0" "paho-mqtt>=2.0"
find "$WHEELS" -name '*.whl' -printf '    %f\n' | sort
unzip -l "$WHEELS"/pillion-*.whl | grep -q 'pillion/systemd/units/pillion.service' \
    || die "the wheel lacks pillion/systemd/units/*.service (package data)"
done_step

step "install the wheels into the rootfs and run pillion init --system there"
rm -rf "$ROOTFS/opt/wheels" && cp -r "$WHEELS" "$ROOTFS/opt/wheels"
systemd-nspawn -q -D "$ROOTFS" --register=no --keep-unit --pipe --private-network sh -c '
    set -e
    python3 -m pip install -q --break-system-packages --no-index --find-links /opt/wheels \
        --force-reinstall pillion 2>&1 | grep -iv "running pip as the .root. user" || true
    rm -f /etc/systemd/system/pillion.service /etc/systemd/system/pillion@.service
    pillion init --system
    pillion doctor --data-dir /var/lib/pillion || true
'
mkdir -p "$ROOTFS/etc/systemd/system/pillion.service.d"
cat >"$ROOTFS/etc/systemd/system/pillion.service.d/test-watchdog.conf" <<CONF
# arm/nspawn-test.sh: a short watchdog so a hang is caught in seconds
[Service]
WatchdogSec=$WATCHDOG_SEC
CONF
grep '^ExecStart=' "$ROOTFS/etc/systemd/system/pillion.service" | cut -c1-100 | sed 's/^/    /'
done_step

step "boot systemd in the container"
: >"$LOG"
systemd-nspawn -D "$ROOTFS" --register=no --keep-unit --private-network -b --console=pipe \
    --machine=pillion-test >"$LOG" 2>&1 &
NSPAWN=$!
at_exit "kill $NSPAWN 2>/dev/null; sleep 1; kill -9 $NSPAWN 2>/dev/null"
# The container's PID 1 is the systemd whose parent chain leads to our nspawn.
init_pid=""
for _ in $(seq 200); do
    for pid in $(pgrep -x systemd || true); do
        ppid=$(ps -o ppid= -p "$pid" | tr -d ' ')
        if [ "$ppid" = "$NSPAWN" ] || [ "$(ps -o ppid= -p "$ppid" 2>/dev/null | tr -d ' ')" = "$NSPAWN" ]; then
            init_pid=$pid
        fi
    done
    [ -n "$init_pid" ] && break
    sleep 0.1
done
[ -n "$init_pid" ] || { cat "$LOG" >&2; die "the container's systemd did not start"; }
in_ct() { nsenter -t "$init_pid" -a "$@"; }
state=""
for _ in $(seq 300); do
    state=$(in_ct systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.2
done
echo "    container init pid $init_pid (host), system state: $state"
show() { in_ct systemctl show -p "$1" pillion | sed 's/^/    /'; }
value() { in_ct systemctl show -p "$1" --value pillion; }
done_step

step "systemctl start pillion (returns after READY=1)"
in_ct systemctl daemon-reload
in_ct systemctl start pillion
show ActiveState,SubState,StatusText,MainPID,NRestarts,WatchdogUSec
[ "$(value ActiveState)" = active ] || die "pillion is not active"
first_pid=$(value MainPID)
# shellcheck disable=SC2016  # expanded by the container's shell
port=$(in_ct sh -c '. /etc/pillion/pillion.env; echo "$DAPR_HTTP_PORT"')
code=$(in_ct python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$port/v1.0/healthz').status)")
echo "    GET /v1.0/healthz -> $code"
[ "$code" = 204 ] || die "healthz answered $code"
in_ct python3 - "$port" <<'PY'
import json, sys, urllib.request as u
base = f"http://127.0.0.1:{sys.argv[1]}/v1.0/state/statestore"
u.urlopen(u.Request(base, json.dumps([{"key": "k", "value": "survives"}]).encode(), {"content-type": "application/json"}))
print("    state write + read:", u.urlopen(base + "/k").read().decode())
PY
done_step

step "hang: kill -STOP the main pid; the watchdog (${WATCHDOG_SEC}s) must kill and restart it"
in_ct sh -c "kill -STOP $first_pid"
t_hang=$EPOCHREALTIME
for _ in $(seq 600); do
    if [ "$(value NRestarts)" -ge 1 ] && [ "$(value ActiveState)" = active ] && [ "$(value MainPID)" != "$first_pid" ] \
        && [ "$(value SubState)" = running ]; then
        break
    fi
    sleep 0.1
done
echo "    restarted $(awk -v a="$t_hang" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s after the hang"
show ActiveState,SubState,StatusText,MainPID,NRestarts
[ "$(value NRestarts)" = 1 ] || die "expected NRestarts=1"
[ "$(value MainPID)" != "$first_pid" ] || die "MainPID did not change"
in_ct journalctl -u pillion --no-pager -o cat | grep -iE 'watchdog|SIGABRT|Scheduled restart|ready' | tail -6 | sed 's/^/    journal: /'
in_ct python3 -c "import urllib.request as u; print('    after the restart: state k =', u.urlopen('http://127.0.0.1:$port/v1.0/state/statestore/k').read().decode())"
done_step

step "template: pillion@orders beside pillion (own ports, shared data dir and broker)"
cat >"$ROOTFS/etc/pillion/orders.env" <<ENV
DAPR_HTTP_PORT=3601
PILLION_MQTT_PORT=1883
ENV
in_ct systemctl start pillion@orders
in_ct systemctl show -p ActiveState,SubState,StatusText,User pillion@orders | sed 's/^/    /'
[ "$(in_ct systemctl show -p ActiveState --value pillion@orders)" = active ] || die "pillion@orders is not active"
in_ct python3 -c "import urllib.request as u; print('    orders GET /v1.0/healthz ->', u.urlopen('http://127.0.0.1:3601/v1.0/healthz').status)"
in_ct pillion list --data-dir /var/lib/pillion | sed 's/^/    /'
in_ct sh -c 'ls -ld /var/lib/pillion /var/lib/private/pillion; stat -c "owner uid %u: %n" /var/lib/private/pillion/registry/data.mdb' \
    | sed 's/^/    /'
in_ct systemctl stop pillion@orders
[ "$(in_ct systemctl show -p Result --value pillion@orders)" = success ] || die "pillion@orders did not stop cleanly"
done_step

step "pillion logs --app-id: the journal of pillion@orders and of pillion.service"
in_ct pillion logs --app-id orders -n 3 | sed 's/^/    orders: /'
orders_log=$(in_ct pillion logs --app-id orders)
grep -q 'Started pillion@orders.service' <<<"$orders_log" \
    || die "pillion logs --app-id orders does not show the start of pillion@orders"
main_id=$(sed -n 's/^APP_ID=//p' "$ROOTFS/etc/pillion/pillion.env" | tr -d "'\"")
in_ct pillion logs --app-id "$main_id" -n 3 | sed "s/^/    $main_id: /"
[ "$(in_ct pillion logs --app-id "$main_id" --print-command)" = "journalctl --no-pager -u pillion.service" ] \
    || die "pillion logs --app-id $main_id does not read pillion.service"
done_step

step "systemctl stop pillion (graceful drain, clean exit)"
in_ct systemctl stop pillion
show ActiveState,Result,ExecMainStatus,ExecMainCode
[ "$(value Result)" = success ] || die "stop result is $(value Result)"
in_ct journalctl -u pillion --no-pager -o cat -n 4 | sed 's/^/    journal: /'
done_step

step "power off the container"
in_ct systemctl poweroff || true
for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
done_step
echo "PASS: pillion.service: notify start, watchdog restart, clean stop"
