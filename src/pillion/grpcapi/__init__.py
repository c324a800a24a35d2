"""The Dapr gRPC API (``dapr.proto.runtime.v1.Dapr``) as an optional second front.

Installed with ``pip install pillion[grpc]``. Each module here translates the protobuf
messages of one building block to the same functions the HTTP handlers in ``api/`` call,
and back; the building-block logic lives once, in ``api/``. Nothing in this package is
imported unless the sidecar serves gRPC, so the core's memory stays what it was.

The message classes and the service descriptor are the generated stubs that the official
Dapr Python SDK (``dapr``) ships and keeps in step with daprd's protos.
"""

from __future__ import annotations

import importlib.util

# The building blocks served over gRPC, one module each, every one with ``METHODS``.
MODULES = ("metadata", "state", "pubsub", "invoke", "bindings", "secrets", "configuration", "lock", "actors")


def installed() -> bool:
    """True when the ``grpc`` extra (grpcio and the Dapr stubs) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("grpc", "dapr"))


def all_methods() -> dict:
    """RPC name -> handler(sidecar, request, context), from every module in ``MODULES``."""
    methods: dict = {}
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        methods.update(module.METHODS)
    return methods
