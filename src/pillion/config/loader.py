"""Read resource folders and Configuration files into validated manifests.

Owns YAML parsing, kind/apiVersion dispatch, scopes, namespaces and duplicate
names. Every problem becomes a ``ConfigError`` naming file, document index and
field, so a typo stops start-up with a pointer instead of a traceback. Field names
match case-insensitively (daprd converts YAML to JSON and decodes with Go's
encoding/json); error messages use the canonical spelling.
"""

from __future__ import annotations

import os
import re
from typing import Any

import orjson
import yaml

from ..errors import ConfigError
from .durations import parse_duration, parse_quantity
from .files import read_text
from .manifests import (
    Component,
    Configuration,
    HTTPEndpoint,
    MetadataItem,
    Resiliency,
    Resources,
    SecretKeyRef,
    Source,
    Subscription,
)

__all__ = ["load_configuration", "load_resources", "parse_duration", "parse_trip"]

V1 = "dapr.io/v1alpha1"
V2 = "dapr.io/v2alpha1"
_API_VERSIONS = {
    "Component": (V1,),
    "Subscription": (V1, V2),
    "Resiliency": (V1,),
    "HTTPEndpoint": (V1,),
}
_KINDS_EXPECTED = "one of Component, Subscription, Resiliency, HTTPEndpoint (Configuration is ignored here)"

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YAMLLoader(_Loader):  # type: ignore[misc, valid-type]
    """Safe loader without timestamp resolution: Go's YAML keeps dates as strings."""


_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


class _Doc:
    """The file and document index that every error from one document carries."""

    __slots__ = ("file", "index")

    def __init__(self, file: str, index: int | None):
        self.file = file
        self.index = index

    def error(self, field: str, expected: str) -> ConfigError:
        return ConfigError(self.file, self.index, field, expected)

    def source(self) -> Source:
        return Source(self.file, self.index if self.index is not None else 0)


# ---- YAML reading -----------------------------------------------------------


