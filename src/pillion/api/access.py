"""``spec.api`` of the Configuration: which APIs each front serves.

daprd's rules, per protocol: with an allow list only the APIs on it are served; a deny list
takes APIs away, and wins where both lists name one. A rule without a protocol is an HTTP
rule; one without a version matches every version. An API that is not served is not
routed at all, as in daprd: over HTTP its path falls through to invocation by header (and
so to 404 without one), over gRPC the call is UNIMPLEMENTED. Health checks are always served.
"""

from __future__ import annotations


def serves(configuration, protocol: str, name: str, version: str) -> bool:
    """Whether the ``protocol`` front serves the API ``name`` at ``version`` (``v1.0``, ``v1alpha1``, ...)."""
    if configuration is None:
        return True
    allowed = [rule for rule in configuration.api_allowed if (rule["protocol"] or "http") == protocol]
    if allowed and not _names(allowed, name, version):
        return False
    denied = [rule for rule in configuration.api_denied if (rule["protocol"] or "http") == protocol]
    return not _names(denied, name, version)


def _names(rules: list[dict], name: str, version: str) -> bool:
    return any(rule["name"] == name and rule["version"] in (None, "", version) for rule in rules)


def http_version(route: str) -> str:
    """``v1.0`` or ``v1.0-alpha1``: the first segment of an endpoint's route."""
    return route.split("/", 2)[1]
