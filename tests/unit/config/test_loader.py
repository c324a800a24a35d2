"""Loader tests against real YAML files in tmp_path: good manifests and every error path."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.config.durations import parse_duration
from pillion.config.loader import load_configuration, load_resources, parse_trip
from pillion.config.manifests import MetadataItem, SecretKeyRef, Source
from pillion.errors import ConfigError

STATE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.lmdb
  version: v1
  metadata:
  - name: path
    value: /tmp/db
  - name: actorStateStore
    value: true
  - name: maxSize
    value: 1024
  - name: ratio
    value: 1.5
  - name: date
    value: 2024-01-02
  - name: empty
  - name: password
    secretKeyRef: {name: dbsecret, key: pw}
  - name: token
    envRef: TOKEN
"""


def write(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def component(name: str, ctype: str = "state.lmdb", extra: str = "") -> str:
    return f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n{extra}spec:\n  type: {ctype}\n"


def load_error(tmp_path: Path, text: str, name: str = "bad.yaml", **kw: object) -> ConfigError:
    write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_resources([str(tmp_path)], app_id=str(kw.get("app_id", "app")))
    return info.value


def assert_error(err: ConfigError, file: str, document: int | None, field: str) -> None:
    assert err.field == field, str(err)
    assert err.document == document, str(err)
    assert os.path.basename(err.file) == file
    assert file in str(err)
    if document is not None:
        assert f"document {document}" in str(err)


# ---- components -------------------------------------------------------------


def test_component_fields_and_scalar_text(tmp_path: Path) -> None:
    write(tmp_path, "state.yaml", STATE)
    res = load_resources([str(tmp_path)], app_id="app")
    (c,) = res.components
    assert (c.name, c.type, c.version, c.namespace) == ("statestore", "state.lmdb", "v1", None)
    assert (c.init_timeout, c.ignore_errors, c.auth_secret_store, c.scopes) == ("5s", False, None, ())
    assert c.source == Source(str(tmp_path / "state.yaml"), 0)
    assert c.metadata_dict() == {
        "path": "/tmp/db",
        "actorStateStore": "true",
        "maxSize": "1024",
        "ratio": "1.5",
        "date": "2024-01-02",
        "empty": "",
    }
    assert c.metadata[6] == MetadataItem("password", None, SecretKeyRef("dbsecret", "pw"), None)
    assert c.metadata[7] == MetadataItem("token", None, None, "TOKEN")


def test_multi_document_sorted_files_and_yml(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", component("second") + "---\n---\n" + component("third", "pubsub.mqtt3"))
    write(tmp_path, "a.yaml", "---\n" + component("first"))
    write(tmp_path, "notes.txt", "not: yaml: at all: [")
    (tmp_path / "sub.yaml").mkdir()
    write(tmp_path / "sub.yaml", "x.yaml", component("nested"))
    res = load_resources([str(tmp_path)], app_id="app")
    assert [c.name for c in res.components] == ["first", "second", "third"]
    assert [c.source.document for c in res.components] == [0, 0, 2]


def test_case_insensitive_fields(tmp_path: Path) -> None:
    write(
        tmp_path,
        "c.yaml",
        """\
        APIVERSION: dapr.io/v1alpha1
        Kind: Component
        Metadata: {Name: s}
        auth: {secretstore: vault}
        Spec:
          TYPE: secretstores.local.file
          initTimeout: 1m
          IgnoreErrors: true
          Metadata:
          - NAME: a
            secretkeyref: {NAME: n}
          - name: b
            ENVREF: B
        """,
    )
    (c,) = load_resources([str(tmp_path)], app_id="app").components
    assert (c.auth_secret_store, c.init_timeout, c.ignore_errors) == ("vault", "1m", True)
    assert c.metadata[0].secret_key_ref == SecretKeyRef("n", "n")
    assert c.metadata[1].env_ref == "B"


def test_scopes_and_namespace(tmp_path: Path) -> None:
    write(
        tmp_path,
        "c.yaml",
        component("mine", extra="scopes: [app, other]\n")
        + "---\n"
        + component("theirs", extra="scopes: [other]\n")
        + "---\n"
        + component("ns-a").replace("name: ns-a", "name: ns-a\n  namespace: a")
        + "---\n"
        + component("ns-b").replace("name: ns-b", "name: ns-b\n  namespace: b"),
    )
    names = lambda **kw: [c.name for c in load_resources([str(tmp_path)], app_id="app", **kw).components]
    assert names() == ["mine", "ns-a", "ns-b"]
    assert names(namespace="a") == ["mine", "ns-a"]
    assert load_resources([str(tmp_path)], app_id="other").components[1].name == "theirs"


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", component("store"))
    err = load_error(tmp_path, component("store"), name="b.yaml")
    assert_error(err, "b.yaml", 0, "metadata.name")
    assert "a.yaml" in str(err)


def test_duplicates_scoped_out_are_fine(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", component("store", extra="scopes: [x]\n"))
    write(tmp_path, "b.yaml", component("store"))
    assert len(load_resources([str(tmp_path)], app_id="app").components) == 1


def test_duplicates_across_folders(tmp_path: Path) -> None:
    write(tmp_path / "one", "a.yaml", component("store"))
    write(tmp_path / "two", "a.yaml", component("store"))
    with pytest.raises(ConfigError) as info:
        load_resources([str(tmp_path / "one"), str(tmp_path / "two")], app_id="app")
    assert "one" in str(info.value) and "two" in str(info.value)


def test_configuration_in_resources_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "c.yaml", "apiVersion: whatever\nkind: Configuration\nspec: 5\n---\n" + component("s"))
    assert [c.name for c in load_resources([str(tmp_path)], app_id="app").components] == ["s"]


@pytest.mark.parametrize(
    ("text", "document", "field"),
    [
        ("- a\n- b\n", 0, "(document)"),
        ("just text\n", 0, "(document)"),
        (component("ok") + "---\n42\n", 1, "(document)"),
        ("apiVersion: dapr.io/v1alpha1\nmetadata: {name: x}\nspec: {type: state.x}\n", 0, "kind"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Widget\n", 0, "kind"),
        ("apiVersion: dapr.io/v1alpha1\nkind: [Component]\n", 0, "kind"),
        ("apiVersion: dapr.io/v2alpha1\nkind: Component\n", 0, "apiVersion"),
        ("kind: Component\n", 0, "apiVersion"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {type: state.x}\n", 0, "metadata"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {}\nspec: {type: state.x}\n", 0, "metadata.name"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: 5}\nspec: {type: a.b}\n", 0, "metadata.name"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\n", 0, "spec"),
        (component("x", "lmdb"), 0, "spec.type"),
        (component("x", "''"), 0, "spec.type"),
        (component("x", "[a]"), 0, "spec.type"),
        (component("x") + "  metadata:\n  - value: 1\n", 0, "spec.metadata[0].name"),
        (component("x") + "  metadata:\n  - {name: a}\n  - {name: b}\n  - {name: ''}\n", 0, "spec.metadata[2].name"),
        (component("x") + "  metadata: {a: b}\n", 0, "spec.metadata"),
        (component("x") + "  metadata:\n  - just-a-string\n", 0, "spec.metadata[0]"),
        (component("x") + "  metadata:\n  - {name: a, value: v, envRef: E}\n", 0, "spec.metadata[0]"),
        (component("x") + "  metadata:\n  - {name: a, secretKeyRef: {name: s}, envRef: E}\n", 0, "spec.metadata[0]"),
        (
            component("x") + "  metadata:\n  - {name: a, secretKeyRef: {key: k}}\n",
            0,
            "spec.metadata[0].secretKeyRef.name",
        ),
        (component("x") + "  metadata:\n  - {name: a, secretKeyRef: s}\n", 0, "spec.metadata[0].secretKeyRef"),
        (component("x") + "  metadata:\n  - {name: a, envRef: [E]}\n", 0, "spec.metadata[0].envRef"),
        (component("x") + "  initTimeout: soon\n", 0, "spec.initTimeout"),
        (component("x") + "  initTimeout: -5s\n", 0, "spec.initTimeout"),
        (component("x") + "  ignoreErrors: maybe\n", 0, "spec.ignoreErrors"),
        (component("x", extra="scopes: app\n"), 0, "scopes"),
        (component("x", extra="scopes: [app, 3]\n"), 0, "scopes[1]"),
        (component("x", extra="auth: vault\n"), 0, "auth"),
        ("a: [1, 2\n", 0, "(yaml)"),
        (component("ok") + "---\nkey: 'unterminated\n", 1, "(yaml)"),
        ("a: b\n\tc: d\n", 0, "(yaml)"),
        ("? [a]\n: b\n", 0, "(yaml)"),
        ("a: !!python/object:os.system x\n", 0, "(yaml)"),
        ("a: !!binary 'a'\n", 0, "(yaml)"),
        ("a: " + "9" * 5000 + "\n", 0, "(yaml)"),
        ("a: \x00\n", 0, "(yaml)"),
    ],
)
def test_component_errors(tmp_path: Path, text: str, document: int, field: str) -> None:
    assert_error(load_error(tmp_path, text), "bad.yaml", document, field)


def test_yaml_error_mentions_line_and_column(tmp_path: Path) -> None:
    err = load_error(tmp_path, component("ok") + "---\nkind: Component\nmetadata: [1, 2\n")
    assert_error(err, "bad.yaml", 1, "(yaml)")
    assert "line" in err.expected and "column" in err.expected


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_resources([str(tmp_path)], app_id="app")
    assert_error(info.value, "bad.yaml", None, "(yaml)")


def test_unknown_kind_lists_allowed(tmp_path: Path) -> None:
    err = load_error(tmp_path, "apiVersion: dapr.io/v1alpha1\nkind: Widget\n")
    assert "Component" in err.expected and "HTTPEndpoint" in err.expected


@pytest.mark.parametrize("bad", ["missing", "file"])
def test_resources_path_must_be_a_directory(tmp_path: Path, bad: str) -> None:
    path = tmp_path / bad
    if bad == "file":
        path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_resources([str(path)], app_id="app")
    assert info.value.field == "--resources-path"
    assert info.value.document is None


def test_empty_folder_and_empty_file(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "comments.yaml", "# nothing\n---\n")
    assert load_resources([str(tmp_path)], app_id="app").components == ()


# ---- subscriptions and http endpoints ---------------------------------------


def test_subscriptions_v1_and_v2(tmp_path: Path) -> None:
    write(
        tmp_path,
        "subs.yaml",
        """\
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {name: old}
        spec:
          pubsubname: pubsub
          topic: orders
          route: /orders
          metadata: {rawPayload: true, count: 3}
          deadLetterTopic: dead
        scopes: [app]
        ---
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata: {name: new}
        spec:
          pubsubName: pubsub
          topic: widgets
          routes:
            rules:
            - match: event.type == "widget"
              path: /widgets
            - path: /any
            default: /fallback
          bulkSubscribe: {enabled: true, maxMessagesCount: 10}
        """,
    )
    old, new = load_resources([str(tmp_path)], app_id="app").subscriptions
    assert (old.pubsubname, old.topic, old.routes, old.default_route) == ("pubsub", "orders", (), "/orders")
    assert old.metadata == {"rawPayload": "true", "count": "3"}
    assert (old.dead_letter_topic, old.bulk_subscribe, old.scopes) == ("dead", None, ("app",))
    assert new.routes == (('event.type == "widget"', "/widgets"), ("", "/any"))
    assert new.default_route == "/fallback"
    assert new.bulk_subscribe == {"enabled": True, "maxMessagesCount": 10, "maxAwaitDurationMs": 1000}
    assert new.source.document == 1


SUB_V2 = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  pubsubname: p\n  topic: t\n"
SUB_V1 = SUB_V2.replace("v2alpha1", "v1alpha1")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (SUB_V2, "spec.routes"),
        (SUB_V2 + "  route: /old\n", "spec.routes"),
        (SUB_V2 + "  routes: {rules: [{match: x}]}\n", "spec.routes.rules[0].path"),
        (SUB_V2 + "  routes: {rules: [{match: 5, path: /p}]}\n", "spec.routes.rules[0].match"),
        (SUB_V2 + "  routes: {rules: {a: b}}\n", "spec.routes.rules"),
        (SUB_V1, "spec.route"),
        (SUB_V1.replace("  topic: t\n", "") + "  route: /r\n", "spec.topic"),
        (SUB_V1.replace("  pubsubname: p\n", "") + "  route: /r\n", "spec.pubsubname"),
        (SUB_V1 + "  route: /r\n  bulkSubscribe: [enabled: true]\n", "spec.bulkSubscribe"),
        (SUB_V1 + "  route: /r\n  bulkSubscribe: {maxMessagesCount: 0}\n", "spec.bulkSubscribe.maxMessagesCount"),
        (SUB_V1 + "  route: /r\n  metadata: [a]\n", "spec.metadata"),
        (SUB_V1.replace("v1alpha1", "v3") + "  route: /r\n", "apiVersion"),
    ],
)
def test_subscription_errors(tmp_path: Path, text: str, field: str) -> None:
    assert_error(load_error(tmp_path, text), "bad.yaml", 0, field)


