"""Real sidecars with the gRPC API on a free port, and the official SDK's DaprClient against them."""

from __future__ import annotations

import contextlib

import pytest

from pillion._testing import free_port

pytest.importorskip("grpc", reason="the grpc extra (pip install 'pillion[grpc]') is not installed")
pytest.importorskip("dapr.clients", reason="the official Dapr Python SDK (pip package 'dapr') is not installed")


def grpc_sidecar(sidecar, app_id: str = "app", *extra: str, **kwargs):
    """``sidecar(...)`` with ``--dapr-grpc-port`` on a free port; the port is ``.grpc_port``."""
    port = free_port()
    sc = sidecar(app_id, "--dapr-grpc-port", str(port), *extra, **kwargs)
    sc.grpc_port = port
    return sc


@contextlib.contextmanager
def dapr_client(sc, **kwargs):
    """The SDK's DaprClient in its default (gRPC) mode, aimed at ``sc``.

    DaprClient probes ``/v1.0/healthz/outbound`` over HTTP first: its settings are read
    from the environment on each access, so DAPR_HTTP_PORT is set for the duration.
    """
    from dapr.clients import DaprClient
    from dapr.conf import settings

    saved = settings.__dict__.get("DAPR_HTTP_PORT")
    settings.DAPR_HTTP_PORT = sc.http_port
    try:
        with DaprClient(address=f"127.0.0.1:{sc.grpc_port}", **kwargs) as client:
            yield client
    finally:
        if saved is None:
            del settings.DAPR_HTTP_PORT
        else:
            settings.DAPR_HTTP_PORT = saved
