"""Fixtures shared by the whole suite: twin-backed tests run once per implementation."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IMPLEMENTATIONS = ("pure", "compiled")


def import_twin(name: str, kind: str) -> ModuleType:
    """Import ``pillion._pure.<name>`` or ``pillion._ext.<name>`` directly, bypassing ``_impl``.

    A missing compiled module skips the test, except under CI, where it fails: CI
    must never pass with the ``.so`` missing.
    """
    if kind == "pure":
        return importlib.import_module(f"pillion._pure.{name}")
    try:
        return importlib.import_module(f"pillion._ext.{name}")
    except ImportError as exc:
        message = (
            f"compiled extension pillion._ext.{name} is not built ({exc}); "
            "run `python setup.py build_ext --inplace`"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The router module of one twin."""
    return import_twin("router", request.param)


@pytest.fixture(scope="session")
def router_twins() -> tuple[ModuleType, ModuleType]:
    """``(pure, compiled)`` router modules, for parity tests."""
    return import_twin("router", "pure"), import_twin("router", "compiled")
