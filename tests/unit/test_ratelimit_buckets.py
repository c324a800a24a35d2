"""The rate limiter's token buckets and the pipeline, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from pillion.components.middleware import AppCall, chain
from pillion.components.middleware.ratelimit import MAX_CLIENTS, RateLimit
from pillion.components.registry import Context
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError
from pillion.server.http import Request, Response


def component(**metadata) -> Component:
    return Component(name="limit", namespace=None, type="middleware.http.ratelimit", version="v1",
                     metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(), init_timeout="",
                     ignore_errors=False, auth_secret_store=None, source=Source("limit.yaml", 0))


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_buckets_per_client_refill_at_the_rate():
    clock = Clock()
    limiter = RateLimit(component(maxRequestsPerSecond="4"), Context("a", "/tmp"), clock)
    assert [limiter.allow("10.0.0.1") for _ in range(5)] == [True] * 4 + [False]
    assert limiter.allow("10.0.0.2")  # another client has its own bucket
    clock.t = 0.5  # two tokens back
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    clock.t = 100.0
    assert sum(limiter.allow("10.0.0.1") for _ in range(10)) == 4  # never more than the burst


def test_fractional_rates_and_bounded_memory():
    clock = Clock()
    limiter = RateLimit(component(maxRequestsPerSecond="0.5"), Context("a", "/tmp"), clock)
    assert limiter.allow("c") and not limiter.allow("c")
    clock.t = 2.0
    assert limiter.allow("c")
    for n in range(MAX_CLIENTS * 2):
        limiter.allow(f"client-{n}")
    assert len(limiter._buckets) <= MAX_CLIENTS


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_bad_rate_names_the_field(value):
    with pytest.raises(ConfigError, match=r"spec.metadata\[0\].maxRequestsPerSecond"):
        RateLimit(component(maxRequestsPerSecond=value), Context("a", "/tmp"))
    with pytest.raises(ConfigError, match="maxRequestsPerSecond"):
        RateLimit(component(), Context("a", "/tmp"))


def test_pipeline_order_and_empty_pipeline():
    seen = []

    def handler(request):
        seen.append("handler")
        return Response(200)

    assert chain([], handler) is handler  # no pipeline, no extra step

    clock = Clock()
    limiter = RateLimit(component(maxRequestsPerSecond="1"), Context("a", "/tmp"), clock)
    pipeline = chain([limiter], handler)
    request = Request("GET", "/v1.0/metadata", "", [], b"", True)
    request.peer = "127.0.0.1"
    assert asyncio.run(pipeline(request)).status == 200
    answer = asyncio.run(pipeline(request))
    assert answer.status == 429 and seen == ["handler"]

    async def app(call):
        return "app answered"

    app_pipeline = chain([RateLimit(component(maxRequestsPerSecond="1"), Context("a", "/tmp"), clock)], app, app=True)
    call = AppCall("POST", "/orders", [], b"")
    assert asyncio.run(app_pipeline(call)) == "app answered"
    assert asyncio.run(app_pipeline(call)).status == 429
