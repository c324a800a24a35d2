"""Fixtures shared by the whole suite: twin-backed tests run once per implementation."""

from __future__ import annotations

from types import ModuleType

import pytest

from pillion._testing import import_twin

IMPLEMENTATIONS = ("pure", "compiled")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The router module of one twin."""
    return import_twin("router", request.param)


@pytest.fixture(scope="session")
def router_twins() -> tuple[ModuleType, ModuleType]:
    """``(pure, compiled)`` router modules, for parity tests."""
    return import_twin("router", "pure"), import_twin("router", "compiled")
