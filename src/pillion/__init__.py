"""Pillion: a Dapr-compatible sidecar runtime for edge and IoT devices."""

from ._version import __version__

__all__ = ["__version__"]
