"""Service-invocation access control (Configuration ``spec.accessControl``), checked by the callee.

Follows Dapr's ``pkg/acl`` and the "access control lists for service invocation"
docs:

* No accessControl section, or one with no defaultAction, trustDomain or
  policies: everything is allowed.
* Global ``defaultAction`` applies to callers without a policy. When it is empty
  it is "deny" if any app policy exists (Dapr's "more secure" fallback) and
  "allow" otherwise.
* A policy for the caller's app id replaces the default with its own
  ``defaultAction`` when set. A policy whose ``namespace``/``trustDomain`` is set
  applies only when it equals the namespace/trust domain given to ``from_spec``
  (Pillion has no mTLS identities, so callers are assumed to share ours); with
  several applicable policies for one app id the last one wins, like Dapr's map.
* Operations: ``*`` matches one path segment and ``**`` any number (including
  none). The most specific matching operation wins (most leading literal
  segments, then most literal segments, then fewest ``**``). Its verb table is
  consulted for the verb, then for ``*``; when neither is listed the policy's
  default applies, as in Dapr, so a more specific operation shadows a broader one.
* Paths are compared like daprd compares HTTP operations: query and fragment
  dropped, percent-decoded (malformed escapes are denied), lower-cased, duplicate
  slashes, trailing slashes and dot segments removed, so "/a/../admin" cannot
  sneak past a rule for "/admin".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class _Operation:
    pattern: re.Pattern[str]
    verbs: dict[str, bool]


@dataclass(frozen=True, slots=True)
class _Policy:
    default: bool
    exact: dict[str, _Operation]
    patterns: tuple[_Operation, ...]


class AccessControl:
    """Compiled ACL; build once per Configuration with ``from_spec``, then call ``allowed``."""

    __slots__ = ("_default", "_policies")

    def __init__(self, default: bool, policies: dict[str, _Policy]):
        self._default = default
        self._policies = policies

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any] | None, *, trust_domain: str = "public", namespace: str = "default"
    ) -> AccessControl:
        """Compile ``Configuration.access_control``; ValueError on an action other than allow/deny."""
        ac = _lower_keys(spec)
        policies_spec = ac.get("policies") or []
        global_action = ac.get("defaultaction")
        if not global_action and not ac.get("trustdomain") and not policies_spec:
            return cls(True, {})
        if global_action:
            default = _is_allow(global_action)
        else:
            default = not policies_spec
        policies: dict[str, _Policy] = {}
        for raw in policies_spec:
            p = _lower_keys(raw)
            app_id = p.get("appid")
            if not app_id:
                raise ValueError("access control policy without appId")
            if p.get("namespace") and p["namespace"] != namespace:
                continue
            if p.get("trustdomain") and p["trustdomain"] != trust_domain:
                continue
            policies[app_id] = _compile_policy(p, default)
        return cls(default, policies)

    def allowed(self, caller_app_id: str, http_verb: str, operation_path: str) -> bool:
        """Whether ``caller_app_id`` may call ``http_verb operation_path`` on this app."""
        policy = self._policies.get(caller_app_id) if caller_app_id else None
        if policy is None:
            return self._default
        if not policy.exact and not policy.patterns:
            return policy.default
        path = _normalize(operation_path)
        if path is None:
            return False
        op = policy.exact.get(path)
        if op is None:
            for candidate in policy.patterns:
                if candidate.pattern.fullmatch(path):
                    op = candidate
                    break
            else:
                return policy.default
        verb = op.verbs.get(http_verb.upper())
        if verb is None:
            verb = op.verbs.get("*")
        return policy.default if verb is None else verb


def _lower_keys(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {k.lower(): v for k, v in value.items() if isinstance(k, str)}


def _is_allow(action: Any) -> bool:
    text = str(action).lower()
    if text not in ("allow", "deny"):
        raise ValueError(f"access control action must be allow or deny, not {action!r}")
    return text == "allow"


def _compile_policy(p: dict[str, Any], global_default: bool) -> _Policy:
    default = _is_allow(p["defaultaction"]) if p.get("defaultaction") else global_default
    by_name: dict[str, tuple[tuple[str, ...], dict[str, bool]]] = {}
    for raw in p.get("operations") or []:
        op = _lower_keys(raw)
        name = op.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("access control operation without name")
        segments = _segments(name)
        if segments is None:
            raise ValueError(f"access control operation name {name!r} has a malformed %-escape")
        allow = _is_allow(op.get("action"))
        verbs = {str(v).upper(): allow for v in op.get("httpverb") or []}
        by_name["/".join(segments)] = (segments, verbs)
    exact: dict[str, _Operation] = {}
    ranked: list[tuple[tuple[int, int, int], _Operation]] = []
    for segments, verbs in by_name.values():
        compiled = _Operation(_pattern(segments), verbs)
        if "*" not in segments and "**" not in segments:
            exact["".join("/" + s for s in segments)] = compiled
        else:
            ranked.append((_specificity(segments), compiled))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return _Policy(default, exact, tuple(op for _, op in ranked))


def _specificity(segments: tuple[str, ...]) -> tuple[int, int, int]:
    prefix = 0
    for s in segments:
        if s in ("*", "**"):
            break
        prefix += 1
    literals = sum(1 for s in segments if s not in ("*", "**"))
    return prefix, literals, -segments.count("**")


def _pattern(segments: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for s in segments:
        if s == "**":
            parts.append("(?:/[^/]+)*")
        elif s == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + re.escape(s))
    return re.compile("".join(parts))


def _segments(path: str) -> tuple[str, ...] | None:
    """Decoded, lower-cased, dot-resolved segments; None for a malformed escape."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        if _BAD_ESCAPE.search(path):
            return None
        path = unquote(path)
    path = path.lower()
    out: list[str] = []
    for s in path.split("/"):
        if s == "..":
            if out:
                out.pop()
        elif s and s != ".":
            out.append(s)
    return tuple(out)


def _normalize(path: str) -> str | None:
    segments = _segments(path)
    if segments is None:
        return None
    return "".join("/" + s for s in segments)