def test_http_endpoint(tmp_path: Path) -> None:
    write(
        tmp_path,
        "ep.yaml",
        """\
        apiVersion: dapr.io/v1alpha1
        kind: HTTPEndpoint
        metadata: {name: github}
        spec:
          baseUrl: https://api.github.com
          headers:
          - {name: Accept, value: application/json}
          - {name: Authorization, secretKeyRef: {name: gh, key: token}}
        """,
    )
    (ep,) = load_resources([str(tmp_path)], app_id="app").http_endpoints
    assert ep.base_url == "https://api.github.com"
    assert ep.headers[1].secret_key_ref == SecretKeyRef("gh", "token")


@pytest.mark.parametrize("url", ["''", "ftp://x", "https://", "[a]"])
def test_http_endpoint_bad_url(tmp_path: Path, url: str) -> None:
    text = f"apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata: {{name: e}}\nspec: {{baseUrl: {url}}}\n"
    assert_error(load_error(tmp_path, text), "bad.yaml", 0, "spec.baseUrl")


# ---- resiliency -------------------------------------------------------------

RESILIENCY = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: res}
spec:
  policies:
    timeouts:
      general: 5s
      fast: 300ms
    retries:
      steady: {policy: constant, duration: 1s, maxRetries: 3}
      backoff:
        policy: exponential
        maxInterval: 15s
        matching: {httpStatusCodes: "500-599,429", gRPCStatusCodes: "1-4,14"}
    circuitBreakers:
      cb:
        maxRequests: 1
        interval: 8s
        timeout: 45s
        trip: consecutiveFailures > 8 && requests >= 10 || totalFailures > 100
  targets:
    apps:
      orders: {timeout: general, retry: steady, circuitBreaker: cb}
    actors:
      Cart: {timeout: fast, circuitBreakerScope: both, circuitBreakerCacheSize: 500}
    components:
      statestore:
        outbound: {retry: backoff}
        inbound: {timeout: general}
