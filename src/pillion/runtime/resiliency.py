"""Dapr's resiliency policies as plain objects: timeouts, retries and circuit breakers.

Sans-IO apart from ``Policy.run``: the retry schedule and the breaker's state machine
are pure functions of what happened and of a clock the caller passes, so tests drive
them with a fake clock. ``Policy.run`` composes them the way daprd does
(``pkg/resiliency/policy.go``): retries wrap each attempt; an attempt asks the breaker
first, then runs under the timeout; the breaker counts the attempt's outcome.

Semantics taken from Dapr's documentation and defaults:

- retry ``constant``: ``duration`` between attempts (default 5s); ``exponential``:
  starts at 500ms, grows by 1.5 with +-50% jitter, capped at ``maxInterval`` (60s);
  ``maxRetries`` -1 retries forever, 0 never. ``matching.httpStatusCodes`` limits the
  retried statuses; without it every failure is retried.
- circuit breaker (gobreaker's model): closed -> open when ``trip`` holds after a
  failure; open rejects at once for ``timeout``, then half-open lets ``maxRequests``
  probes through: that many successes close it, one failure opens it again.
  ``interval`` > 0 clears the closed state's counts every ``interval``.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

EXPONENTIAL_INITIAL = 0.5
EXPONENTIAL_MULTIPLIER = 1.5
EXPONENTIAL_JITTER = 0.5


class BreakerOpen(Exception):
    """The circuit breaker rejects the call without trying it."""


class AttemptTimeout(Exception):
    """One attempt ran longer than the timeout policy allows."""


def parse_status_codes(text: str | None) -> frozenset[int] | None:
    """``"500-599,429"`` as a set; None when no codes are given (every failure matches)."""
    if not text:
        return None
    codes: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        codes.update(range(int(low), int(high or low) + 1))
    return frozenset(codes)


@dataclass(frozen=True)
class RetryPolicy:
    policy: str = "constant"  # or "exponential"
    duration: float = 5.0
    max_interval: float = 60.0
    max_retries: int = -1
    http_status_codes: frozenset[int] | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RetryPolicy:
        """From a normalised ``spec.policies.retries`` entry (``config/loader.py``)."""
        return cls(spec["policy"], spec["duration"], spec["maxInterval"], spec["maxRetries"],
                   parse_status_codes(spec["matching"]["httpStatusCodes"]))

    def retries(self, status: int | None) -> bool:
        """Whether a failure with this HTTP status (None: no answer at all) is worth another attempt."""
        return status is None or self.http_status_codes is None or status in self.http_status_codes

    def delay(self, retry: int, rng: random.Random | None = None) -> float | None:
        """Seconds before retry number ``retry`` (1-based), or None when no retry is left."""
        if self.max_retries >= 0 and retry > self.max_retries:
            return None
        if self.policy == "constant":
            return self.duration
        base = min(EXPONENTIAL_INITIAL * EXPONENTIAL_MULTIPLIER ** (retry - 1), self.max_interval)
        spread = EXPONENTIAL_JITTER * base
        return min((rng or random).uniform(base - spread, base + spread), self.max_interval)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class Counts:
    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0

    def value(self, name: str) -> int:
        return {"requests": self.requests, "totalSuccesses": self.total_successes,
                "totalFailures": self.total_failures, "consecutiveSuccesses": self.consecutive_successes,
                "consecutiveFailures": self.consecutive_failures}[name]


_COMPARE = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


class CircuitBreaker:
    """One breaker (per target, or per actor id): a state machine over ``now`` values."""

    def __init__(self, max_requests: int = 1, interval: float = 0.0, timeout: float = 60.0,
                 trip: str = "consecutiveFailures > 5"):
        self.max_requests = max(max_requests, 1)
        self.interval = interval
        from ..config.loader import parse_trip  # the YAML loader is imported only where resources exist

        self.timeout = timeout
        self._trip = parse_trip(trip)
        self.state = BreakerState.CLOSED
        self.counts = Counts()
        self._expiry = 0.0  # closed: when counts clear (0: never); open: when it turns half-open

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CircuitBreaker:
        return cls(spec["maxRequests"], spec["interval"], spec["timeout"], spec["trip"])

    def _tripped(self) -> bool:
        c = self.counts
        return any(all(_COMPARE[op](c.value(name), number) for name, op, number in group) for group in self._trip)

    def _enter(self, state: BreakerState, now: float) -> None:
        self.state = state
        self.counts = Counts()
        if state is BreakerState.OPEN:
            self._expiry = now + self.timeout
        elif state is BreakerState.CLOSED and self.interval > 0:
            self._expiry = now + self.interval
        else:
            self._expiry = 0.0

    def current(self, now: float) -> BreakerState:
        """The state at ``now``, after an open timeout or a closed interval has run out."""
        if self.state is BreakerState.OPEN and now >= self._expiry:
            self._enter(BreakerState.HALF_OPEN, now)
        elif self.state is BreakerState.CLOSED and self.interval > 0:
            if not self._expiry:
                self._expiry = now + self.interval  # the first interval starts with the first call
            elif now >= self._expiry:
                self._enter(BreakerState.CLOSED, now)
        return self.state

    def check(self, now: float) -> None:
        """Raise BreakerOpen unless a call may go through now (without counting it)."""
        state = self.current(now)
        if state is BreakerState.OPEN:
            raise BreakerOpen("circuit breaker is open")
        if state is BreakerState.HALF_OPEN and self.counts.requests >= self.max_requests:
            raise BreakerOpen("too many requests while the circuit breaker is half-open")

    def before(self, now: float) -> None:
        """Admit one call or raise BreakerOpen."""
        self.check(now)
        self.counts.requests += 1

    def after(self, success: bool, now: float) -> None:
        """Count the outcome of a call that ``before`` admitted."""
        state = self.current(now)
        c = self.counts
        if success:
            c.total_successes += 1
            c.consecutive_successes += 1
            c.consecutive_failures = 0
            if state is BreakerState.HALF_OPEN and c.consecutive_successes >= self.max_requests:
                self._enter(BreakerState.CLOSED, now)
            return
        c.total_failures += 1
        c.consecutive_failures += 1
        c.consecutive_successes = 0
        if state is BreakerState.HALF_OPEN or (state is BreakerState.CLOSED and self._tripped()):
            self._enter(BreakerState.OPEN, now)


class Clock:
    """What Policy.run needs of time; tests pass a fake one."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Failure(Exception):
    """An attempt that answered, but not well enough: ``status`` is its HTTP status, ``result`` the answer."""

    def __init__(self, status: int | None = None, result: Any = None):
        super().__init__(f"failed with status {status}" if status is not None else "failed")
        self.status = status
        self.result = result


