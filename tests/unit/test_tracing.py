"""Tracing pieces on their own: trace context, sampler, steps, batcher bounds, encoders, HTTP export."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillion.api import Endpoint
from pillion.runtime.tracing import (
    Sampler,
    SpanContext,
    Tracer,
    current,
    from_spec,
    otlp,
    parse_traceparent,
    zipkin,
)
from pillion.runtime.tracing.export import Batcher, Destination
from pillion.runtime.tracing.spans import CLIENT, SERVER, Span
from pillion.server.http import Request, Response

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WELL_FORMED = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")


# -- traceparent ------------------------------------------------------------------------


def test_parse_a_valid_traceparent():
    ctx = parse_traceparent(VALID.encode(), b"congo=t61rcWkgMzE")
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.tracestate) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True, "congo=t61rcWkgMzE")
    assert ctx.traceparent() == VALID
    assert parse_traceparent(VALID[:-2] + "00").sampled is False
    assert parse_traceparent(VALID[:-2] + "03").sampled is True  # other flag bits are ignored
    assert parse_traceparent(f" \t{VALID}\t ") is not None  # optional whitespace around the value


@pytest.mark.parametrize("value", [
    "", None, VALID.upper(),  # upper-case hex is not allowed
    "ff" + VALID[2:],  # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
    VALID + "-extra",  # version 00 is exactly 55 characters
    "01" + VALID[2:] + "extra",  # a later version may only go on after a dash
    VALID[:-1], "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "00_" + VALID[3:],
    "\xff" + VALID[1:],
])
def test_invalid_traceparents_are_no_parent(value):
    assert parse_traceparent(value) is None
    assert parse_traceparent(value.encode("latin-1") if value else value) is None


def test_a_later_version_with_more_fields_is_read():
    ctx = parse_traceparent("01" + VALID[2:] + "-what-comes-next")
    assert ctx is not None and ctx.span_id == "00f067aa0ba902b7"


def test_an_oversized_tracestate_is_dropped():
    assert parse_traceparent(VALID, "a=" + "b" * 600).tracestate == ""


@given(st.binary(max_size=80))
def test_any_bytes_parse_to_nothing_or_a_well_formed_context(raw):
    ctx = parse_traceparent(raw)
    assert ctx is None or WELL_FORMED.fullmatch(ctx.traceparent())


@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
       st.text(alphabet="0123456789abcdef", min_size=16, max_size=16), st.booleans())
def test_format_and_parse_round_trip(trace_id, span_id, sampled):
    text = SpanContext(trace_id, span_id, sampled).traceparent()
    ctx = parse_traceparent(text)
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        assert ctx is None
    else:
        assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (trace_id, span_id, sampled)


# -- sampler ----------------------------------------------------------------------------


def test_sampler_follows_the_parent():
    parent_yes = parse_traceparent(VALID)
    parent_no = parse_traceparent(VALID[:-2] + "00")
    assert Sampler(0.0000001).sampled(parent_yes) is True
    assert Sampler(1.0).sampled(parent_no) is False
    assert Sampler(1.0).sampled(None) is True and Sampler(0.0).sampled(None) is False


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_roots_are_sampled_with_the_rate_as_probability(rate):
    tracer = Recorder(rate)
    sent = []
    for _ in range(4000):
        request = _request("/v1.0/metadata", [])
        _answer(tracer.api(lambda r: Response(200, b"", []))(request))
        sent.append(request.header(b"traceparent").decode())
    assert all(WELL_FORMED.fullmatch(value) for value in sent)
    assert len({value[3:35] for value in sent}) == 4000  # a new trace each
    share = len(tracer.spans) / 4000
    assert share == 1.0 if rate == 1.0 else 0.45 < share < 0.55
    sampled = {span.context.traceparent() for span in tracer.spans}
    assert sampled == {value for value in sent if value.endswith("-01")}


# -- configuration ----------------------------------------------------------------------


def test_tracing_is_off_without_a_section_or_at_rate_zero():
    assert from_spec(None, "a") is None
    assert from_spec({}, "a") is None
    assert from_spec({"samplingRate": "0", "zipkin": {"endpointAddress": "http://z:9411/api/v2/spans"}}, "a") is None


def test_destinations_from_the_spec():
    tracer = from_spec({"samplingRate": "0.5", "zipkin": {"endpointAddress": "zipkin:9411"},
                        "otel": {"endpointAddress": "collector:4318", "isSecure": "true", "protocol": "http"}}, "a")
    assert tracer.sampler.rate == 0.5
    assert [d.url for d in tracer.batcher.destinations] == [
        "http://zipkin:9411/api/v2/spans", "https://collector:4318/v1/traces"]
    assert from_spec({"samplingRate": "1", "otel": {"endpointAddress": "c:4317", "protocol": "grpc"}},
                     "a").batcher.destinations == []  # gRPC export is not supported: logged, not fatal
    assert from_spec({"zipkin": {"endpointAddress": "http://z/api/v2/spans"}}, "a").sampler.rate == 0.0001
    assert from_spec({"samplingRate": "lots"}, "a").sampler.rate == 0.0001


# -- steps --------------------------------------------------------------------------------


class Recorder(Tracer):
    def __init__(self, rate=1.0):
        super().__init__("svc", rate, [])
        self.spans: list[Span] = []
        self.record = self.spans.append


def _answer(result):
    """What a wrapper answered, awaited when it is an awaitable (as the HTTP server does)."""
    if isinstance(result, Response):
        return result

    async def wait():
        return await result

    return asyncio.run(wait())


def _request(path: str, headers, endpoint=None, params=None):
    request = Request("POST", path, "", list(headers), b"", True)
    request.endpoint = endpoint
    request.params = params or {}
    return request


def _header(headers, name: bytes):
    return next((v for k, v in headers if k.lower() == name), None)


STATE = Endpoint(("POST",), "/v1.0/state/{storeName}", "SaveState", "state", None)


def test_api_step_makes_a_server_span_and_rewrites_the_traceparent():
    tracer = Recorder()
    seen = {}

    def handler(request):
        seen["traceparent"] = request.header(b"traceparent")
        seen["current"] = current.get()
        return Response(204, b"", [])

    request = _request("/v1.0/state/statestore", [(b"Traceparent", VALID.encode())], STATE, {"storeName": "statestore"})
    response = _answer(tracer.api(handler)(request))
    assert response.status == 204
    (span,) = tracer.spans
    assert seen["current"] is span and current.get() is None
    assert seen["traceparent"] == span.context.traceparent().encode()
    assert span.context.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and span.parent_id == "00f067aa0ba902b7"
    assert (span.name, span.kind, span.status, span.error) == ("/v1.0/state/statestore", SERVER, 204, "")
    assert span.attributes["db.system"] == "state" and span.attributes["db.name"] == "statestore"
    assert span.attributes["dapr.api"] == "POST /v1.0/state/statestore"
    assert len(request.headers) == 1  # replaced where it was, not added


@given(st.binary(max_size=70))
@settings(max_examples=60, deadline=None)
def test_a_malformed_traceparent_starts_a_new_root(raw):
    tracer = Recorder()
    request = _request("/v1.0/metadata", [(b"traceparent", raw)])
    _answer(tracer.api(lambda r: Response(200, b"{}", []))(request))
    (span,) = tracer.spans
    parent = parse_traceparent(raw)
    if parent is None:
        assert span.parent_id == "" and len(span.context.trace_id) == 32
    else:
        assert span.context.trace_id == parent.trace_id
    assert WELL_FORMED.fullmatch(request.header(b"traceparent").decode())


def test_api_step_unsampled_propagates_without_a_span():
    tracer = Recorder(rate=1.0)
    unsampled = VALID[:-2] + "00"
    request = _request("/v1.0/metadata", [(b"traceparent", unsampled.encode())])
    _answer(tracer.api(lambda r: Response(200, b"", []))(request))
    assert tracer.spans == []
    sent = request.header(b"traceparent").decode()
    assert sent.startswith(VALID[:36]) and sent.endswith("-00") and sent != unsampled


def test_api_step_records_errors_raised_by_the_handler():
    from pillion.errors import DaprError

    tracer = Recorder()

    def handler(request):
        raise DaprError("ERR_STATE_STORE_NOT_FOUND", "no such store")

    with pytest.raises(DaprError):
        _answer(tracer.api(handler)(_request("/v1.0/state/x", [], STATE, {"storeName": "x"})))
    assert tracer.spans[0].status == 400 and tracer.spans[0].error == "Code(400): Bad Request"


def test_health_probes_are_not_traced():
    tracer = Recorder()
    request = _request("/v1.0/healthz", [])
    _answer(tracer.api(lambda r: Response(204, b"", []))(request))
    assert tracer.spans == [] and request.headers == []


def test_app_step_is_a_child_of_the_current_span_and_copies_the_headers():
    tracer = Recorder()
    sent = {}

    async def send(method, target, headers, body, timeout=None):
        sent["headers"] = headers
        return Response(200, b"", [])

    call = tracer.app_call(send, "127.0.0.1", 8080)

    parent = Span(parse_traceparent(VALID), "", "outer", SERVER, 0)
    original = [(b"traceparent", b"00-11111111111111111111111111111111-2222222222222222-01")]

    async def run():
        token = current.set(parent)
        try:
            return await call("POST", "/orders?x=1", original, b"")
        finally:
            current.reset(token)

    asyncio.run(run())
    (span,) = tracer.spans
    assert original == [(b"traceparent", b"00-11111111111111111111111111111111-2222222222222222-01")]
    assert _header(sent["headers"], b"traceparent") == span.context.traceparent().encode()
    assert (span.parent_id, span.context.trace_id) == ("00f067aa0ba902b7", parent.context.trace_id)
    assert (span.kind, span.name, span.attributes["url.full"]) == (CLIENT, "POST /orders",
                                                                   "http://127.0.0.1:8080/orders?x=1")


def test_app_step_without_a_current_span_uses_the_calls_traceparent():
    tracer = Recorder()

    sent = []

    async def send(method, target, headers, body, timeout=None):
        sent.append(headers)
        return Response(200, b"", [])

    call = tracer.app_call(send, "h", 1)
    _answer(call("POST", "/orders", [(b"traceparent", VALID.encode())], b""))
    (span,) = tracer.spans
    assert span.parent_id == "00f067aa0ba902b7"
    _answer(call("GET", "/dapr/subscribe", [], b""))  # the sidecar's own probe: untouched, no span
    assert len(tracer.spans) == 1 and sent[-1] == []


def test_app_call_passes_the_tracestate_on():
    tracer = Recorder()
    sent = []

    async def send(method, target, headers, body, timeout=None):
        sent.append(headers)
        return Response(200, b"", [])

    parent = Span(parse_traceparent(VALID, "a=b"), "", "outer", SERVER, 0)

    async def run():
        token = current.set(parent)
        try:
            return await tracer.app_call(send, "h", 1)("GET", "/x", [], b"")
        finally:
            current.reset(token)

    asyncio.run(run())
    assert _header(sent[0], b"tracestate") == b"a=b"
    assert tracer.spans[0].context.tracestate == "a=b"


def test_an_unsampled_app_call_adds_no_coroutine():
    tracer = Recorder(rate=1.0)
    marker = object()

    def send(method, target, headers, body, timeout=None):
        return marker  # what AppChannel.call returns, passed through as it is

    unsampled = (VALID[:-2] + "00").encode()
    assert tracer.app_call(send, "h", 1)("GET", "/x", [(b"traceparent", unsampled)], b"") is marker
    assert tracer.spans == []


# -- batcher ------------------------------------------------------------------------------


def _span(n: int = 0, status: int = 200) -> Span:
    span = Span(SpanContext("4bf92f3577b34da6a3ce929d0e0e4736", f"{n + 1:016x}", True, "k=v"), "00f067aa0ba902b7",
                f"span {n}", SERVER, 1_700_000_000_000_000_000)
    span.end_ns = span.start_ns + 1_500_000
    span.status = status
    span.attributes = {"dapr.protocol": "http"}
    return span


class FakeDestination:
    def __init__(self, fail=False):
        self.batches = []
        self.fail = fail

    async def send(self, spans, service):
        self.batches.append(list(spans))


def test_the_queue_is_bounded_and_drops_are_counted():
    batcher = Batcher([], "svc", max_queue=3, max_batch=2)
    for n in range(5):
        batcher.add(_span(n))
    assert (len(batcher), batcher.dropped) == (3, 2)


def test_flush_sends_batches_of_at_most_max_batch():
    destination = FakeDestination()
    batcher = Batcher([destination], "svc", max_queue=10, max_batch=4)
    for n in range(9):
        batcher.add(_span(n))
    asyncio.run(batcher.flush())
    assert [len(b) for b in destination.batches] == [4, 4, 1] and len(batcher) == 0


def test_a_full_batch_is_exported_before_the_interval():
    destination = FakeDestination()

    async def run():
        batcher = Batcher([destination], "svc", max_batch=3, interval=60.0)
        batcher.start()
        for n in range(3):
            batcher.add(_span(n))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if destination.batches:
                break
        await batcher.close()

    asyncio.run(run())
    assert [len(b) for b in destination.batches] == [3]


def test_close_exports_what_is_left():
    destination = FakeDestination()

    async def run():
        batcher = Batcher([destination], "svc", interval=60.0)
        batcher.start()
        batcher.add(_span())
        await batcher.close()

    asyncio.run(run())
    assert len(destination.batches) == 1


# -- encoders -----------------------------------------------------------------------------


def test_zipkin_v2_json():
    ok, failed = _span(0), _span(1, status=503)
    failed.parent_id = ""
    body = json.loads(zipkin.encode([ok, failed], "orders"))
    first, second = body
    assert first == {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "0000000000000001", "parentId": "00f067aa0ba902b7",
        "name": "span 0", "kind": "SERVER", "timestamp": 1_700_000_000_000_000, "duration": 1500,
        "localEndpoint": {"serviceName": "orders"}, "tags": {"dapr.protocol": "http"}}
    assert "parentId" not in second
    assert second["tags"] == {"dapr.protocol": "http", "error": "Code(503): Service Unavailable"}


def test_otlp_json_export_trace_service_request():
    body = json.loads(otlp.encode([_span(0), _span(1, status=404)], "orders"))
    (resource_spans,) = body["resourceSpans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "orders"}
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "pillion"
    first, second = scope_spans["spans"]
    assert first == {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "0000000000000001", "parentSpanId": "00f067aa0ba902b7",
        "name": "span 0", "kind": 2, "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001500000", "traceState": "k=v",
        "attributes": [{"key": "dapr.protocol", "value": {"stringValue": "http"}}], "status": {"code": 0}}
    assert second["status"] == {"code": 2, "message": "Code(404): Not Found"}


# -- HTTP export ------------------------------------------------------------------------


def _serve(status: int, received: list):
    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        received.append((head, await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status)
        await writer.drain()
        writer.close()

    return asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("status", [200, 202, 500])
def test_destination_posts_the_encoded_batch(status):
    received = []

    async def run():
        server = await _serve(status, received)
        port = server.sockets[0].getsockname()[1]
        destination = Destination(f"http://127.0.0.1:{port}/api/v2/spans", zipkin.encode, zipkin.CONTENT_TYPE, "z")
        await destination.send([_span(0), _span(1)], "svc")
        server.close()
        return destination

    destination = asyncio.run(run())
    (head, body), = received
    assert head.startswith(b"POST /api/v2/spans HTTP/1.1\r\n") and b"Content-Type: application/json\r\n" in head
    assert len(json.loads(body)) == 2
    assert (destination.sent, destination.failed) == ((2, 0) if status < 300 else (0, 2))


def test_an_unreachable_collector_costs_the_batch_only():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    destination = Destination(f"http://127.0.0.1:{port}/v1/traces", otlp.encode, otlp.CONTENT_TYPE, "o", timeout=2)
    asyncio.run(destination.send([_span()], "svc"))
    assert (destination.sent, destination.failed) == (0, 1)
    with pytest.raises(ValueError):
        Destination("ftp://x/y", otlp.encode, otlp.CONTENT_TYPE, "o")


def test_an_unsampled_api_request_adds_no_coroutine():
    tracer = Recorder()
    answer = Response(204, b"", [])
    request = _request("/v1.0/metadata", [(b"traceparent", (VALID[:-2] + "00").encode())])
    assert tracer.api(lambda r: answer)(request) is answer


def test_close_gives_up_on_a_collector_that_hangs():
    class Hanging:
        async def send(self, spans, service):
            await asyncio.sleep(30)

    async def run():
        batcher = Batcher([Hanging()], "svc")
        batcher.add(_span())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.close(timeout=0.2)
        return loop.time() - started

    assert asyncio.run(run()) < 1.0
