"""The Dapr SDK's generated protobuf modules, imported without the SDK's package ``__init__``s.

``dapr/__init__.py``, ``dapr/proto/__init__.py`` and ``dapr/proto/runtime/v1/__init__.py``
import grpcio, every ``*_pb2_grpc`` module, the SDK's settings and importlib.metadata: about
13 MB of a sidecar's memory that a gRPC front with its own HTTP/2 never uses. While
``generated_modules()`` is active those three are bare packages that only point at the SDK's
folders, so ``from dapr.proto.runtime.v1 import state_pb2`` runs that generated module and
what it imports, nothing else. Afterwards they are dropped again, so a later ``import dapr``
gets the real package (the modules already loaded are reused). Where the SDK is imported
already (a test process) this does nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path

_PACKAGES = ("dapr", "dapr.proto", "dapr.proto.runtime.v1")


@contextmanager
def generated_modules():
    if "dapr" in sys.modules:
        yield
        return
    root = Path(importlib.util.find_spec("dapr").origin).parent
    shells = {}
    for name in _PACKAGES:
        path = str(root.joinpath(*name.split(".")[1:]))
        module = types.ModuleType(name)
        module.__path__ = [path]
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__spec__.submodule_search_locations = [path]
        shells[name] = sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in shells.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
