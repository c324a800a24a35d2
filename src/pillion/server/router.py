"""The HTTP router: compiled ``pillion._ext.router`` unless disabled, else its pure twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._impl import load

__all__ = ["Router"]

if TYPE_CHECKING:
    from .._pure.router import Router
else:
    _mod = load("router")
    Router = _mod.Router
