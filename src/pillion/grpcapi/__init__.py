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
    """True when the ``grpc`` extra (the Dapr stubs, hpack, and grpcio for gRPC apps) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("grpc", "dapr", "hpack"))


# The API name of an RPC in ``spec.api`` rules: its module's name, but for these.
_MODULE_APIS = {"pubsub": "publish"}
_RPC_APIS = {"Shutdown": "shutdown", "UnlockAlpha1": "unlock", "SubscribeTopicEventsAlpha1": "subscribe"}


def api_of(module: str, rpc: str) -> tuple[str, str]:
    """(API name, version) of an RPC for ``spec.api`` rules: ``("state", "v1")``, ``("lock", "v1alpha1")``."""
    return _RPC_APIS.get(rpc) or _MODULE_APIS.get(module, module), "v1alpha1" if rpc.endswith("Alpha1") else "v1"


def all_methods(serves=lambda name, version: True) -> dict:
    """RPC name -> handler(sidecar, request, context) of every module in ``MODULES``, for
    each RPC whose API ``serves(name, version)`` allows."""
    methods: dict = {}
    for module_name in MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        methods.update((rpc, handler) for rpc, handler in module.METHODS.items()
                       if serves(*api_of(module_name, rpc)))
    return methods
