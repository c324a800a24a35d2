"""Metadata API: what this sidecar runs (Dapr's JSON shape) and app-set attributes."""

from __future__ import annotations

from ..server.http import NO_CONTENT, Response
from . import Endpoint


def get_metadata(sidecar, request):
    return Response.json(sidecar.metadata())


def set_attribute(sidecar, key: str, value: str) -> None:
    """An app-set attribute, listed under ``extended`` (both fronts)."""
    sidecar.extended[key] = value


def put_metadata(sidecar, request):
    set_attribute(sidecar, request.params["key"], request.body.decode("utf-8", "replace"))
    return NO_CONTENT


ENDPOINTS = (
    Endpoint(("GET",), "/v1.0/metadata", "GetMetadata", "metadata", get_metadata),
    Endpoint(("PUT",), "/v1.0/metadata/{key}", "PutMetadata", "metadata", put_metadata),
)
