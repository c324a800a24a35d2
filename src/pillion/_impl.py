"""The accelerator switch: picks ``pillion._ext.<name>`` or its pure twin.

``PILLION_NO_EXTENSIONS=1`` forces the pure twins. Otherwise the compiled module
is used when it imports, and the pure one when it does not (a source checkout
without a build). ``loaded()`` says which one each name resolved to.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("PILLION_NO_EXTENSIONS", "") not in ("", "0")

_chosen: dict[str, str] = {}


def load(name: str) -> ModuleType:
    """Return the implementation module for ``name`` (compiled unless disabled)."""
    if not NO_EXTENSIONS:
        try:
            module = importlib.import_module(f"pillion._ext.{name}")
        except ImportError as exc:
            logging.getLogger("pillion.impl").debug(
                "compiled %s unavailable (%s); using the pure twin", name, exc
            )
        else:
            _chosen[name] = "compiled"
            return module
    _chosen[name] = "pure"
    return importlib.import_module(f"pillion._pure.{name}")


def loaded() -> dict[str, str]:
    """Map of twin name to ``"compiled"`` or ``"pure"`` for every name loaded so far."""
    return dict(_chosen)
