"""spec.api rules: which API each front serves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pillion.api import all_endpoints
from pillion.api.access import http_version, serves


def config(allowed=(), denied=()):
    def rule(name, version=None, protocol=None):
        return {"name": name, "version": version, "protocol": protocol}

    return SimpleNamespace(api_allowed=[rule(*r) for r in allowed], api_denied=[rule(*r) for r in denied])


def test_no_configuration_or_no_rules_serves_everything():
    assert serves(None, "http", "state", "v1.0")
    assert serves(config(), "grpc", "actors", "v1")


def test_an_allow_list_serves_only_what_it_names_on_its_protocol():
    cfg = config(allowed=[("state", "v1.0", "http")])
    assert serves(cfg, "http", "state", "v1.0")
    assert not serves(cfg, "http", "state", "v1.0-alpha1")
    assert not serves(cfg, "http", "publish", "v1.0")
    assert serves(cfg, "grpc", "publish", "v1")  # no gRPC rule: gRPC serves everything


def test_a_rule_without_protocol_is_http_and_without_version_matches_all():
    cfg = config(allowed=[("state",)])
    assert serves(cfg, "http", "state", "v1.0") and serves(cfg, "http", "state", "v1.0-alpha1")
    assert not serves(cfg, "http", "secrets", "v1.0")
    assert serves(cfg, "grpc", "secrets", "v1")


def test_the_deny_list_wins_over_the_allow_list():
    cfg = config(allowed=[("state", "v1", "grpc"), ("publish", "v1", "grpc")], denied=[("state", "v1", "grpc")])
    assert not serves(cfg, "grpc", "state", "v1")
    assert serves(cfg, "grpc", "publish", "v1")
    assert not serves(cfg, "grpc", "actors", "v1")
    assert serves(cfg, "http", "actors", "v1.0")


@pytest.mark.parametrize("route, version", [("/v1.0/state/{storeName}", "v1.0"),
                                            ("/v1.0-alpha1/lock/{storeName}", "v1.0-alpha1")])
def test_http_version_is_the_first_route_segment(route, version):
    assert http_version(route) == version


def test_every_http_endpoint_has_a_version_the_rules_can_name():
    assert {http_version(e.route) for e in all_endpoints()} == {"v1.0", "v1.0-alpha1"}


def test_grpc_rpcs_map_to_dapr_api_names():
    pytest.importorskip("grpc", reason="the grpc extra (pip install 'pillion[grpc]') is not installed")
    from pillion.grpcapi import all_methods, api_of

    assert api_of("state", "GetState") == ("state", "v1")
    assert api_of("pubsub", "PublishEvent") == ("publish", "v1")
    assert api_of("pubsub", "BulkPublishEventAlpha1") == ("publish", "v1alpha1")
    assert api_of("lock", "UnlockAlpha1") == ("unlock", "v1alpha1")
    assert api_of("metadata", "Shutdown") == ("shutdown", "v1")
    only_state = all_methods(lambda name, version: name == "state")
    assert "GetState" in only_state and "QueryStateAlpha1" in only_state
    assert "PublishEvent" not in only_state and "GetMetadata" not in only_state