class Policy:
    """A target's timeout, retry and breakers (an actor call may need its type's and its id's)."""

    def __init__(self, timeout: float | None = None, retry: RetryPolicy | None = None,
                 breakers: tuple[CircuitBreaker, ...] = (), clock: Clock | None = None):
        self.timeout = timeout
        self.retry = retry
        self.breakers = breakers
        self.clock = clock or Clock()

    async def run(self, attempt: Callable[[], Awaitable[Any]],
                  permanent: type[BaseException] | tuple[type[BaseException], ...] = ()) -> Any:
        """``attempt()``'s result; it signals a failure by raising (``Failure`` carries a status).

        The last failure is raised when no retry is left; BreakerOpen when a breaker
        refuses (not retried: daprd stops there too); ``permanent`` exceptions at once.
        """
        retry = 0
        while True:
            try:
                return await self._once(attempt)
            except BreakerOpen:
                raise
            except Exception as exc:
                status = exc.status if isinstance(exc, Failure) else None
                if self.retry is None or isinstance(exc, permanent) or not self.retry.retries(status):
                    raise
                retry += 1
                delay = self.retry.delay(retry)
                if delay is None:
                    raise
                await self.clock.sleep(delay)

    async def _once(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        now = self.clock.now()
        for breaker in self.breakers:  # all admit, or none counts the call
            breaker.check(now)
        for breaker in self.breakers:
            breaker.counts.requests += 1
        try:
            if self.timeout is None:
                result = await attempt()
            else:
                try:
                    result = await asyncio.wait_for(attempt(), self.timeout)
                except asyncio.TimeoutError:
                    raise AttemptTimeout(f"timed out after {self.timeout:g}s") from None
        except asyncio.CancelledError:
            raise
        except BaseException:
            for breaker in self.breakers:
                breaker.after(False, self.clock.now())
            raise
        for breaker in self.breakers:
            breaker.after(True, self.clock.now())
        return result


# Dapr's default-policy names: Default<Target><Kind>Policy, the most specific target first
# (``DefaultStatestoreComponentOutboundRetryPolicy``, ..., ``DefaultRetryPolicy``).
_KINDS = {"timeout": ("Timeout", "timeouts"), "retry": ("Retry", "retries"),
          "circuitBreaker": ("CircuitBreaker", "circuitBreakers")}
COMPONENT_KINDS = ("statestore", "pubsub", "binding", "secretstore", "configuration", "lock")
BUILTIN_SERVICE_RETRIES = "DaprBuiltInServiceRetries"
_BUILTIN_SERVICE_RETRY = RetryPolicy("constant", duration=1.0, max_retries=3)


def _default_targets(target: str, kind: str = "", direction: str = "") -> list[str]:
    """``["StatestoreComponentOutbound", "ComponentOutbound", "Component", ""]`` and the like."""
    if target != "Component":
        return [target, ""]
    names = []
    if kind and direction:
        names.append(f"{kind.capitalize()}Component{direction.capitalize()}")
    if direction:
        names.append(f"Component{direction.capitalize()}")
    return names + ["Component", ""]


class Resiliencies:
    """The policies of every Resiliency resource that applies to this app, by target.

    A target without its own policy of a kind takes the most specific ``Default...``
    policy of that kind. Breakers keep state, so one breaker lives per app id, per
    component and direction, and per actor type, id or both (``circuitBreakerScope``).
    """

    def __init__(self, resiliencies, app_id: str, clock: Clock | None = None):
        self.clock = clock or Clock()
        self.policies: dict[str, dict[str, Any]] = {"timeouts": {}, "retries": {}, "circuitBreakers": {}}
        self.targets: dict[str, dict[str, Any]] = {"apps": {}, "actors": {}, "components": {}}
        for resiliency in resiliencies:
            if resiliency.scopes and app_id not in resiliency.scopes:
                continue
            for section, named in resiliency.policies.items():
                self.policies[section].update(named)
            for section, named in resiliency.targets.items():
                self.targets[section].update(named)
        self._breakers: dict[tuple, CircuitBreaker] = {}
        self._actor_breakers: OrderedDict[tuple[str, str], CircuitBreaker] = OrderedDict()  # least recent first
        self._cache: dict[tuple, Policy | None] = {}

    def _named(self, kind: str, spec: dict[str, Any], defaults: list[str]) -> tuple[str | None, Any]:
        word, section = _KINDS[kind]
        name = spec.get(kind)
        if name is None:
            name = next((f"Default{t}{word}Policy" for t in defaults
                         if f"Default{t}{word}Policy" in self.policies[section]), None)
        return name, self.policies[section].get(name) if name else None

    def _policy(self, spec: dict[str, Any], defaults: list[str], breaker_key: tuple) -> Policy | None:
        timeout = self._named("timeout", spec, defaults)[1]
        retry_spec = self._named("retry", spec, defaults)[1]
        breaker_name, breaker_spec = self._named("circuitBreaker", spec, defaults)
        breaker = None
        if breaker_spec is not None:
            full_key = (breaker_name, *breaker_key)
            breaker = self._breakers.get(full_key)
            if breaker is None:
                breaker = self._breakers[full_key] = CircuitBreaker.from_spec(breaker_spec)
        if timeout is None and retry_spec is None and breaker is None:
            return None
        return Policy(timeout, RetryPolicy.from_spec(retry_spec) if retry_spec else None,
                      (breaker,) if breaker else (), self.clock)

    def app(self, app_id: str) -> Policy | None:
        """The policy for calls to ``app_id``'s app; None when no policy applies."""
        key = ("app", app_id)
        if key not in self._cache:
            spec = self.targets["apps"].get(app_id, {})
            self._cache[key] = self._policy(spec, _default_targets("App"), key)
        return self._cache[key]

    def service_retry(self) -> RetryPolicy:
        """Retries on failed connections when no policy targets the app (daprd's built-in, overridable)."""
        spec = self.policies["retries"].get(BUILTIN_SERVICE_RETRIES)
        return RetryPolicy.from_spec(spec) if spec else _BUILTIN_SERVICE_RETRY

    def component(self, name: str, kind: str, direction: str) -> Policy | None:
        """``kind`` one of COMPONENT_KINDS; ``direction`` "outbound" (calls to it) or "inbound" (what it delivers)."""
        key = ("component", name, direction)
        if key not in self._cache:
            spec = self.targets["components"].get(name, {}).get(direction, {})
            self._cache[key] = self._policy(spec, _default_targets("Component", kind, direction), key)
        return self._cache[key]

    def actor(self, actor_type: str, actor_id: str) -> Policy | None:
        """The policy of one actor call; its breaker is the type's, the id's, or both (``circuitBreakerScope``)."""
        spec = self.targets["actors"].get(actor_type, {})
        base = self._cache.get(("actor", actor_type), False)
        if base is False:
            base = self._cache[("actor", actor_type)] = self._policy(spec, _default_targets("Actor"),
                                                                     ("actor", actor_type))
        if base is None or base.breakers == ():
            return base
        scope = spec.get("circuitBreakerScope", "id")
        if scope == "type":
            return base
        breaker = self._actor_breakers.get((actor_type, actor_id))
        if breaker is None:
            breaker = self._actor_breakers[(actor_type, actor_id)] = CircuitBreaker.from_spec(
                self._named("circuitBreaker", spec, _default_targets("Actor"))[1])
            if len(self._actor_breakers) > spec.get("circuitBreakerCacheSize", 5000):
                self._actor_breakers.popitem(last=False)
        else:
            self._actor_breakers.move_to_end((actor_type, actor_id))
        breakers = (*base.breakers, breaker) if scope == "both" else (breaker,)
        return Policy(base.timeout, base.retry, breakers, self.clock)


class Resilient:
    """A component whose outbound calls (``methods``) run under its policy; the rest pass through.

    Exceptions in ``permanent`` (an ETag mismatch, an unsupported operation) are not
    retried; a timeout or an open breaker surfaces as the component's own ``error``
    type, so the API maps it to the same Dapr error code as any other failure.
    """

    reads_without_waiting = False  # a state read goes through the policy too

    def __init__(self, component, policy: Policy, methods: tuple[str, ...],
                 permanent: tuple[type[BaseException], ...], error: type[Exception]):
        self._component = component
        self._policy = policy
        self._methods = frozenset(methods)
        self._permanent = permanent
        self._error = error

    def __getattr__(self, name: str):
        attr = getattr(self._component, name)
        if name not in self._methods:
            return attr

        async def call(*args, **kwargs):
            try:
                return await self._policy.run(lambda: attr(*args, **kwargs), self._permanent)
            except (AttemptTimeout, BreakerOpen) as exc:
                raise self._error(str(exc)) from None

        return call
