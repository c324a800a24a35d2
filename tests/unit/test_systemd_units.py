"""The shipped units pass `systemd-analyze verify` and score 2.0 or better on `security`.

Both commands run offline against a root directory holding the units and a stub
ExecStart program (verify fails when the program does not exist).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from pillion.systemd.install import PLACEHOLDER_EXEC, UNITS, unit_text

ANALYZE = shutil.which("systemd-analyze")
# Under CI (`make system-deps` installs it) a missing systemd-analyze fails the tests instead.
pytestmark = pytest.mark.skipif(ANALYZE is None and not os.environ.get("CI"),
                                reason="systemd-analyze is missing (Debian package systemd)")

MAX_EXPOSURE = 2.0


@pytest.fixture
def root(tmp_path):
    stub = tmp_path / PLACEHOLDER_EXEC.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        (units / name).write_text(unit_text(name, PLACEHOLDER_EXEC))
    (units / "pillion@orders.service").symlink_to("pillion@.service")
    return tmp_path


def _verify(root, unit):
    return subprocess.run([ANALYZE, "verify", "--recursive-errors=no", f"--root={root}", unit],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", ["pillion.service", "pillion@orders.service"])
def test_verify_is_clean(root, unit):
    result = _verify(root, unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_verify_catches_a_mistyped_key(root):
    """Proves the check above can fail: a unit with a typo does not verify."""
    unit = root / "etc/systemd/system/pillion.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = _verify(root, "pillion.service")
    assert result.returncode != 0
    assert "WatchdogSecs" in result.stderr


@pytest.mark.parametrize("unit", ["pillion.service", "pillion@orders.service"])
def test_security_exposure_is_at_most_2(root, unit):
    # --threshold counts tenths of the exposure level: 20 is 2.0.
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", f"--root={root}", unit],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\S+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, match.group(0)
    assert result.returncode == 0, result.stderr


def test_units_have_the_settings_the_sidecar_relies_on():
    for name in UNITS:
        text = unit_text(name, "/opt/pillion/bin/pillion")
        settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
        assert int(settings["WatchdogSec"]) > 0 and settings["Restart"] == "on-failure"
        assert settings["ExecStart"].startswith("/opt/pillion/bin/pillion sidecar ")
        assert "--data-dir /var/lib/pillion" in settings["ExecStart"]
        # Stop timeout beyond the sidecar's default graceful drain (5 s).
        assert int(settings["TimeoutStopSec"]) > 5
    assert "EnvironmentFile=/etc/pillion/%i.env" in unit_text("pillion@.service", "/x")
    assert "EnvironmentFile=-/etc/pillion/pillion.env" in unit_text("pillion.service", "/x")
