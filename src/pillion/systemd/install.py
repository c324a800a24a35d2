"""``pillion init --system``: the files a system service needs, under a root directory.

Lays out ``/etc/pillion`` (config.yaml, resources/, pillion.env), ``/var/lib/pillion``
and the two units in ``/etc/systemd/system`` with ``ExecStart`` pointing at the
installed ``pillion`` script. Running it again changes nothing; a file that exists is
kept (the user may have edited it) unless ``--force``, except the units, which are
ours: they are rewritten when they differ, and the old one is kept as ``.bak``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

UNITS = ("pillion.service", "pillion@.service")
# The ExecStart path in the shipped units; init replaces it with the real one.
PLACEHOLDER_EXEC = "/usr/local/bin/pillion"

CONFIG_YAML = """\
# Pillion's Configuration for the system service (Dapr's Configuration resource).
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: pillion
spec:
  features: []
"""

ENV_FILE = """\
# Read by pillion.service (EnvironmentFile=). Restart the service after a change.
APP_ID=pillion
DAPR_HTTP_PORT=3500
PILLION_MQTT_PORT=1883
# Extra `pillion sidecar` flags, e.g. the app this sidecar serves:
# PILLION_ARGS=--app-port 3000 --log-level debug
PILLION_ARGS=
"""


@dataclass(frozen=True)
class Action:
    path: Path
    what: str  # "wrote", "kept", "updated", "created", "unchanged"


def unit_text(name: str, executable: str) -> str:
    """A shipped unit with its ExecStart pointing at ``executable``."""
    text = resources.files("pillion.systemd").joinpath("units", name).read_text()
    return text.replace(f"ExecStart={PLACEHOLDER_EXEC} ", f"ExecStart={executable} ")


def pillion_executable() -> str:
    """Absolute path of the ``pillion`` script this process belongs to.

    ``sys.argv[0]`` when we were started as ``pillion`` (pyenv shims exec the real
    script, so this is never the shim); else the script beside the interpreter; else
    whatever ``pillion`` the PATH finds.
    """
    argv0 = Path(sys.argv[0])
    if argv0.name == "pillion" and argv0.is_file():
        return str(argv0.resolve())
    beside = Path(sys.executable).parent / "pillion"
    if beside.is_file():
        return str(beside)
    found = shutil.which("pillion")
    return str(Path(found).resolve()) if found else PLACEHOLDER_EXEC


def _write(path: Path, text: str, force: bool, actions: list[Action], mode: int = 0o644) -> None:
    if path.exists():
        if path.read_text() == text:
            actions.append(Action(path, "unchanged"))
            return
        if not force:
            actions.append(Action(path, "kept"))
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    actions.append(Action(path, "updated" if existed else "wrote"))


def _write_unit(path: Path, text: str, actions: list[Action]) -> None:
    if path.exists() and path.read_text() != text:
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    _write(path, text, True, actions)


def init_system(root: str | os.PathLike = "/", *, force: bool = False, executable: str | None = None) -> list[Action]:
    """Lay out the service files under ``root``; returns what was done to each path."""
    from ..components.registry import DEFAULT_RESOURCES

    root = Path(root)
    etc = root / "etc" / "pillion"
    actions: list[Action] = []
    for directory in (etc / "resources", root / "var" / "lib" / "pillion", root / "etc" / "systemd" / "system"):
        if not directory.is_dir():
            directory.mkdir(parents=True)
            actions.append(Action(directory, "created"))
    _write(etc / "config.yaml", CONFIG_YAML, force, actions)
    _write(etc / "pillion.env", ENV_FILE, force, actions)
    for filename, text in DEFAULT_RESOURCES.items():
        _write(etc / "resources" / filename, text, force, actions)
    executable = executable or pillion_executable()
    for name in UNITS:
        _write_unit(root / "etc" / "systemd" / "system" / name, unit_text(name, executable), actions)
    return actions


def cmd_init_system(args) -> int:
    root = Path(args.root or "/")
    try:
        actions = init_system(root, force=args.force)
    except OSError as exc:
        print(f"pillion init --system: {exc}", file=sys.stderr)
        return 1
    executable = pillion_executable()
    print(f"Pillion system service laid out under {root}")
    for action in actions:
        print(f"  {action.what:9} {action.path}")
    if any(a.what == "kept" for a in actions):
        print("  (kept files differ from the defaults: they were left as they are; --force overwrites them)")
    if executable == PLACEHOLDER_EXEC and not Path(executable).exists():
        print("warning: no installed `pillion` script found; edit ExecStart= in the units", file=sys.stderr)
    elif executable.startswith(("/root/", "/home/")):
        print(f"warning: {executable} is under a home directory, which ProtectHome=yes hides from the "
              "service; install Pillion system-wide (e.g. a venv in /opt/pillion)", file=sys.stderr)
    print("Next:")
    if str(root) not in ("/", ""):
        print(f"  (files are under {root}; copy them onto the device's / first)")
    print("  systemctl daemon-reload && systemctl enable --now pillion")
    print("  systemctl status pillion; journalctl -u pillion -f")
    print("  one sidecar per app: write /etc/pillion/<app-id>.env with its own ports, then "
          "systemctl enable --now pillion@<app-id>")
    return 0
