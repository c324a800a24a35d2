"""Resiliency policies alone, on a fake clock: retry schedules, the breaker's states, their composition."""

from __future__ import annotations

import asyncio
import random

import pytest

from pillion.runtime.resiliency import (
    AttemptTimeout, BreakerOpen, BreakerState, CircuitBreaker, Clock, Failure, Policy, RetryPolicy,
    parse_status_codes,
)


class FakeClock(Clock):
    def __init__(self):
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def run(coro):
    return asyncio.run(coro)


def test_status_codes():
    assert parse_status_codes(None) is None
    assert parse_status_codes("429, 500-502") == frozenset({429, 500, 501, 502})


def test_constant_retries_and_limits():
    policy = RetryPolicy("constant", duration=2.0, max_retries=3)
    assert [policy.delay(n) for n in range(1, 5)] == [2.0, 2.0, 2.0, None]
    assert RetryPolicy(max_retries=0).delay(1) is None
    assert RetryPolicy(max_retries=-1).delay(10_000) == 5.0  # forever


def test_exponential_grows_with_jitter_up_to_max_interval():
    policy = RetryPolicy("exponential", max_interval=3.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        base = min(0.5 * 1.5 ** (n - 1), 3.0)
        assert 0.5 * base <= delay <= min(1.5 * base, 3.0)
    assert max(delays) <= 3.0 and delays[-1] > 1.5  # reached the cap's neighbourhood


def test_matching_limits_what_is_retried():
    policy = RetryPolicy(http_status_codes=parse_status_codes("500-599"))
    assert policy.retries(503) and policy.retries(None) and not policy.retries(404)
    assert RetryPolicy().retries(404)  # no matching: every failure


def test_breaker_trips_rejects_half_opens_and_closes():
    breaker = CircuitBreaker(max_requests=2, timeout=30.0, trip="consecutiveFailures >= 3")
    t = 0.0
    for _ in range(2):
        breaker.before(t)
        breaker.after(False, t)
    breaker.before(t)
    breaker.after(True, t)  # a success resets the consecutive count
    for _ in range(3):
        assert breaker.current(t) is BreakerState.CLOSED
        breaker.before(t)
        breaker.after(False, t)
    assert breaker.current(t) is BreakerState.OPEN
    with pytest.raises(BreakerOpen):
        breaker.before(t + 29.9)
    t += 30.0
    assert breaker.current(t) is BreakerState.HALF_OPEN
    breaker.before(t)
    breaker.before(t)
    with pytest.raises(BreakerOpen):  # only maxRequests probes at once
        breaker.before(t)
    breaker.after(True, t)
    assert breaker.current(t) is BreakerState.HALF_OPEN
    breaker.after(True, t)
    assert breaker.current(t) is BreakerState.CLOSED


def test_a_failed_probe_opens_again():
    breaker = CircuitBreaker(timeout=10.0, trip="consecutiveFailures > 0")
    breaker.before(0)
    breaker.after(False, 0)
    assert breaker.current(10) is BreakerState.HALF_OPEN
    breaker.before(10)
    breaker.after(False, 10)
    assert breaker.current(15) is BreakerState.OPEN and breaker.current(20) is BreakerState.HALF_OPEN


def test_interval_clears_closed_counts_and_compound_trips():
    breaker = CircuitBreaker(interval=5.0, trip="totalFailures > 2 && requests > 3 || consecutiveFailures > 9")
    for t in (0, 2, 3):  # the first call starts the first interval
        breaker.before(t)
        breaker.after(False, t)
    assert breaker.current(3) is BreakerState.CLOSED  # 3 failures but only 3 requests
    breaker.before(6)  # the interval ran out at 5: counts cleared
    breaker.after(False, 6)
    assert breaker.counts.total_failures == 1 and breaker.current(6) is BreakerState.CLOSED


def test_policy_retries_until_success():
    clock = FakeClock()
    calls = []

    async def flaky():
        calls.append(clock.now())
        if len(calls) < 3:
            raise Failure(503)
        return "ok"

    policy = Policy(retry=RetryPolicy("constant", duration=1.0, max_retries=5), clock=clock)
    assert run(policy.run(flaky)) == "ok"
    assert clock.slept == [1.0, 1.0] and len(calls) == 3


def test_policy_gives_up_with_the_last_failure_and_respects_matching():
    clock = FakeClock()
    policy = Policy(retry=RetryPolicy("constant", duration=1.0, max_retries=2,
                                      http_status_codes=parse_status_codes("500-599")), clock=clock)

    async def always(status):
        raise Failure(status)

    with pytest.raises(Failure) as info:
        run(policy.run(lambda: always(500)))
    assert info.value.status == 500 and clock.slept == [1.0, 1.0]
    clock.slept.clear()
    with pytest.raises(Failure):
        run(policy.run(lambda: always(404)))
    assert clock.slept == []  # 404 does not match: no retry


def test_timeout_cuts_each_attempt_and_counts_for_the_breaker():
    breaker = CircuitBreaker(timeout=60.0, trip="consecutiveFailures >= 2")
    policy = Policy(timeout=0.01, retry=RetryPolicy("constant", duration=0.0, max_retries=5), breakers=(breaker,),
                    clock=FakeClock())
    attempts = 0

    async def slow():
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(1)

    with pytest.raises(BreakerOpen):
        run(policy.run(slow))
    assert attempts == 2  # two timeouts tripped the breaker; the third attempt was refused, not retried
    with pytest.raises(AttemptTimeout):
        run(Policy(timeout=0.01).run(slow))


def test_breaker_closes_after_a_successful_probe_through_the_policy():
    clock = FakeClock()
    breaker = CircuitBreaker(timeout=5.0, trip="consecutiveFailures >= 1")
    policy = Policy(breakers=(breaker,), clock=clock)
    healthy = False

    async def service():
        if not healthy:
            raise Failure(500)
        return "up"

    with pytest.raises(Failure):
        run(policy.run(service))
    with pytest.raises(BreakerOpen):
        run(policy.run(service))
    clock.t += 5.0
    healthy = True
    assert run(policy.run(service)) == "up"
    assert breaker.current(clock.now()) is BreakerState.CLOSED


def _resources(tmp_path, text: str):
    from pillion.config.loader import load_resources

    (tmp_path / "resiliency.yaml").write_text(text)
    return load_resources([str(tmp_path)], app_id="me").resiliencies


RESILIENCY = """
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: edge}
spec:
  policies:
    timeouts: {fast: 1s, DefaultTimeoutPolicy: 30s, DefaultStatestoreComponentOutboundTimeoutPolicy: 2s}
    retries:
      three: {policy: constant, duration: 100ms, maxRetries: 3}
      DefaultComponentInboundRetryPolicy: {policy: exponential, maxInterval: 10s}
      DaprBuiltInServiceRetries: {policy: constant, duration: 2s, maxRetries: 1}
    circuitBreakers:
      flaky: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures > 2}
  targets:
    apps:
      inventory: {timeout: fast, retry: three, circuitBreaker: flaky}
    actors:
      Motor: {timeout: fast, circuitBreaker: flaky, circuitBreakerScope: both, circuitBreakerCacheSize: 2}
      Lamp: {circuitBreaker: flaky, circuitBreakerScope: type}
    components:
      statestore: {outbound: {retry: three}}
"""


def test_targets_take_their_policies_then_the_most_specific_defaults(tmp_path):
    from pillion.runtime.resiliency import Resiliencies

    r = Resiliencies(_resources(tmp_path, RESILIENCY), "me")
    inventory = r.app("inventory")
    assert inventory.timeout == 1.0 and inventory.retry.max_retries == 3 and len(inventory.breakers) == 1
    assert r.app("inventory") is inventory  # one breaker per app, kept
    other = r.app("billing")
    assert other.timeout == 30.0 and other.retry is None and other.breakers == ()  # DefaultTimeoutPolicy
    store = r.component("statestore", "statestore", "outbound")
    assert store.timeout == 2.0 and store.retry.duration == 0.1
    assert r.component("cache", "statestore", "outbound").timeout == 2.0
    assert r.component("pubsub", "pubsub", "outbound").timeout == 30.0
    inbound = r.component("pubsub", "pubsub", "inbound")
    assert inbound.retry.policy == "exponential" and inbound.retry.max_interval == 10.0
    assert r.service_retry().duration == 2.0 and r.service_retry().max_retries == 1


def test_actor_breakers_by_scope_and_cache_size(tmp_path):
    from pillion.runtime.resiliency import Resiliencies

    r = Resiliencies(_resources(tmp_path, RESILIENCY), "me")
    a, b = r.actor("Motor", "a"), r.actor("Motor", "b")
    assert len(a.breakers) == 2 and a.breakers[0] is b.breakers[0] and a.breakers[1] is not b.breakers[1]
    assert r.actor("Motor", "a").breakers[1] is a.breakers[1]
    r.actor("Motor", "c")
    r.actor("Motor", "d")  # a cache of 2 ids: the least recently used (b) is forgotten
    assert r.actor("Motor", "b").breakers[1] is not b.breakers[1]
    lamp1, lamp2 = r.actor("Lamp", "1"), r.actor("Lamp", "2")
    assert lamp1.breakers == lamp2.breakers and len(lamp1.breakers) == 1
    assert r.actor("Fan", "x").timeout == 30.0


def test_scoped_out_resiliency_and_none_at_all(tmp_path):
    from pillion.runtime.resiliency import Resiliencies

    scoped = RESILIENCY + "scopes: [someone-else]\n"
    r = Resiliencies(_resources(tmp_path, scoped), "me")
    assert r.app("inventory") is None and r.component("statestore", "statestore", "outbound") is None
    assert r.service_retry().duration == 1.0 and r.service_retry().max_retries == 3  # daprd's built-in


def test_both_scoped_breakers_refuse_together(tmp_path):
    from pillion.runtime.resiliency import Resiliencies

    clock = FakeClock()
    r = Resiliencies(_resources(tmp_path, RESILIENCY), "me", clock)

    async def fail():
        raise Failure(500)

    for _ in range(3):
        with pytest.raises(Failure):
            run(r.actor("Motor", "a").run(fail))
    with pytest.raises(BreakerOpen):  # id a's breaker and the type's both tripped
        run(r.actor("Motor", "a").run(fail))
    with pytest.raises(BreakerOpen):  # the type's breaker refuses another id too
        run(r.actor("Motor", "z").run(fail))


def test_invocation_retries_a_refused_sidecar_with_the_builtin_policy():
    """No policy targets the app: daprd's built-in 3 retries, 1 s apart (fake clock), then ERR_DIRECT_INVOKE."""
    from pillion._testing import free_port
    from pillion.errors import DaprError
    from pillion.runtime.acl import AccessControl
    from pillion.runtime.invocation import Invoker
    from pillion.runtime.nameresolution import StaticResolver
    from pillion.server.client import HttpClientPool
    from pillion.server.http import Request

    async def go():
        clock = FakeClock()
        pool = HttpClientPool()
        dead = free_port()  # nothing listens there
        invoker = Invoker("me", None, pool, StaticResolver({"peer": [f"127.0.0.1:{dead}"]}),
                          AccessControl.from_spec(None), clock=clock)
        try:
            with pytest.raises(DaprError) as info:
                await invoker.invoke("peer", "hello", Request("GET", "/v1.0/invoke/peer/method/hello", "", [], b"",
                                                              True))
        finally:
            await pool.close()
        return clock.slept, info.value

    slept, error = run(go())
    assert slept == [1.0, 1.0, 1.0]
    assert error.code == "ERR_DIRECT_INVOKE" and "failed to invoke, id: peer" in error.message


def test_resilient_component_retries_its_methods_only():
    from pillion.components.state import ETagError, StoreError
    from pillion.runtime.resiliency import Resilient

    class Store:
        name = "s"
        reads_without_waiting = True

        def __init__(self):
            self.calls = {"get": 0, "set": 0}

        async def get(self, key):
            self.calls["get"] += 1
            if self.calls["get"] < 3:
                raise StoreError("disk busy")
            return "value"

        async def set(self, requests):
            self.calls["set"] += 1
            raise ETagError("mismatch", "k", "possible etag mismatch")

        async def slow(self):
            await asyncio.sleep(1)

        def features(self):
            return {"ETAG"}

    clock = FakeClock()
    store = Store()
    policy = Policy(retry=RetryPolicy("constant", duration=0.5, max_retries=5), clock=clock)
    wrapped = Resilient(store, policy, ("get", "set"), (ETagError,), StoreError)
    assert wrapped.reads_without_waiting is False and wrapped.name == "s" and wrapped.features() == {"ETAG"}
    assert run(wrapped.get("k")) == "value" and store.calls["get"] == 3 and clock.slept == [0.5, 0.5]
    with pytest.raises(ETagError):
        run(wrapped.set([]))
    assert store.calls["set"] == 1  # a permanent error is not retried
    timed = Resilient(store, Policy(timeout=0.01), ("slow",), (), StoreError)
    with pytest.raises(StoreError, match="timed out"):
        run(timed.slow())


def test_input_binding_deliveries_follow_the_inbound_policy():
    from pillion.runtime.bindings import Bindings

    class Reply:
        def __init__(self, status):
            self.status = status

    class App:
        protocol = "http"

        def __init__(self, statuses):
            self.statuses = list(statuses)
            self.calls = 0

        async def call(self, method, path, headers, body, timeout=None):
            self.calls += 1
            return Reply(self.statuses.pop(0))

    class Sidecar:
        def __init__(self, app):
            self.app = app

    clock = FakeClock()
    retry = Policy(retry=RetryPolicy("constant", duration=0.25, max_retries=2), clock=clock)

    def deliverer(statuses, inbound):
        sidecar = Sidecar(App(statuses))
        bindings = Bindings(sidecar)
        bindings.add("tick", object(), {}, inbound)
        return sidecar.app, bindings._deliverer(bindings.bindings["tick"])

    app, deliver = deliverer([500, 503, 200], retry)
    assert run(deliver(b"{}", {})) is True and app.calls == 3 and clock.slept == [0.25, 0.25]
    app, deliver = deliverer([500, 500, 500], retry)
    assert run(deliver(b"{}", {})) is False and app.calls == 3  # retries used up: the component decides
    app, deliver = deliverer([500], None)
    assert run(deliver(b"{}", {})) is False and app.calls == 1  # no policy: one attempt, as before
