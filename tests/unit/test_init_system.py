"""`pillion init --system` into a temporary root: layout, idempotence, --force, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pillion
from pillion.components.registry import DEFAULT_RESOURCES
from pillion.systemd.install import CONFIG_YAML, ENV_FILE, PLACEHOLDER_EXEC, init_system

EXE = "/opt/pillion/bin/pillion"


def _by_path(actions):
    return {a.path: a.what for a in actions}


def test_lays_out_etc_var_and_the_units(tmp_path):
    actions = _by_path(init_system(tmp_path, executable=EXE))
    etc = tmp_path / "etc/pillion"
    assert (etc / "config.yaml").read_text() == CONFIG_YAML
    assert (etc / "pillion.env").read_text() == ENV_FILE
    for name, text in DEFAULT_RESOURCES.items():
        assert (etc / "resources" / name).read_text() == text
    assert (tmp_path / "var/lib/pillion").is_dir()
    for unit in ("pillion.service", "pillion@.service"):
        text = (tmp_path / "etc/systemd/system" / unit).read_text()
        assert f"ExecStart={EXE} sidecar " in text
        assert PLACEHOLDER_EXEC not in text
        assert actions[tmp_path / "etc/systemd/system" / unit] == "wrote"


def test_the_written_configuration_loads(tmp_path):
    from pillion.config.loader import load_configuration, load_resources

    init_system(tmp_path, executable=EXE)
    etc = tmp_path / "etc/pillion"
    load_configuration(str(etc / "config.yaml"))
    names = {c.name for c in load_resources([str(etc / "resources")], app_id="pillion").components}
    assert {"statestore", "pubsub"} <= names and len(names) == len(DEFAULT_RESOURCES)


def test_second_run_changes_nothing(tmp_path):
    init_system(tmp_path, executable=EXE)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = init_system(tmp_path, executable=EXE)
    assert {a.what for a in again} == {"unchanged"}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_edited_config_is_kept_unless_force(tmp_path):
    init_system(tmp_path, executable=EXE)
    env = tmp_path / "etc/pillion/pillion.env"
    env.write_text("APP_ID=orders\nDAPR_HTTP_PORT=3600\n")
    assert _by_path(init_system(tmp_path, executable=EXE))[env] == "kept"
    assert env.read_text().startswith("APP_ID=orders")
    assert _by_path(init_system(tmp_path, force=True, executable=EXE))[env] == "updated"
    assert env.read_text() == ENV_FILE


def test_units_follow_the_executable_and_keep_a_backup(tmp_path):
    init_system(tmp_path, executable=EXE)
    unit = tmp_path / "etc/systemd/system/pillion.service"
    actions = _by_path(init_system(tmp_path, executable="/usr/bin/pillion"))
    assert actions[unit] == "updated"
    assert "ExecStart=/usr/bin/pillion sidecar" in unit.read_text()
    assert f"ExecStart={EXE} sidecar" in unit.with_name("pillion.service.bak").read_text()


def test_cli_init_system_prints_the_next_commands(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(pillion.__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-m", "pillion", "init", "--system", "--root", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "systemctl daemon-reload && systemctl enable --now pillion" in out.stdout
    assert f"wrote     {tmp_path}/etc/pillion/config.yaml" in out.stdout
    unit = (tmp_path / "etc/systemd/system/pillion.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program = exec_start.split("=", 1)[1].split()[0]
    assert os.path.isabs(program) and Path(program).name == "pillion"
    again = subprocess.run([sys.executable, "-m", "pillion", "init", "--system", "--root", str(tmp_path)],
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "wrote" not in again.stdout