"""


def test_resiliency_good(tmp_path: Path) -> None:
    write(tmp_path, "res.yaml", RESILIENCY)
    (r,) = load_resources([str(tmp_path)], app_id="app").resiliencies
    assert r.policies["timeouts"] == {"general": 5.0, "fast": 0.3}
    assert r.policies["retries"]["steady"]["maxRetries"] == 3
    assert r.policies["retries"]["backoff"]["maxRetries"] == -1
    assert r.policies["retries"]["backoff"]["maxInterval"] == 15.0
    assert r.policies["circuitBreakers"]["cb"]["timeout"] == 45.0
    assert r.targets["apps"]["orders"] == {"timeout": "general", "retry": "steady", "circuitBreaker": "cb"}
    assert r.targets["actors"]["Cart"]["circuitBreakerScope"] == "both"
    assert r.targets["components"]["statestore"]["outbound"] == {"retry": "backoff"}


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("retry: steady", "retry: nope", "spec.targets.apps.orders.retry", "spec.policies.retries"),
        ("timeout: general,", "timeout: missing,", "spec.targets.apps.orders.timeout", "spec.policies.timeouts"),
        ("circuitBreaker: cb}", "circuitBreaker: x}", "spec.targets.apps.orders.circuitBreaker", "circuitBreakers"),
        ("{retry: backoff}", "{retry: b2}", "spec.targets.components.statestore.outbound.retry", "retries"),
        ("general: 5s", "general: 5", "spec.policies.timeouts.general", "Go duration"),
        ("fast: 300ms", "fast: 3 hours", "spec.policies.timeouts.fast", "Go duration"),
        ("duration: 1s", "duration: 1x", "spec.policies.retries.steady.duration", "Go duration"),
        ("maxInterval: 15s", "maxInterval: x", "spec.policies.retries.backoff.maxInterval", "Go duration"),
        ("policy: constant", "policy: linear", "spec.policies.retries.steady.policy", "constant or exponential"),
        ("maxRetries: 3", "maxRetries: -2", "spec.policies.retries.steady.maxRetries", "-1"),
        ("maxRetries: 3", "maxRetries: lots", "spec.policies.retries.steady.maxRetries", "integer"),
        ('"500-599,429"', '"599-500"', "spec.policies.retries.backoff.matching.httpStatusCodes", "500-599"),
        ('"1-4,14"', '"17"', "spec.policies.retries.backoff.matching.gRPCStatusCodes", "0 to 16"),
        ("maxRequests: 1", "maxRequests: true", "spec.policies.circuitBreakers.cb.maxRequests", "integer"),
        ("interval: 8s", "interval: 8", "spec.policies.circuitBreakers.cb.interval", "Go duration"),
        ("consecutiveFailures > 8", "failures > 8", "spec.policies.circuitBreakers.cb.trip", "consecutiveFailures"),
        ("consecutiveFailures > 8", "consecutiveFailures >> 8", "spec.policies.circuitBreakers.cb.trip", "&&"),
        ("requests >= 10", "requests >= ten", "spec.policies.circuitBreakers.cb.trip", "||"),
        ("Scope: both", "Scope: all", "spec.targets.actors.Cart.circuitBreakerScope", "type"),
        ("    timeouts:\n", "    timeouts: [5s]\n    other:\n", "spec.policies.timeouts", "mapping"),
    ],
)
def test_resiliency_errors(tmp_path: Path, old: str, new: str, field: str, expected: str) -> None:
    assert old in RESILIENCY
    err = load_error(tmp_path, component("s") + "---\n" + RESILIENCY.replace(old, new, 1))
    assert_error(err, "bad.yaml", 1, field)
    assert expected in err.expected


def test_parse_trip() -> None:
    assert parse_trip("consecutiveFailures > 5") == ((("consecutiveFailures", ">", 5),),)
    assert parse_trip("requests>=10 && totalFailures != 0 || consecutiveSuccesses == 2") == (
        (("requests", ">=", 10), ("totalFailures", "!=", 0)),
        (("consecutiveSuccesses", "==", 2),),
    )
    for bad in ["", "consecutiveFailures", "x > 1", "requests > -1", "requests > 1 &&", "(requests > 1)"]:
        with pytest.raises(ValueError):
            parse_trip(bad)


# ---- durations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("5s", 5.0),
        ("300ms", 0.3),
        ("1h2m3.5s", 3723.5),
        ("1.5us", 1.5e-6),
        ("1\u00b5s", 1e-6),
        ("1\u03bcs", 1e-6),
        ("10ns", 1e-8),
        ("-1.5h", -5400.0),
        ("+2m", 120.0),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("1m0s", 60.0),
        ("2562047h", 2562047 * 3600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "text", ["", "5", "1.5", "s", ".s", "-", "1d", "1 s", " 1s", "1s ", "1S", "1e3s", "\u0665s", "3000000h", "1h-1m"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# ---- configuration ----------------------------------------------------------

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: ignored}
spec: {type: state.x}
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprConfig
spec:
  tracing:
    samplingRate: "1"
  AccessControl:
    defaultAction: Deny
    trustDomain: public
    policies:
    - appId: web
      defaultAction: allow
      namespace: default
      operations:
      - {name: /admin/**, httpVerb: [get, '*'], action: deny}
  nameResolution:
    component: static
    configuration:
      apps:
        orders: ["10.0.0.5:3501", "[::1]:3502", "edge-2.local:3500"]
  features:
  - {name: HotReload, enabled: true}
  - {name: Other}
  api:
    denied:
    - {name: state, version: v1.0, protocol: HTTP}
  somethingNew: {x: 1}
"""