def _read_documents(path: str) -> list[tuple[int, Any]]:
    """(index, data) for every non-empty document of ``path``; empty ones keep their index."""
    text = read_text(path, "(yaml)")
    docs: list[tuple[int, Any]] = []
    index = 0
    try:
        for data in yaml.load_all(text, Loader=_YAMLLoader):
            if data is not None:
                docs.append((index, data))
            index += 1
    except yaml.YAMLError as exc:
        raise ConfigError(path, index, "(yaml)", f"valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, RecursionError, OverflowError) as exc:
        raise ConfigError(path, index, "(yaml)", f"valid YAML: {type(exc).__name__}: {exc}") from None
    return docs


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        text = ", ".join(parts) or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            text += f" at line {mark.line + 1}, column {mark.column + 1}"
        return text
    return " ".join(str(exc).split())


# ---- field helpers ----------------------------------------------------------


def _fields(value: Any) -> dict[str, Any]:
    """Keys folded to lower case, later duplicates winning, like Go's encoding/json."""
    return {k.lower(): v for k, v in value.items() if isinstance(k, str)}


def _mapping(doc: _Doc, value: Any, field: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise doc.error(field, "a mapping")
    return _fields(value)


def _list(doc: _Doc, value: Any, field: str, expected: str = "a list") -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(field, expected)
    return value


def _string(
    doc: _Doc,
    m: dict[str, Any],
    key: str,
    field: str,
    *,
    required: bool = False,
    expected: str = "a non-empty string",
) -> str | None:
    value = m.get(key.lower())
    if value is None or value == "":
        if required:
            raise doc.error(field, expected)
        return None
    if not isinstance(value, str):
        raise doc.error(field, expected)
    return value


def _bool(doc: _Doc, m: dict[str, Any], key: str, field: str, default: bool) -> bool:
    value = m.get(key.lower())
    if value is None:
        return default
    if not isinstance(value, bool):
        raise doc.error(field, "true or false")
    return value


def _int(doc: _Doc, m: dict[str, Any], key: str, field: str, default: int, minimum: int) -> int:
    value = m.get(key.lower())
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise doc.error(field, f"an integer >= {minimum}")
    return value


def _duration(doc: _Doc, m: dict[str, Any], key: str, field: str, default: str) -> float:
    value = m.get(key.lower())
    text = default if value is None or value == "" else _scalar_text(value)
    try:
        seconds = parse_duration(text) if text is not None else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise doc.error(field, "a non-negative Go duration like 5s, 300ms or 1m30s")
    return seconds


def _float_text(x: float) -> str:
    """Go's encoding/json spelling, since daprd reads YAML numbers through JSON."""
    if x != x or x in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(x)]
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    if 1e-6 <= abs(x) < 1e21:
        return _positional(repr(x))
    return repr(x)


def _positional(text: str) -> str:
    """``repr`` of a float without an exponent: "1.5e-05" -> "0.000015"."""
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _scalar_text(value: Any) -> str | None:
    """A YAML value as the text a Dapr component would read, or None when it has none."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, (list, dict)):
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, ValueError):
            return None
    return None


def _string_map(doc: _Doc, value: Any, field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        raise doc.error(field, "a mapping of names to strings")
    for k, v in value.items():
        text = "" if v is None else _scalar_text(v)
        if not isinstance(k, str) or text is None:
            raise doc.error(f"{field}.{k}", "a string, number or boolean")
        out[k] = text
    return out


def _scopes(doc: _Doc, top: dict[str, Any]) -> tuple[str, ...]:
    items = _list(doc, top.get("scopes"), "scopes", "a list of app ids")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise doc.error(f"scopes[{i}]", "a non-empty app id string")
    return tuple(items)


def _metadata_items(doc: _Doc, value: Any, field: str) -> tuple[MetadataItem, ...]:
    items: list[MetadataItem] = []
    for i, raw in enumerate(_list(doc, value, field, "a list of {name, value} items")):
        where = f"{field}[{i}]"
        m = _mapping(doc, raw, where, required=True)
        name = _string(doc, m, "name", f"{where}.name", required=True)
        assert name is not None
        value_raw = m.get("value")
        has_value = value_raw is not None and value_raw != ""
        ref = None
        if m.get("secretkeyref") is not None:
            r = _mapping(doc, m["secretkeyref"], f"{where}.secretKeyRef", required=True)
            ref_name = _string(doc, r, "name", f"{where}.secretKeyRef.name", required=True)
            ref_key = _string(doc, r, "key", f"{where}.secretKeyRef.key")
            assert ref_name is not None
            ref = SecretKeyRef(ref_name, ref_key or ref_name)
        env_ref = _string(doc, m, "envRef", f"{where}.envRef")
        if sum((has_value, ref is not None, env_ref is not None)) > 1:
            raise doc.error(where, "exactly one of value, secretKeyRef, envRef")
        text: str | None = None
        if ref is None and env_ref is None:
            text = "" if value_raw is None else _scalar_text(value_raw)
            if text is None:
                raise doc.error(f"{where}.value", "a string, number, boolean, list or mapping")
        items.append(MetadataItem(name, text, ref, env_ref))
    return tuple(items)


# ---- resources --------------------------------------------------------------


def load_resources(paths: list[str], *, app_id: str | None, namespace: str | None = None) -> Resources:
    """Every Component, Subscription, Resiliency and HTTPEndpoint for ``app_id``.

    Reads *.yaml/*.yml (sorted, not recursive, like daprd) in each folder. Manifests
    scoped to other apps, or whose namespace differs from ``namespace`` when that is
    set (daprd's NAMESPACE rule), are skipped after validation. ``app_id=None``
    (the CLI's tools) keeps manifests of every scope.
    """
    components: list[Component] = []
    subscriptions: list[Subscription] = []
    resiliencies: list[Resiliency] = []
    endpoints: list[HTTPEndpoint] = []
    seen: dict[str, Source] = {}
    for folder in paths:
        if not os.path.isdir(folder):
            raise ConfigError(folder, None, "--resources-path", "an existing directory")
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if not entry.endswith((".yaml", ".yml")) or os.path.isdir(path):
                continue
            for index, data in _read_documents(path):
                doc = _Doc(path, index)
                parsed = _parse_resource(doc, data)
                if parsed is None:
                    continue
                manifest, scopes, ns = parsed
                if scopes and app_id is not None and app_id not in scopes:
                    continue
                if namespace and ns and ns != namespace:
                    continue
                if isinstance(manifest, Component):
                    first = seen.get(manifest.name)
                    if first is not None:
                        raise doc.error(
                            "metadata.name",
                            f"a unique component name; '{manifest.name}' is also defined in "
                            f"{first.file} (document {first.document})",
                        )
                    seen[manifest.name] = manifest.source
                    components.append(manifest)
                elif isinstance(manifest, Subscription):
                    subscriptions.append(manifest)
                elif isinstance(manifest, Resiliency):
                    resiliencies.append(manifest)
                else:
                    endpoints.append(manifest)
    return Resources(tuple(components), tuple(subscriptions), tuple(resiliencies), tuple(endpoints))


def _parse_resource(doc: _Doc, data: Any) -> tuple[Any, tuple[str, ...], str | None] | None:
    """(manifest, scopes, namespace), or None for a Configuration, which belongs to --config."""
    if not isinstance(data, dict):
        raise doc.error("(document)", "a mapping with apiVersion, kind, metadata and spec")
    top = _fields(data)
    kind = top.get("kind")
    if kind == "Configuration":
        return None
    if not isinstance(kind, str) or kind not in _API_VERSIONS:
        raise doc.error("kind", _KINDS_EXPECTED)
    api_version = top.get("apiversion")
    if api_version not in _API_VERSIONS[kind]:
        raise doc.error("apiVersion", " or ".join(_API_VERSIONS[kind]))
    meta = _mapping(doc, top.get("metadata"), "metadata", required=True)
    name = _string(doc, meta, "name", "metadata.name", required=True)
    ns = _string(doc, meta, "namespace", "metadata.namespace")
    assert name is not None
    scopes = _scopes(doc, top)
    spec = _mapping(doc, top.get("spec"), "spec", required=True)
    if kind == "Component":
        manifest: Any = _component(doc, top, spec, name, ns, scopes)
    elif kind == "Subscription":
        manifest = _subscription(doc, spec, name, scopes, api_version == V2)
    elif kind == "Resiliency":
        manifest = _resiliency(doc, spec, name, scopes)
    else:
        manifest = _http_endpoint(doc, spec, name)
    return manifest, scopes, ns


_TYPE = re.compile(r"^[a-z0-9]+(\.[A-Za-z0-9_\-]+)+$")


def _component(
    doc: _Doc, top: dict[str, Any], spec: dict[str, Any], name: str, ns: str | None, scopes: tuple[str, ...]
) -> Component:
    ctype = _string(doc, spec, "type", "spec.type", required=True, expected="a string like state.lmdb")
    assert ctype is not None
    if not _TYPE.match(ctype):
        raise doc.error("spec.type", "a string like state.lmdb")
    version = _string(doc, spec, "version", "spec.version") or ""
    _duration(doc, spec, "initTimeout", "spec.initTimeout", "5s")
    raw_timeout = spec.get("inittimeout")
    init_timeout = "5s" if raw_timeout is None or raw_timeout == "" else _scalar_text(raw_timeout)
    auth = _mapping(doc, top.get("auth"), "auth")
    return Component(
        name=name,
        namespace=ns,
        type=ctype,
        version=version,
        metadata=_metadata_items(doc, spec.get("metadata"), "spec.metadata"),
        scopes=scopes,
        init_timeout=init_timeout or "5s",
        ignore_errors=_bool(doc, spec, "ignoreErrors", "spec.ignoreErrors", False),
        auth_secret_store=_string(doc, auth, "secretStore", "auth.secretStore"),
        source=doc.source(),
    )


def _subscription(doc: _Doc, spec: dict[str, Any], name: str, scopes: tuple[str, ...], v2: bool) -> Subscription:
    pubsub = _string(doc, spec, "pubsubname", "spec.pubsubname", required=True)
    topic = _string(doc, spec, "topic", "spec.topic", required=True)
    assert pubsub is not None and topic is not None
    rules: list[tuple[str, str]] = []
    if v2:
        routes = _mapping(doc, spec.get("routes"), "spec.routes")
        for i, raw in enumerate(_list(doc, routes.get("rules"), "spec.routes.rules", "a list of {match, path}")):
            rule = _mapping(doc, raw, f"spec.routes.rules[{i}]", required=True)
            match = rule.get("match")
            if match is not None and not isinstance(match, str):
                raise doc.error(f"spec.routes.rules[{i}].match", "a CEL expression string")
            if match and match.strip():
                from ..runtime.cel import CelError, compile as compile_cel

                try:
                    compile_cel(match)
                except CelError as exc:
                    raise doc.error(f"spec.routes.rules[{i}].match", f"a valid CEL expression: {exc}") from None
            path = _string(doc, rule, "path", f"spec.routes.rules[{i}].path", required=True)
            assert path is not None
            rules.append((match or "", path))
        default = _string(doc, routes, "default", "spec.routes.default")
        if not rules and default is None:
            hint = " (spec.route is v1alpha1; use spec.routes.default)" if "route" in spec else ""
            raise doc.error("spec.routes", f"at least one rule or a default route{hint}")
    else:
        default = _string(doc, spec, "route", "spec.route", required=True)
    bulk = None
    if spec.get("bulksubscribe") is not None:
        b = _mapping(doc, spec["bulksubscribe"], "spec.bulkSubscribe")
        bulk = {
            "enabled": _bool(doc, b, "enabled", "spec.bulkSubscribe.enabled", False),
            "maxMessagesCount": _int(doc, b, "maxMessagesCount", "spec.bulkSubscribe.maxMessagesCount", 100, 1),
            "maxAwaitDurationMs": _int(
                doc, b, "maxAwaitDurationMs", "spec.bulkSubscribe.maxAwaitDurationMs", 1000, 0
            ),
        }
    return Subscription(
        name=name,
        pubsubname=pubsub,
        topic=topic,
        routes=tuple(rules),
        default_route=default,
        metadata=_string_map(doc, spec.get("metadata"), "spec.metadata"),
        dead_letter_topic=_string(doc, spec, "deadLetterTopic", "spec.deadLetterTopic"),
        bulk_subscribe=bulk,
        scopes=scopes,
        source=doc.source(),
    )


def _http_endpoint(doc: _Doc, spec: dict[str, Any], name: str) -> HTTPEndpoint:
    expected = "an http:// or https:// URL"
    base_url = _string(doc, spec, "baseUrl", "spec.baseUrl", required=True, expected=expected)
    assert base_url is not None
    if not base_url.lower().startswith(("http://", "https://")) or len(base_url.split("://", 1)[1]) == 0:
        raise doc.error("spec.baseUrl", expected)
    headers = _metadata_items(doc, spec.get("headers"), "spec.headers")
    return HTTPEndpoint(name=name, base_url=base_url, headers=headers, source=doc.source())


# ---- resiliency -------------------------------------------------------------

_TRIP_TERM = re.compile(
    r"^\s*(consecutiveFailures|consecutiveSuccesses|totalFailures|totalSuccesses|requests)"
    r"\s*(>=|<=|==|!=|>|<)\s*([0-9]+)\s*$"
)


def parse_trip(text: str) -> tuple[tuple[tuple[str, str, int], ...], ...]:
    """A circuit-breaker ``trip`` as OR-groups of AND-ed (counter, op, number) terms.

    Dapr evaluates trip as CEL; Pillion accepts the documented subset: comparisons of
    gobreaker's counters joined by && (binds tighter) and ||. ValueError otherwise.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty trip expression")
    groups = []
    for alternative in text.split("||"):
        terms = []
        for term in alternative.split("&&"):
            m = _TRIP_TERM.match(term)
            if m is None:
                raise ValueError(f"invalid trip term {term.strip()!r}")
            terms.append((m.group(1), m.group(2), int(m.group(3))))
        groups.append(tuple(terms))
    return tuple(groups)


_STATUS_RANGES = {"httpStatusCodes": (100, 599), "gRPCStatusCodes": (0, 16)}


def _status_codes(doc: _Doc, m: dict[str, Any], key: str, field: str) -> str | None:
    text = _string(doc, m, key, field)
    if text is None:
        return None
    low, high = _STATUS_RANGES[key]
    expected = f"comma-separated codes or ranges from {low} to {high}, like \"500-599,429\""
    for part in text.split(","):
        bounds = part.strip().split("-")
        if len(bounds) > 2 or not all(b.strip().isdigit() and b.strip().isascii() for b in bounds):
            raise doc.error(field, expected)
        nums = [int(b) for b in bounds]
        if not all(low <= n <= high for n in nums) or nums[0] > nums[-1]:
            raise doc.error(field, expected)
    return text


def _resiliency(doc: _Doc, spec: dict[str, Any], name: str, scopes: tuple[str, ...]) -> Resiliency:
    policies = _mapping(doc, spec.get("policies"), "spec.policies")
    timeouts: dict[str, float] = {}
    for key, value in _named(doc, policies.get("timeouts"), "spec.policies.timeouts"):
        timeouts[key] = _duration(doc, {"v": value}, "v", f"spec.policies.timeouts.{key}", "")
    retries: dict[str, dict[str, Any]] = {}
    for key, value in _named(doc, policies.get("retries"), "spec.policies.retries"):
        where = f"spec.policies.retries.{key}"
        r = _mapping(doc, value, where, required=True)
        policy = (_string(doc, r, "policy", f"{where}.policy") or "constant").lower()
        if policy not in ("constant", "exponential"):
            raise doc.error(f"{where}.policy", "constant or exponential")
        matching = _mapping(doc, r.get("matching"), f"{where}.matching")
        retries[key] = {
            "policy": policy,
            "duration": _duration(doc, r, "duration", f"{where}.duration", "5s"),
            "maxInterval": _duration(doc, r, "maxInterval", f"{where}.maxInterval", "60s"),
            "maxRetries": _int(doc, r, "maxRetries", f"{where}.maxRetries", -1, -1),
            "matching": {
                "httpStatusCodes": _status_codes(
                    doc, matching, "httpStatusCodes", f"{where}.matching.httpStatusCodes"
                ),
                "gRPCStatusCodes": _status_codes(
                    doc, matching, "gRPCStatusCodes", f"{where}.matching.gRPCStatusCodes"
                ),
            },
        }
    breakers: dict[str, dict[str, Any]] = {}
    for key, value in _named(doc, policies.get("circuitbreakers"), "spec.policies.circuitBreakers"):
        where = f"spec.policies.circuitBreakers.{key}"
        c = _mapping(doc, value, where, required=True)
        trip = _string(doc, c, "trip", f"{where}.trip") or "consecutiveFailures > 5"
        try:
            parse_trip(trip)
        except ValueError:
            raise doc.error(
                f"{where}.trip",
                "comparisons like \"consecutiveFailures > 5\" of consecutiveFailures, consecutiveSuccesses, "
                "totalFailures, totalSuccesses or requests, joined by && or ||",
            ) from None
        breakers[key] = {
            "maxRequests": _int(doc, c, "maxRequests", f"{where}.maxRequests", 1, 0),
            "interval": _duration(doc, c, "interval", f"{where}.interval", "0s"),
            "timeout": _duration(doc, c, "timeout", f"{where}.timeout", "60s"),
            "trip": trip,
        }
    defined = {"timeout": timeouts, "retry": retries, "circuitBreaker": breakers}
    targets = _mapping(doc, spec.get("targets"), "spec.targets")
    apps = {
        key: _target(doc, value, f"spec.targets.apps.{key}", defined, actor=False)
        for key, value in _named(doc, targets.get("apps"), "spec.targets.apps")
    }
    actors = {
        key: _target(doc, value, f"spec.targets.actors.{key}", defined, actor=True)
        for key, value in _named(doc, targets.get("actors"), "spec.targets.actors")
    }
    components: dict[str, dict[str, Any]] = {}
    for key, value in _named(doc, targets.get("components"), "spec.targets.components"):
        where = f"spec.targets.components.{key}"
        c = _mapping(doc, value, where, required=True)
        components[key] = {
            direction: _target(doc, c[direction.lower()], f"{where}.{direction}", defined, actor=False)
            for direction in ("outbound", "inbound")
            if c.get(direction) is not None
        }
    return Resiliency(
        name=name,
        policies={"timeouts": timeouts, "retries": retries, "circuitBreakers": breakers},
        targets={"apps": apps, "actors": actors, "components": components},
        scopes=scopes,
        source=doc.source(),
    )


def _named(doc: _Doc, value: Any, field: str) -> list[tuple[str, Any]]:
    """Entries of a name -> definition mapping; names keep their case, they are identifiers."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise doc.error(field, "a mapping of names to definitions")
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise doc.error(field, "non-empty string names")
        out.append((k, v))
    return out


_POLICY_SECTIONS = {"timeout": "timeouts", "retry": "retries", "circuitBreaker": "circuitBreakers"}


def _target(doc: _Doc, value: Any, where: str, defined: dict[str, dict[str, Any]], *, actor: bool) -> dict[str, Any]:
    t = _mapping(doc, value, where, required=True)
    out: dict[str, Any] = {}
    for key, section in _POLICY_SECTIONS.items():
        ref = _string(doc, t, key, f"{where}.{key}")
        if ref is None:
            continue
        if ref not in defined[key]:
            raise doc.error(f"{where}.{key}", f"a policy name defined in spec.policies.{section}")
        out[key] = ref
    if "circuitbreakercachesize" in t:
        out["circuitBreakerCacheSize"] = _int(
            doc, t, "circuitBreakerCacheSize", f"{where}.circuitBreakerCacheSize", 100, 1
        )
    if actor:
        scope = (_string(doc, t, "circuitBreakerScope", f"{where}.circuitBreakerScope") or "id").lower()
        if scope not in ("type", "id", "both"):
            raise doc.error(f"{where}.circuitBreakerScope", "type, id or both")
        out["circuitBreakerScope"] = scope
    return out


# ---- configuration ----------------------------------------------------------


def load_configuration(path: str) -> Configuration:
    """The first ``kind: Configuration`` in ``path`` (other kinds there are ignored).

    Validates the sections Pillion acts on (accessControl, nameResolution, features,
    api) and stores them under their canonical keys; other spec keys are kept as
    written so files made for newer daprd versions still load.
    """
    if not os.path.isfile(path):
        raise ConfigError(path, None, "--config", "an existing file")
    for index, data in _read_documents(path):
        doc = _Doc(path, index)
        if not isinstance(data, dict):
            raise doc.error("(document)", "a mapping with apiVersion, kind, metadata and spec")
        top = _fields(data)
        if top.get("kind") != "Configuration":
            continue
        if top.get("apiversion") != V1:
            raise doc.error("apiVersion", V1)
        meta = _mapping(doc, top.get("metadata"), "metadata")
        name = _string(doc, meta, "name", "metadata.name") or ""
        spec = _configuration_spec(doc, top.get("spec"))
        return Configuration(name=name, spec=spec, source=doc.source())
    raise ConfigError(path, None, "kind", "a document with kind: Configuration")


_SECTIONS = {"accesscontrol": "accessControl", "nameresolution": "nameResolution", "features": "features", "api": "api",
             "mqtt": "mqtt", "httppipeline": "httpPipeline", "apphttppipeline": "appHttpPipeline"}


def _configuration_spec(doc: _Doc, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error("spec", "a mapping")
    validators = {
        "accessControl": _access_control,
        "nameResolution": _name_resolution,
        "features": _features,
        "api": _api,
        "mqtt": _mqtt,
        "httpPipeline": lambda doc, raw: _pipeline(doc, raw, "spec.httpPipeline"),
        "appHttpPipeline": lambda doc, raw: _pipeline(doc, raw, "spec.appHttpPipeline"),
    }
    spec: dict[str, Any] = {}
    for key, raw in value.items():
        canonical = _SECTIONS.get(key.lower()) if isinstance(key, str) else None
        if canonical is None:
            spec[key] = raw
        elif raw is not None:
            spec[canonical] = validators[canonical](doc, raw)
    return spec


def _pipeline(doc: _Doc, value: Any, base: str) -> list[dict[str, str]]:
    """``{handlers: [{name, type}]}`` as the handler list, in order; each must name a middleware component."""
    m = _mapping(doc, value, base, required=True)
    handlers = _list(doc, m.get("handlers"), f"{base}.handlers", "a list of {name, type} entries")
    out = []
    for index, entry in enumerate(handlers):
        where = f"{base}.handlers[{index}]"
        h = _mapping(doc, entry, where, required=True)
        name = _string(doc, h, "name", f"{where}.name", required=True, expected="a middleware component's name")
        kind = _string(doc, h, "type", f"{where}.type", required=True, expected="a middleware type, like "
                       "middleware.http.ratelimit")
        if not kind.startswith("middleware.http."):
            raise doc.error(f"{where}.type", f"a middleware.http.* type (got {kind!r})")
        out.append({"name": name, "type": kind, "where": where})
    return out


# spec.mqtt (Pillion's own section: the embedded broker) -> BrokerOptions field names.
_MQTT_STRINGS = {"host": "host", "tlshost": "tls_host"}
_MQTT_FILES = {"certfile": "cert_file", "keyfile": "key_file", "cafile": "ca_file", "passwordfile": "password_file",
               "aclfile": "acl_file"}
_MQTT_BOOLS = {"requirecertificate": "require_certificate", "allowanonymous": "allow_anonymous",
               "persistence": "persistence"}
_MQTT_INTS = {"port": ("port", 0), "tlsport": ("tls_port", 0), "maxconnections": ("max_connections", 0),
              "maxqueuedmessages": ("max_queued", 1), "receivemaximum": ("receive_maximum", 1)}


def _mqtt(doc: _Doc, value: Any) -> dict[str, Any]:
    """``spec.mqtt``: listeners, TLS and auth files (relative to the config file), limits."""
    base = "spec.mqtt"
    m = _mapping(doc, value, base, required=True)
    out: dict[str, Any] = {}
    here = os.path.dirname(os.path.abspath(doc.file))
    for key, name in _MQTT_STRINGS.items():
        if key in m:
            out[name] = _string(doc, m, key, f"{base}.{key}", required=True, expected="a host name or address")
    for key, name in _MQTT_FILES.items():
        if key in m:
            path = _string(doc, m, key, f"{base}.{key}", required=True, expected="a file path")
            out[name] = os.path.join(here, os.path.expanduser(path))
    for key, name in _MQTT_BOOLS.items():
        if key in m:
            out[name] = _bool(doc, m, key, f"{base}.{key}", False)
    for key, (name, minimum) in _MQTT_INTS.items():
        if key in m:
            out[name] = _int(doc, m, key, f"{base}.{key}", 0, minimum)
            if name.endswith("port") and out[name] > 65535:
                raise doc.error(f"{base}.{key}", "a port in 0..65535")
    if "maxpacketsize" in m:
        raw = m["maxpacketsize"]
        try:
            out["max_packet_size"] = raw if isinstance(raw, int) and not isinstance(raw, bool) else parse_quantity(raw)
        except ValueError:
            out["max_packet_size"] = 0
        if not 0 < out["max_packet_size"] <= 268435455:
            raise doc.error(f"{base}.maxPacketSize", "a size from 1 to 256Mi, like 1Mi or 65536")
    if "sysinterval" in m:
        out["sys_interval"] = _duration(doc, m, "sysinterval", f"{base}.sysInterval", "10s")
    unknown = sorted(set(m) - set(_MQTT_STRINGS) - set(_MQTT_FILES) - set(_MQTT_BOOLS) - set(_MQTT_INTS)
                     - {"maxpacketsize", "sysinterval"})
    if unknown:
        raise doc.error(f"{base}.{unknown[0]}", "a known setting (see the README's broker section)")
    return out


def _action(doc: _Doc, m: dict[str, Any], key: str, field: str, *, required: bool = False) -> str | None:
    text = _string(doc, m, key, field, required=required, expected="allow or deny")
    if text is None:
        return None
    if text.lower() not in ("allow", "deny"):
        raise doc.error(field, "allow or deny")
    return text.lower()


def _access_control(doc: _Doc, value: Any) -> dict[str, Any]:
    base = "spec.accessControl"
    ac = _mapping(doc, value, base, required=True)
    policies = []
    for i, raw in enumerate(_list(doc, ac.get("policies"), f"{base}.policies", "a list of app policies")):
        where = f"{base}.policies[{i}]"
        p = _mapping(doc, raw, where, required=True)
        operations = []
        for j, raw_op in enumerate(_list(doc, p.get("operations"), f"{where}.operations", "a list of operations")):
            at = f"{where}.operations[{j}]"
            op = _mapping(doc, raw_op, at, required=True)
            verbs = _list(doc, op.get("httpverb"), f"{at}.httpVerb", "a list of HTTP verbs or *")
            for k, verb in enumerate(verbs):
                if not isinstance(verb, str) or not (verb == "*" or (verb.isascii() and verb.isalpha())):
                    raise doc.error(f"{at}.httpVerb[{k}]", "an HTTP verb like GET, or *")
            operations.append(
                {
                    "name": _string(doc, op, "name", f"{at}.name", required=True, expected="a path like /orders/*"),
                    "httpVerb": [v.upper() for v in verbs],
                    "action": _action(doc, op, "action", f"{at}.action", required=True),
                }
            )
        policies.append(
            {
                "appId": _string(doc, p, "appId", f"{where}.appId", required=True),
                "defaultAction": _action(doc, p, "defaultAction", f"{where}.defaultAction"),
                "trustDomain": _string(doc, p, "trustDomain", f"{where}.trustDomain"),
                "namespace": _string(doc, p, "namespace", f"{where}.namespace"),
                "operations": operations,
            }
        )
    return {
        "defaultAction": _action(doc, ac, "defaultAction", f"{base}.defaultAction"),
        "trustDomain": _string(doc, ac, "trustDomain", f"{base}.trustDomain"),
        "policies": policies,
    }


def _name_resolution(doc: _Doc, value: Any) -> dict[str, Any]:
    base = "spec.nameResolution"
    nr = _mapping(doc, value, base, required=True)
    component = _string(doc, nr, "component", f"{base}.component")
    config = nr.get("configuration")
    if component == "static":
        config = _static_apps(doc, config, f"{base}.configuration")
    return {
        "component": component,
        "version": _string(doc, nr, "version", f"{base}.version"),
        "configuration": config,
    }


def _static_apps(doc: _Doc, value: Any, base: str) -> dict[str, Any]:
    expected = "{apps: {<appId>: [\"host:port\", ...]}}"
    c = _mapping(doc, value, base, required=True)
    if not isinstance(c.get("apps"), dict):
        raise doc.error(f"{base}.apps", expected)
    apps: dict[str, list[str]] = {}
    for app, addrs in _named(doc, c["apps"], f"{base}.apps"):
        if not isinstance(addrs, list) or not addrs:
            raise doc.error(f"{base}.apps.{app}", "a non-empty list of \"host:port\" strings")
        for i, addr in enumerate(addrs):
            if not _host_port(addr):
                raise doc.error(f"{base}.apps.{app}[{i}]", "host:port with a port from 1 to 65535 ([v6]:port)")
        apps[app] = list(addrs)
    return {"apps": apps}


def _host_port(addr: Any) -> bool:
    if not isinstance(addr, str):
        return False
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return False
    if host.startswith("["):
        return host.endswith("]") and len(host) > 2
    return ":" not in host and " " not in host and "/" not in host


def _features(doc: _Doc, value: Any) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(_list(doc, value, "spec.features", "a list of {name, enabled}")):
        f = _mapping(doc, raw, f"spec.features[{i}]", required=True)
        out.append(
            {
                "name": _string(doc, f, "name", f"spec.features[{i}].name", required=True),
                "enabled": _bool(doc, f, "enabled", f"spec.features[{i}].enabled", False),
            }
        )
    return out


def _api(doc: _Doc, value: Any) -> dict[str, list[dict[str, str | None]]]:
    api = _mapping(doc, value, "spec.api", required=True)
    out: dict[str, list[dict[str, str | None]]] = {}
    for key in ("allowed", "denied"):
        rules = []
        for i, raw in enumerate(_list(doc, api.get(key), f"spec.api.{key}", "a list of {name, version, protocol}")):
            where = f"spec.api.{key}[{i}]"
            r = _mapping(doc, raw, where, required=True)
            protocol = _string(doc, r, "protocol", f"{where}.protocol")
            if protocol is not None and protocol.lower() not in ("http", "grpc"):
                raise doc.error(f"{where}.protocol", "http or grpc")
            rules.append(
                {
                    "name": _string(doc, r, "name", f"{where}.name", required=True),
                    "version": _string(doc, r, "version", f"{where}.version"),
                    "protocol": protocol.lower() if protocol else None,
                }
            )
        if api.get(key) is not None:
            out[key] = rules
    return out
