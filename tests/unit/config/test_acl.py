"""Service-invocation ACL: a table of (spec, caller, verb, path, expected) plus the loader round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pillion.config.loader import load_configuration
from pillion.runtime.acl import AccessControl


def op(name: str, verbs: list[str], action: str) -> dict[str, Any]:
    return {"name": name, "httpVerb": verbs, "action": action}


def policy(app: str, default: str | None = None, *ops: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"appId": app, "defaultAction": default, "operations": list(ops), **extra}


DENY_ALL = {"defaultAction": "deny"}
ORDERS = {
    "defaultAction": "deny",
    "policies": [
        policy(
            "web",
            "deny",
            op("/orders", ["GET"], "allow"),
            op("/orders/*", ["GET", "PUT"], "allow"),
            op("/orders/*/items/**", ["*"], "allow"),
            op("/orders/admin", ["GET"], "deny"),
            op("/admin/**", ["*"], "deny"),
            op("/public/**", ["GET"], "allow"),
            op("/public/secret/**", ["GET"], "deny"),
            op("/*/health", ["GET"], "allow"),
            op("/shadow/**", ["*"], "allow"),
            op("/shadow/deep", ["POST"], "allow"),
        ),
        policy("batch", None, op("/jobs/**", ["POST"], "allow")),
        policy("cron", "allow", op("jobs", ["delete"], "deny")),
    ],
}
NO_GLOBAL_DEFAULT = {"policies": [policy("web", None, op("/a", ["GET"], "allow"))]}
SCOPED = {
    "defaultAction": "allow",
    "policies": [
        policy("web", "deny", namespace="prod"),
        policy("api", "deny", trustDomain="other.org"),
        policy("svc", "deny", namespace="default", trustDomain="public"),
    ],
}

CASES: list[tuple[str, dict[str, Any] | None, str, str, str, bool]] = [
    ("no section", None, "anyone", "DELETE", "/anything", True),
    ("empty section", {}, "anyone", "GET", "/x", True),
    ("empty action, no policies", {"defaultAction": "", "policies": []}, "a", "GET", "/x", True),
    ("global deny", DENY_ALL, "anyone", "GET", "/x", False),
    ("global allow", {"defaultAction": "ALLOW"}, "anyone", "GET", "/x", True),
    ("policies but no global default -> deny others", NO_GLOBAL_DEFAULT, "other", "GET", "/a", False),
    ("policies but no global default -> op allows", NO_GLOBAL_DEFAULT, "web", "GET", "/a", True),
    ("policies but no global default -> fallback deny", NO_GLOBAL_DEFAULT, "web", "GET", "/b", False),
    ("unknown caller gets global", ORDERS, "stranger", "GET", "/orders", False),
    ("empty caller gets global", ORDERS, "", "GET", "/orders", False),
    ("exact op", ORDERS, "web", "GET", "/orders", True),
    ("exact op wrong verb", ORDERS, "web", "POST", "/orders", False),
    ("verb is case-insensitive", ORDERS, "web", "get", "/orders", True),
    ("missing leading slash", ORDERS, "web", "GET", "orders", True),
    ("query stripped", ORDERS, "web", "GET", "/orders?x=1&y=/admin", True),
    ("trailing slash", ORDERS, "web", "GET", "/orders/", True),
    ("path case-insensitive", ORDERS, "web", "GET", "/ORDERS/42", True),
    ("single star one segment", ORDERS, "web", "PUT", "/orders/42", True),
    ("single star not two segments", ORDERS, "web", "GET", "/orders/42/x", False),
    ("literal beats star", ORDERS, "web", "GET", "/orders/admin", False),
    ("double star many segments", ORDERS, "web", "DELETE", "/orders/42/items/a/b/c", True),
    ("double star zero segments", ORDERS, "web", "DELETE", "/orders/42/items", True),
    ("double star deny", ORDERS, "web", "GET", "/admin/users/1", False),
    ("more specific double star wins", ORDERS, "web", "GET", "/public/secret/x", False),
    ("broader double star", ORDERS, "web", "GET", "/public/x/y", True),
    ("leading star segment", ORDERS, "web", "GET", "/anything/health", True),
    ("specific op without verb shadows broader", ORDERS, "web", "GET", "/shadow/deep", False),
    ("specific op with verb", ORDERS, "web", "POST", "/shadow/deep", True),
    ("broader op elsewhere", ORDERS, "web", "GET", "/shadow/other", True),
    ("dot segments resolved", ORDERS, "web", "GET", "/public/../admin/x", False),
    ("dot segments cannot escape deny", ORDERS, "web", "GET", "/orders/../admin", False),
    ("encoded slash decoded", ORDERS, "web", "GET", "/admin%2Fx", False),
    ("encoded path matched", ORDERS, "web", "GET", "/%6Frders", True),
    ("bad escape denied", ORDERS, "web", "GET", "/orders%zz", False),
    ("duplicate slashes", ORDERS, "web", "GET", "//orders//7", True),
    ("policy without default uses global", ORDERS, "batch", "GET", "/other", False),
    ("policy op allows", ORDERS, "batch", "POST", "/jobs/1/run", True),
    ("policy op wrong verb uses global", ORDERS, "batch", "GET", "/jobs/1", False),
    ("policy default allow", ORDERS, "cron", "GET", "/whatever", True),
    ("op name without slash, lowercase verb", ORDERS, "cron", "DELETE", "/jobs", False),
    ("namespace mismatch ignores policy", SCOPED, "web", "GET", "/x", True),
    ("trust domain mismatch ignores policy", SCOPED, "api", "GET", "/x", True),
    ("matching namespace and trust domain", SCOPED, "svc", "GET", "/x", False),
]


@pytest.mark.parametrize(
    ("spec", "caller", "verb", "path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_acl_table(spec: dict[str, Any] | None, caller: str, verb: str, path: str, expected: bool) -> None:
    assert AccessControl.from_spec(spec).allowed(caller, verb, path) is expected


def test_namespace_and_trust_domain_arguments() -> None:
    acl = AccessControl.from_spec(SCOPED, namespace="prod", trust_domain="other.org")
    assert acl.allowed("web", "GET", "/x") is False
    assert acl.allowed("api", "GET", "/x") is False
    assert acl.allowed("svc", "GET", "/x") is True


def test_last_policy_for_an_app_wins() -> None:
    spec = {"defaultAction": "deny", "policies": [policy("web", "deny"), policy("web", "allow")]}
    assert AccessControl.from_spec(spec).allowed("web", "GET", "/x") is True


def test_keys_are_case_insensitive() -> None:
    operation = {"NAME": "/a", "HTTPVERB": ["GET"], "Action": "allow"}
    spec = {"DefaultAction": "deny", "Policies": [{"APPID": "web", "operations": [operation]}]}
    acl = AccessControl.from_spec(spec)
    assert acl.allowed("web", "GET", "/a") and not acl.allowed("web", "GET", "/b")


@pytest.mark.parametrize(
    "spec",
    [
        {"defaultAction": "maybe"},
        {"policies": [{"defaultAction": "allow"}]},
        {"policies": [policy("web", None, op("/a", ["GET"], "perhaps"))]},
        {"policies": [policy("web", None, {"httpVerb": ["GET"], "action": "allow"})]},
    ],
)
def test_invalid_spec_raises_value_error(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AccessControl.from_spec(spec)


def test_from_loaded_configuration(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: acl}
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: web
      defaultAction: deny
      trustDomain: public
      namespace: default
      operations:
      - name: /orders/*
        httpVerb: [get]
        action: allow
"""
    )
    acl = AccessControl.from_spec(load_configuration(str(path)).access_control)
    assert acl.allowed("web", "GET", "/orders/1") is True
    assert acl.allowed("web", "POST", "/orders/1") is False
    assert acl.allowed("mobile", "GET", "/orders/1") is False