def test_configuration_good(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", CONFIG)
    cfg = load_configuration(path)
    assert cfg.name == "daprConfig" and cfg.source == Source(path, 1)
    ac = cfg.access_control
    assert ac is not None and ac["defaultAction"] == "deny"
    assert ac["policies"][0]["operations"][0] == {"name": "/admin/**", "httpVerb": ["GET", "*"], "action": "deny"}
    nr = cfg.name_resolution
    assert nr is not None and nr["component"] == "static"
    assert nr["configuration"]["apps"]["orders"][1] == "[::1]:3502"
    assert cfg.features == {"HotReload": True, "Other": False}
    assert cfg.api_denied == [{"name": "state", "version": "v1.0", "protocol": "http"}]
    assert cfg.api_allowed == []
    assert cfg.spec["somethingNew"] == {"x": 1} and cfg.spec["tracing"] == {"samplingRate": "1"}


def test_configuration_minimal(tmp_path: Path) -> None:
    cfg = load_configuration(write(tmp_path, "c.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\n"))
    assert (cfg.name, cfg.spec, cfg.access_control, cfg.name_resolution, cfg.features) == ("", {}, None, None, {})


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("defaultAction: Deny", "defaultAction: block", "spec.accessControl.defaultAction"),
        ("- appId: web", "- appid: ''", "spec.accessControl.policies[0].appId"),
        ("defaultAction: allow", "defaultAction: 1", "spec.accessControl.policies[0].defaultAction"),
        ("action: deny}", "action: nope}", "spec.accessControl.policies[0].operations[0].action"),
        (", action: deny}", "}", "spec.accessControl.policies[0].operations[0].action"),
        ("{name: /admin/**, ", "{", "spec.accessControl.policies[0].operations[0].name"),
        ("httpVerb: [get, '*']", "httpVerb: GET", "spec.accessControl.policies[0].operations[0].httpVerb"),
        ("httpVerb: [get, '*']", "httpVerb: [G T]", "spec.accessControl.policies[0].operations[0].httpVerb[0]"),
        ("    policies:\n", "    policies: {}\n    other:\n", "spec.accessControl.policies"),
        ('"10.0.0.5:3501"', '"10.0.0.5"', "spec.nameResolution.configuration.apps.orders[0]"),
        ('"[::1]:3502"', '"::1:3502"', "spec.nameResolution.configuration.apps.orders[1]"),
        ('"edge-2.local:3500"', '"edge:70000"', "spec.nameResolution.configuration.apps.orders[2]"),
        ('"edge-2.local:3500"', '":3500"', "spec.nameResolution.configuration.apps.orders[2]"),
        ('"edge-2.local:3500"', "3500", "spec.nameResolution.configuration.apps.orders[2]"),
        ("orders: [", "orders: []\n        old: [", "spec.nameResolution.configuration.apps.orders"),
        ("      apps:\n", "      aps:\n", "spec.nameResolution.configuration.apps"),
        ("component: static", "component: [static]", "spec.nameResolution.component"),
        ("{name: HotReload, enabled: true}", "{name: HotReload, enabled: yes please}", "spec.features[0].enabled"),
        ("{name: Other}", "{enabled: true}", "spec.features[1].name"),
        ("  features:\n", "  features: {}\n  other:\n", "spec.features"),
        ("protocol: HTTP", "protocol: udp", "spec.api.denied[0].protocol"),
        ("{name: state, ", "{", "spec.api.denied[0].name"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Configuration", "apiVersion: v1\nkind: Configuration", "apiVersion"),
    ],
)
def test_configuration_errors(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in CONFIG
    path = write(tmp_path, "config.yaml", CONFIG.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_configuration(path)
    assert_error(info.value, "config.yaml", 1, field)


def test_configuration_other_nameresolution_kept_raw(tmp_path: Path) -> None:
    text = CONFIG.replace("component: static", "component: mdns").replace("      apps:\n", "      other:\n")
    nr = load_configuration(write(tmp_path, "c.yaml", text)).name_resolution
    addresses = ["10.0.0.5:3501", "[::1]:3502", "edge-2.local:3500"]
    assert nr is not None and nr["configuration"] == {"other": {"orders": addresses}}


@pytest.mark.parametrize(
    ("text", "document", "field"),
    [
        (None, None, "--config"),
        ("", None, "kind"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\n", None, "kind"),
        ("- a\n", 0, "(document)"),
        ("kind: Configuration\nspec: [1]\n", 0, "apiVersion"),
        ("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec: [1]\n", 0, "spec"),
        ("---\n---\nkind: Configuration\nspec: {a: [\n", 1, "(yaml)"),
    ],
)
def test_configuration_file_errors(tmp_path: Path, text: str | None, document: int | None, field: str) -> None:
    path = str(tmp_path / "c.yaml")
    if text is not None:
        write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_configuration(path)
    assert_error(info.value, "c.yaml", document, field)


# ---- robustness -------------------------------------------------------------

YAMLISH = st.text(
    alphabet=st.sampled_from(list("abkindComponetspcmadtyv:-[]{},'\"&*!|>#%@`?\n  \t0123456789.\\/\x00\u00e9")),
    max_size=200,
)


def _load_only_config_errors(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "fuzz.yaml").write_bytes(payload)
    try:
        load_resources([str(tmp_path)], app_id="app")
    except ConfigError:
        pass
    try:
        load_configuration(str(tmp_path / "fuzz.yaml"))
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200))
def test_random_bytes_only_raise_config_error(tmp_path: Path, payload: bytes) -> None:
    _load_only_config_errors(tmp_path, payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=YAMLISH)
def test_random_yamlish_text_only_raises_config_error(tmp_path: Path, body: str) -> None:
    _load_only_config_errors(tmp_path, body.encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["Component", "Subscription", "Resiliency", "HTTPEndpoint", "Configuration"]),
    api=st.sampled_from(["dapr.io/v1alpha1", "dapr.io/v2alpha1"]),
    spec=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["type", "metadata", "name", "value", "secretKeyRef", "envRef", "policies", "targets", "timeouts",
                 "retries", "circuitBreakers", "apps", "route", "routes", "rules", "pubsubname", "topic", "baseUrl",
                 "headers", "accessControl", "nameResolution", "features", "component", "configuration", "x"]
            ),
            inner,
            max_size=5,
        ),
        max_leaves=20,
    ),
)
def test_structured_garbage_only_raises_config_error(tmp_path: Path, kind: str, api: str, spec: object) -> None:
    import orjson

    doc = {"apiVersion": api, "kind": kind, "metadata": {"name": "n"}, "spec": spec}
    _load_only_config_errors(tmp_path, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def test_configuration_pipelines(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n"
                    "  httpPipeline: {handlers: [{name: limit, type: middleware.http.ratelimit}]}\n")
    cfg = load_configuration(str(path))
    assert [(h["name"], h["type"]) for h in cfg.pipeline("httpPipeline")] == [("limit", "middleware.http.ratelimit")]
    assert cfg.pipeline("appHttpPipeline") == []
    for spec, field in (("httpPipeline: {handlers: [{name: x, type: state.redis}]}", "spec.httpPipeline.handlers[0].type"),
                        ("appHttpPipeline: {handlers: [{type: middleware.http.ratelimit}]}",
                         "spec.appHttpPipeline.handlers[0].name"),
                        ("httpPipeline: {handlers: limit}", "spec.httpPipeline.handlers")):
        path.write_text(f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: c}}\nspec:\n  {spec}\n")
        with pytest.raises(ConfigError) as info:
            load_configuration(str(path))
        assert info.value.field == field
