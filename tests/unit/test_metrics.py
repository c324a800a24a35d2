"""The metrics registry, its text exposition (read back by prometheus_client's parser), the cardinality cap
and the hooks' recording, without a sidecar process."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pillion.errors import DaprError
from pillion.runtime.metrics import OVERFLOW, UNMATCHED, Registry, SidecarMetrics
from pillion.server.http import Response


def parse(text: bytes) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def value(families: dict, name: str, sample: str | None = None, **labels) -> float:
    """The value of the one sample of family ``name`` whose labels include ``labels``."""
    found = [s.value for s in families[name].samples
             if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, families[name].samples)
    return found[0]


def test_counter_gauge_histogram_exposition_parses():
    registry = Registry({"app_id": "a"})
    c = registry.counter("pillion_test_events_total", "Events.", ("kind",))
    g = registry.gauge("pillion_test_level", "A level.", ("where",))
    h = registry.histogram("pillion_test_latency", "Latency (ms).", ("op",), bounds=(1, 10, 100))
    c.inc(("x",))
    c.inc(("x",), 2)
    c.inc(('quote"and\\back\nslash',))
    g.set(("here",), 3.5)
    for ms in (0.5, 1, 5, 50, 500):
        h.observe(("get",), ms)
    families = parse(registry.render())
    # prometheus_client names a counter family without its _total suffix
    assert value(families, "pillion_test_events", kind="x", app_id="a") == 3
    assert value(families, "pillion_test_events", kind='quote"and\\back\nslash') == 1
    assert families["pillion_test_level"].type == "gauge"
    assert value(families, "pillion_test_level", where="here") == 3.5
    hist = families["pillion_test_latency"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"1.0": 2, "10.0": 3, "100.0": 4, "+Inf": 5}  # cumulative, le: value <= bound
    assert value(families, "pillion_test_latency", "pillion_test_latency_count") == 5
    assert value(families, "pillion_test_latency", "pillion_test_latency_sum") == pytest.approx(556.5)


def test_duplicate_metric_names_are_refused():
    registry = Registry()
    registry.counter("pillion_x_total", "x")
    with pytest.raises(ValueError):
        registry.gauge("pillion_x_total", "x")


def test_cardinality_is_capped_under_10000_distinct_keys():
    metrics = SidecarMetrics("app", max_series=1000)
    store = metrics.component("statestore", "state.in-memory", _FakeStore())
    loop = asyncio.new_event_loop()
    try:
        for i in range(10_000):
            loop.run_until_complete(store.set([f"key-{i}"]))  # keys are no label: one series
            metrics.invoke_received.inc((f"caller-{i}",))  # a label from the outside: capped
    finally:
        loop.close()
    assert sorted(key[2] for key in metrics.state_latency.series) == ["get", "set"]  # get: made up front
    assert len(metrics.invoke_received.series) == 1000
    assert metrics.invoke_received.series[(OVERFLOW,)] == 10_000 - 999
    families = parse(metrics.registry.render())
    assert value(families, "dapr_runtime_service_invocation_req_recv", source_app_id=OVERFLOW) == 9001
    assert value(families, "pillion_metrics_series_overflow",
                 metric="dapr_runtime_service_invocation_req_recv_total") == 9001
    assert value(families, "dapr_component_state_count", operation="set", success="true") == 10_000


class _FakeStore:
    reads_without_waiting = True

    def __init__(self):
        self.items = {}

    async def set(self, requests):
        for key in requests:
            self.items[key] = 1

    def get_now(self, key):
        if key == "boom":
            raise RuntimeError("broken")
        return self.items.get(key)

    def features(self):
        return {"ETAG"}


class _Endpoint:
    route = "/v1.0/state/{storeName}/{key}"
    name = "GetState"


class _InvokeEndpoint:
    route = "/v1.0/invoke/{id}/method/{method...}"
    name = "InvokeService"


class _Request:
    def __init__(self, method, path, endpoint=None, body=b"", headers=()):
        self.method, self.path, self.endpoint, self.body = method, path, endpoint, body
        self.headers = list(headers)
        self.params = {}

    def header(self, name):
        return next((v for k, v in self.headers if k.lower() == name), None)


def test_api_handler_records_route_templates_sync_async_and_errors():
    metrics = SidecarMetrics("app")

    def handler(request):
        if request.path.endswith("/raise"):
            raise DaprError("ERR_STATE_GET", "nope")
        if request.path.endswith("/later"):
            async def later():
                return Response(201, b"abc")
            return later()
        request.endpoint = _Endpoint() if request.path.startswith("/v1.0/state/") else None
        return Response(200, b"x" * 2000)

    wrapped = metrics.api_handler(handler)
    for i in range(50):  # distinct raw paths, one route template
        assert wrapped(_Request("GET", f"/v1.0/state/s/key-{i}")).status == 200
    assert wrapped(_Request("POST", "/some/app/method", body=b"12345")).status == 200
    with pytest.raises(DaprError):
        wrapped(_Request("GET", "/x/raise"))
    response = asyncio.new_event_loop().run_until_complete(wrapped(_Request("PUT", "/x/later")))
    assert response.status == 201
    families = parse(metrics.registry.render())
    route = _Endpoint.route
    assert value(families, "dapr_http_server_request_count", method="GET", path=route) == 50
    assert value(families, "dapr_http_server_response_count", method="GET", path=route, status="200") == 50
    assert value(families, "dapr_http_server_latency", "dapr_http_server_latency_count",
                 method="GET", path=route, status="200") == 50
    assert value(families, "dapr_http_server_response_count", method="POST", path=UNMATCHED) == 1
    assert value(families, "dapr_http_server_response_count", method="GET", status="500") == 1  # ERR_STATE_GET
    assert value(families, "dapr_http_server_response_count", method="PUT", status="201") == 1
    assert value(families, "dapr_http_server_request_bytes", "dapr_http_server_request_bytes_sum") == 5
    assert value(families, "dapr_http_server_response_bytes", "dapr_http_server_response_bytes_count") == 53
    assert len(metrics.http_server_latency.series) == 4
    assert not any("key-" in line for line in metrics.registry.render().decode().splitlines())


def test_state_proxy_times_sync_reads_and_passes_the_rest_through():
    metrics = SidecarMetrics("app", namespace="ns1")
    fake = _FakeStore()
    fake.items["k"] = 7
    store = metrics.component("statestore", "state.in-memory", fake)
    assert store.reads_without_waiting is True
    assert store.features() == {"ETAG"}
    assert store.get_now("k") == 7
    with pytest.raises(RuntimeError):
        store.get_now("boom")
    families = parse(metrics.registry.render())
    assert value(families, "dapr_component_state_count", component="statestore", namespace="ns1",
                 operation="get", success="true") == 1
    assert value(families, "dapr_component_state_count", operation="get", success="false") == 1


def test_input_only_binding_is_not_made_an_output_binding():
    class InputOnly:
        async def start(self, deliver):
            pass

    metrics = SidecarMetrics("app")
    assert not hasattr(metrics.component("cron", "bindings.cron", InputOnly()), "invoke")


def test_process_figures_are_there():
    families = parse(SidecarMetrics("app").registry.render())
    assert value(families, "process_resident_memory_bytes") > 1_000_000
    assert value(families, "process_open_fds") >= 3
    assert value(families, "process_cpu_seconds") > 0
    for name in ("dapr_runtime_component_loaded", "dapr_runtime_component_init_fail",
                 "dapr_component_pubsub_ingress_count", "dapr_component_pubsub_egress_count",
                 "dapr_http_client_completed_count", "dapr_resiliency_loaded", "dapr_runtime_actor_activated"):
        assert name in families


def test_app_call_failures_are_counted_and_raised():
    metrics = SidecarMetrics("app")

    async def call(method, target, headers, body, timeout=None):
        if target == "/down":
            raise ConnectionError("refused")
        return Response(200, b"ok")

    measured = metrics.app_call(call)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(measured("POST", "/up", [], b"abc")).status == 200
        with pytest.raises(ConnectionError):
            loop.run_until_complete(measured("GET", "/down", [], b""))
    finally:
        loop.close()
    families = parse(metrics.registry.render())
    assert value(families, "dapr_http_client_completed_count", method="POST", status="200", path="") == 1
    assert value(families, "dapr_http_client_completed_count", method="GET", status="error") == 1
    assert value(families, "dapr_http_client_sent_bytes", "dapr_http_client_sent_bytes_sum", method="POST") == 3
    assert value(families, "dapr_http_client_received_bytes", "dapr_http_client_received_bytes_sum") == 2


def test_actor_activations_and_the_scrape_time_figures():
    from pillion.runtime.actors import Actors

    class Sidecar:
        def __init__(self):
            self.metrics = SidecarMetrics("app")
            self.state_stores: dict = {}
            self.components: dict = {}
            self.broker = None

    sidecar = Sidecar()
    sidecar.actors = actors = Actors(sidecar)
    sidecar.metrics.pillion_collector(sidecar)

    async def touch():
        for actor_id in ("1", "2", "1"):
            actors._touch("Thermostat", actor_id)

    asyncio.new_event_loop().run_until_complete(touch())
    families = parse(sidecar.metrics.registry.render())
    assert value(families, "dapr_runtime_actor_activated", actor_type="Thermostat") == 2  # "1" twice: once active
    assert value(families, "pillion_actors_active", actor_type="Thermostat") == 2


def test_service_invocation_is_recorded_by_target_from_the_route_and_the_header():
    metrics = SidecarMetrics("caller")

    def handler(request):
        if request.path.startswith("/v1.0/invoke/"):
            request.endpoint = _InvokeEndpoint()
            request.params = {"id": request.path.split("/")[3], "method": "m"}

        async def answer():
            return Response(503 if request.path.endswith("/down") else 200, b"")
        return answer()

    wrapped = metrics.api_handler(handler)
    loop = asyncio.new_event_loop()
    try:
        for path in ("/v1.0/invoke/orders/method/a", "/v1.0/invoke/orders/method/down", "/v1.0/invoke/stock/method/b"):
            loop.run_until_complete(wrapped(_Request("POST", path)))
        loop.run_until_complete(wrapped(_Request("GET", "/plain/path", headers=[(b"dapr-app-id", b"stock")])))
        loop.run_until_complete(wrapped(_Request("GET", "/no/target")))
    finally:
        loop.close()
    families = parse(metrics.registry.render())
    assert value(families, "dapr_runtime_service_invocation_req_sent", destination_app_id="orders") == 2
    assert value(families, "dapr_runtime_service_invocation_req_sent", destination_app_id="stock") == 2
    assert value(families, "dapr_runtime_service_invocation_res_recv", destination_app_id="orders",
                 status="503") == 1
    assert len(families["dapr_runtime_service_invocation_req_sent"].samples) == 2  # /no/target invoked nothing
