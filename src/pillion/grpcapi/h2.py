"""Facade over the HTTP/2 twins: ``pillion._ext.h2`` when built, else ``pillion._pure.h2``.

The pure module documents the protocol subset and the event shapes; both raise
:class:`~pillion.grpcapi.h2_errors.H2Error`.
"""

from __future__ import annotations

from pillion._impl import load

_twin = load("h2")
__all__ = list(_twin.__all__)
globals().update({name: getattr(_twin, name) for name in __all__})
