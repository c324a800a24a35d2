"""`pillion doctor`: each check's verdict on real files, sockets and mount tables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import pillion
from pillion._testing import free_port
from pillion.systemd import doctor
from pillion.systemd.doctor import FAIL, OK, WARN

MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw
40 22 0:40 / /mnt/nas rw,relatime shared:9 - nfs4 nas:/export rw,vers=4.2
41 40 0:41 / /mnt/nas/local rw,relatime shared:10 - ext4 /dev/sdb1 rw
42 22 0:42 / /mnt/my\\040disk rw shared:11 - xfs /dev/sdc1 rw
43 22 0:43 / /mnt/sshfs rw shared:12 - fuse.sshfs host:/ rw
"""


def _env():
    src = str(Path(pillion.__file__).parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))


def _doctor(*args):
    return subprocess.run([sys.executable, "-m", "pillion", "doctor", *args], env=_env(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("path", "expected"), [
    ("/var/lib/pillion", ("/", "ext4")),
    ("/dev/shm/x", ("/dev/shm", "tmpfs")),
    ("/mnt/nas/data", ("/mnt/nas", "nfs4")),
    ("/mnt/nas/local/data", ("/mnt/nas/local", "ext4")),  # the deepest mount wins
    ("/mnt/nasty", ("/", "ext4")),  # a prefix of the name is not a parent directory
    ("/mnt/my disk/data", ("/mnt/my disk", "xfs")),
])
def test_mount_of_finds_the_deepest_mount(path, expected):
    assert doctor.mount_of(path, MOUNTINFO) == expected


def _mounted_at(tmp_path, fstype):
    return f"22 1 253:1 / / rw - ext4 /dev/vda1 rw\n50 22 0:50 / {tmp_path} rw - {fstype} x rw\n"


@pytest.mark.parametrize(("fstype", "status"), [
    ("ext4", OK), ("nfs4", FAIL), ("cifs", FAIL), ("fuse.sshfs", FAIL), ("tmpfs", WARN), ("fuse.mergerfs", WARN),
])
def test_filesystem_verdicts(tmp_path, fstype, status):
    checks = {c.name: c for c in doctor.check_data_dir(str(tmp_path / "data"), _mounted_at(tmp_path, fstype))}
    assert checks["filesystem"].status == status
    assert checks["data dir"].status == OK and "will be created" in checks["data dir"].detail
    if status != OK:
        assert checks["filesystem"].fix


def test_data_dir_that_is_a_file_fails(tmp_path):
    (tmp_path / "data").write_text("")
    (check,) = doctor.check_data_dir(str(tmp_path / "data"))
    assert check.status == FAIL and "not a directory" in check.detail


def test_data_dir_on_a_pseudo_filesystem_fails_even_for_root():
    checks = {c.name: c for c in doctor.check_data_dir("/proc/pillion-data")}
    assert checks["data dir"].status == FAIL and "not writable" in checks["data dir"].detail
    assert checks["filesystem"].status == FAIL and checks["filesystem"].detail.startswith("proc at /proc")


def test_a_port_held_by_another_program_fails_and_a_free_one_passes(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        check = doctor.check_http_port(port, str(tmp_path))
        assert check.status == FAIL and str(port) in check.fix
    finally:
        holder.close()
    assert doctor.check_http_port(port, str(tmp_path)).status == OK
    assert not (tmp_path / "registry").exists()  # looking never creates a registry


def test_a_port_held_by_a_registered_sidecar_is_ok(tmp_path):
    from pillion.runtime.registry import HostRegistry, SidecarEntry

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    registry = HostRegistry(tmp_path)
    registry.register(SidecarEntry(app_id="orders", pid=os.getpid(), http_port=port, internal_host="127.0.0.1",
                                   internal_port=1))
    registry.close()
    try:
        check = doctor.check_http_port(port, str(tmp_path))
    finally:
        holder.close()
    assert check.status == OK and "'orders'" in check.detail


def test_mqtt_port_verdicts():
    port = free_port()
    assert doctor.check_mqtt_port(port).status == OK
    assert doctor.check_mqtt_port(0).status == OK
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        assert doctor.check_mqtt_port(port, lambda host, p: True).status == OK
        assert doctor.check_mqtt_port(port, lambda host, p: False).status == WARN
        assert doctor.check_mqtt_port(port).status == WARN  # a real probe: a silent listener is not Pillion
    finally:
        holder.close()


def test_arch_verdicts():
    assert doctor.check_arch("x86_64", 2**63 - 1).status == OK
    assert doctor.check_arch("aarch64", 2**63 - 1).status == OK
    assert doctor.check_arch("armv7l", 2**31 - 1).status == WARN
    assert doctor.check_arch("aarch64", 2**31 - 1).status == WARN  # 32-bit userland on a 64-bit kernel
    assert doctor.check_arch("riscv64", 2**63 - 1).status == WARN


def test_systemd_unit_verdicts(tmp_path):
    from pillion.systemd.install import init_system

    assert doctor.check_systemd_unit(str(tmp_path)).status == WARN
    init_system(tmp_path, executable="/opt/pillion/bin/pillion")
    assert doctor.check_systemd_unit(str(tmp_path)).status == FAIL  # ExecStart program missing
    program = tmp_path / "opt/pillion/bin/pillion"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert doctor.check_systemd_unit(str(tmp_path)).status == OK


def test_lmdb_map_fails_under_an_address_space_limit():
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (512 << 20, resource.RLIM_INFINITY))\n"
            "from pillion.systemd import doctor; c = doctor.check_lmdb_map(); print(c.status, c.fix)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("FAIL ") and "prlimit --data" in out.stdout, out.stdout + out.stderr
    assert doctor.check_lmdb_map().status == OK


def test_cli_exit_codes_and_json(tmp_path):
    data = tmp_path / "data"
    good = _doctor("--data-dir", str(data), "--dapr-http-port", str(free_port()), "--mqtt-port", "0",
                   "--root", str(tmp_path), "-o", "json")
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert names[:4] == ["arch", "python", "dependencies", "compiled modules"]
    assert {"data dir", "filesystem", "lmdb map", "systemd unit"} <= set(names)
    assert not data.exists()  # the doctor only looks

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        bad = _doctor("--data-dir", str(data), "--dapr-http-port", str(holder.getsockname()[1]), "--mqtt-port", "0",
                      "--root", str(tmp_path))
    finally:
        holder.close()
    assert bad.returncode == 1
    line = next(l for l in bad.stdout.splitlines() if "(HTTP API)" in l)
    assert line.startswith("FAIL")
    assert "fix: stop that program" in bad.stdout


def test_the_grpc_fronts_twins_are_checked_with_the_grpc_extra():
    from pillion.grpcapi import installed

    if not installed():
        pytest.skip("the grpc extra (pip install 'pillion[grpc]') is not installed")
    code = ("from pillion import _impl; from pillion.systemd import doctor; c = doctor.check_extensions(); "
            "print(c.status, sorted(_impl.loaded()))")  # a fresh process: no other test has loaded the twins
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.split(" ", 1)[0] in (OK, doctor.WARN), out.stdout + out.stderr
    assert "'grpcproto'" in out.stdout and "'h2'" in out.stdout, out.stdout + out.stderr
