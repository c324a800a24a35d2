"""Prometheus metrics: Dapr's metric names and labels, Pillion's own, text format 0.0.4.

No client library: a metric is a dict from a tuple of label values to a number (a
counter) or to a list of bucket counts plus a sum (a histogram). Recording is one
dict lookup and an add, so the API's hot path pays little. Labels every series
shares (``app_id``, ``namespace``) are added when the text is written, not stored.

Cardinality is bounded: each metric keeps at most ``max_series`` label sets; a new
one beyond that is counted under a single set whose values are all ``overflow``.
Process figures (RSS, CPU, open fds) and Pillion's (LMDB map use, broker clients
and queues) are read at scrape time, so they cost nothing between scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from time import perf_counter

from ..api.dispatch import target_from_headers
from ..components.state import WouldBlock
from ..errors import DaprError
from ..server.http import Response

log = logging.getLogger("pillion.runtime.metrics")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OVERFLOW = "overflow"
UNMATCHED = "_unmatched"  # the path label of requests no route matched (invocation by header)
DEFAULT_MAX_SERIES = 1000

# Dapr's default latency distribution, in milliseconds.
LATENCY_MS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400,
              500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


def _label_value(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    if "\\" in text or '"' in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def _number(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


class Metric:
    """One metric family; ``series`` maps a tuple of label values to its value."""

    kind = "untyped"
    __slots__ = ("help", "labels", "max_series", "name", "overflowed", "series")

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), max_series: int = DEFAULT_MAX_SERIES):
        self.name = name
        self.help = help
        self.labels = labels
        self.series: dict[tuple, object] = {}
        self.max_series = max_series
        self.overflowed = 0  # label sets refused by the cap (counted under the overflow set)

    def _admit(self, key: tuple) -> tuple:
        """``key``, or the overflow key once the metric holds ``max_series`` label sets (that one included)."""
        if len(self.series) < self.max_series - 1:
            return key
        self.overflowed += 1
        return (OVERFLOW,) * len(self.labels)

    def samples(self) -> Iterable[tuple[str, tuple, object]]:
        """(name suffix, label values, value) triples for the exposition."""
        for key, value in self.series.items():
            yield "", key, value


class Counter(Metric):
    kind = "counter"
    __slots__ = ()

    def inc(self, key: tuple = (), amount: float = 1) -> None:
        series = self.series
        try:
            series[key] += amount
        except KeyError:
            key = self._admit(key)
            series[key] = series.get(key, 0) + amount


class Gauge(Metric):
    kind = "gauge"
    __slots__ = ()

    def set(self, key: tuple, value: float) -> None:
        series = self.series
        if key not in series:
            key = self._admit(key)
        series[key] = value

    add = Counter.inc  # the same arithmetic; a gauge may also go down


class Histogram(Metric):
    """Fixed buckets; a series is ``[n_0, ..., n_k, n_inf, sum, *extra]`` (counts per bucket, not cumulative).

    ``extra`` slots after the sum hold other sums of the same events (bytes of the request
    and of the response, say): one series, one lookup per event, read by ``SumView``.
    """

    kind = "histogram"
    __slots__ = ("bounds", "extra", "sum_index")

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), bounds: tuple = LATENCY_MS,
                 max_series: int = DEFAULT_MAX_SERIES, extra: int = 0):
        super().__init__(name, help, labels, max_series)
        self.bounds = tuple(bounds)
        self.sum_index = len(self.bounds) + 1
        self.extra = extra

    def cell(self, key: tuple) -> list:
        """The series of ``key``, created (or the overflow one) when new."""
        cell = self.series.get(key)
        if cell is None:
            key = self._admit(key)
            cell = self.series.get(key)
            if cell is None:
                cell = self.series[key] = [0] * (len(self.bounds) + 1) + [0.0] + [0] * self.extra
        return cell

    def observe(self, key: tuple, value: float) -> None:
        cell = self.series.get(key) or self.cell(key)
        cell[bisect_left(self.bounds, value)] += 1
        cell[self.sum_index] += value

    def samples(self):
        bounds = [_number(float(b)) for b in self.bounds] + ["+Inf"]
        for key, cell in self.series.items():
            total = 0
            for bound, count in zip(bounds, cell):
                total += count
                yield "_bucket", key + (bound,), total
            yield "_sum", key, cell[self.sum_index]
            yield "_count", key, total


class CountView:
    """A counter read off a histogram's counts (Dapr's ``*_count`` views of a latency measure)."""

    kind = "counter"

    def __init__(self, name: str, help: str, source: Histogram, labels: tuple[str, ...] | None = None):
        self.name = name
        self.help = help
        self.source = source
        # A subset of the source's labels, summed over the rest.
        self.labels = labels if labels is not None else source.labels
        self._pick = tuple(source.labels.index(label) for label in self.labels)

    def samples(self):
        out: dict[tuple, int] = {}
        for key, cell in self.source.series.items():
            sub = tuple(key[i] for i in self._pick)
            out[sub] = out.get(sub, 0) + sum(cell[:self.source.sum_index])
        for key, value in out.items():
            yield "", key, value


class SumView:
    """A histogram with only the ``+Inf`` bucket, read off an extra slot of another's series.

    Dapr's byte-size distributions, kept as a count and a sum: exact, and nothing more
    to record per request than one add into the latency series already looked up.
    """

    kind = "histogram"

    def __init__(self, name: str, help: str, source: Histogram, slot: int, labels: tuple[str, ...] = ()):
        self.name = name
        self.help = help
        self.source = source
        self.slot = source.sum_index + 1 + slot
        self.labels = labels
        self._pick = tuple(source.labels.index(label) for label in labels)

    def samples(self):
        out: dict[tuple, list] = {}
        stop = self.source.sum_index
        for key, cell in self.source.series.items():
            sub = tuple(key[i] for i in self._pick)
            acc = out.get(sub)
            if acc is None:
                acc = out[sub] = [0, 0]
            acc[0] += sum(cell[:stop])
            acc[1] += cell[self.slot]
        for key, (count, total) in out.items():
            yield "_bucket", key + ("+Inf",), count
            yield "_sum", key, total
            yield "_count", key, count


class Registry:
    """The metric families of one sidecar and the text they scrape to."""

    def __init__(self, const_labels: dict[str, str] | None = None, max_series: int = DEFAULT_MAX_SERIES):
        self.const_labels = dict(const_labels or {})
        self.max_series = max_series
        self.metrics: dict[str, object] = {}
        self.collectors: list[Callable[[], Iterable[tuple[str, str, str, dict, float]]]] = []

    def _add(self, metric):
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        self.metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        return self._add(Counter(name, help, labels, self.max_series))

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:
        return self._add(Gauge(name, help, labels, self.max_series))

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = (), bounds: tuple = LATENCY_MS,
                  extra: int = 0) -> Histogram:
        return self._add(Histogram(name, help, labels, bounds, self.max_series, extra))

    def sum_view(self, name: str, help: str, source: Histogram, slot: int, labels: tuple[str, ...] = ()):
        return self._add(SumView(name, help, source, slot, labels))

    def count_view(self, name: str, help: str, source: Histogram, labels: tuple[str, ...] | None = None):
        return self._add(CountView(name, help, source, labels))

    def collector(self, collect: Callable[[], Iterable[tuple[str, str, str, dict, float]]]) -> None:
        """``collect()`` yields (name, kind, help, labels, value) when scraped; for figures read, not recorded."""
        self.collectors.append(collect)

    def render(self) -> bytes:
        """The exposition text (format 0.0.4) of every metric and collector."""
        const = "".join(f',{k}="{_label_value(v)}"' for k, v in self.const_labels.items())
        lines: list[str] = []
        for metric in self.metrics.values():
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            names = metric.labels + (("le",) if metric.kind == "histogram" else ())
            for suffix, key, value in metric.samples():
                labels = "".join(f',{n}="{_label_value(v)}"' for n, v in zip(names, key))
                text = (const + labels)[1:]
                lines.append(f"{metric.name}{suffix}{{{text}}} {_number(value)}" if text
                             else f"{metric.name}{suffix} {_number(value)}")
        families: dict[str, list[str]] = {}
        for collect in self.collectors:
            try:
                for name, kind, help, labels, value in collect():
                    family = families.get(name)
                    if family is None:
                        family = families[name] = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                    text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
                    family.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
            except Exception:  # a scrape must not fail because one figure could not be read
                log.exception("metrics collector %r failed", collect)
        for family in families.values():
            lines.extend(family)
        lines.append("")
        return "\n".join(lines).encode()


# -- process figures (Prometheus' standard process_* names) ---------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def process_collector(started: float | None = None):
    """RSS, virtual memory, CPU seconds, open and max fds, start time: read from /proc when scraped."""
    start_time = started if started is not None else time.time()

    def collect():
        times = os.times()
        yield ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", {},
               times.user + times.system)
        try:
            with open("/proc/self/statm", "rb") as f:
                size, rss = f.read().split()[:2]
            yield ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", {}, int(rss) * _PAGE)
            yield ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", {}, int(size) * _PAGE)
        except OSError:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            yield ("process_resident_memory_bytes", "gauge", "Peak resident memory size in bytes.", {},
                   usage.ru_maxrss * 1024)
        try:
            yield ("process_open_fds", "gauge", "Number of open file descriptors.", {},
                   len(os.listdir("/proc/self/fd")))
        except OSError:
            pass
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        yield ("process_max_fds", "gauge", "Maximum number of open file descriptors.", {},
               soft if soft != resource.RLIM_INFINITY else -1)
        yield ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", {},
               start_time)

    return collect


# -- the sidecar's metrics ------------------------------------------------------------


class SidecarMetrics:
    """Every metric one sidecar records, and the hooks that record them.

    The hooks wrap callables the sidecar already has (the API handler, the app
    channel's ``call``, the internal listener's handler, component instances), so the
    modules they come from need no metrics code and pay nothing when metrics are off.
    Service invocation is read off the API requests (route ``InvokeService`` or the
    ``dapr-app-id`` header), which costs no extra coroutine per call.
    """

    def __init__(self, app_id: str, namespace: str | None = None, max_series: int = DEFAULT_MAX_SERIES):
        r = self.registry = Registry({"app_id": app_id}, max_series)
        self.app_id = app_id
        self.namespace = namespace or ""
        # HTTP server (the API): one latency histogram; the counts are views of it.
        self.http_server_latency = r.histogram(
            "dapr_http_server_latency", "Latency distribution of HTTP requests (ms).", ("method", "path", "status"),
            extra=2)  # + request and response body bytes
        r.count_view("dapr_http_server_request_count", "The number of HTTP requests.",
                     self.http_server_latency, ("method", "path"))
        r.count_view("dapr_http_server_response_count", "The number of HTTP responses.", self.http_server_latency)
        r.sum_view("dapr_http_server_request_bytes", "HTTP request body bytes (count and sum).",
                   self.http_server_latency, 0)
        r.sum_view("dapr_http_server_response_bytes", "HTTP response body bytes (count and sum).",
                   self.http_server_latency, 1)
        # gRPC server (the gRPC API, with the grpc extra): daprd's ocgrpc names.
        self.grpc_server_latency = r.histogram(
            "dapr_grpc_io_server_server_latency", "Latency of gRPC calls served (ms).",
            ("grpc_server_method", "grpc_server_status"))
        r.count_view("dapr_grpc_io_server_completed_rpcs", "Count of gRPC calls served, by method and status.",
                     self.grpc_server_latency)
        # HTTP client (calls into the app).
        self.http_client_latency = r.histogram(
            "dapr_http_client_roundtrip_latency", "End-to-end latency of calls into the app (ms).",
            ("method", "path", "status"), extra=2)  # + request and response body bytes
        r.count_view("dapr_http_client_completed_count", "Count of completed requests.", self.http_client_latency)
        r.sum_view("dapr_http_client_sent_bytes", "Bytes sent in request bodies (count and sum).",
                   self.http_client_latency, 0, self.http_client_latency.labels)
        r.sum_view("dapr_http_client_received_bytes", "Bytes received in response bodies (count and sum).",
                   self.http_client_latency, 1)
        # Service invocation.
        self.invoke_latency = r.histogram(
            "dapr_runtime_service_invocation_res_recv_latency_ms",
            "The remote service invocation round trip latency (ms).", ("destination_app_id", "status"))
        r.count_view("dapr_runtime_service_invocation_req_sent_total",
                     "The number of remote service invocation requests sent.", self.invoke_latency,
                     ("destination_app_id",))
        r.count_view("dapr_runtime_service_invocation_res_recv_total",
                     "The number of remote service invocation responses received.", self.invoke_latency)
        self.invoke_served = r.counter(
            "dapr_runtime_service_invocation_res_sent_total",
            "The number of remote service invocation responses sent.", ("source_app_id", "status"))
        self.invoke_received = r.counter(
            "dapr_runtime_service_invocation_req_recv_total",
            "The number of remote service invocation requests received.", ("source_app_id",))
        # Components.
        self.state_latency = r.histogram(
            "dapr_component_state_latencies", "The latency of the response from the state component (ms).",
            ("component", "namespace", "operation", "success"))
        r.count_view("dapr_component_state_count", "The number of operations performed on the state component.",
                     self.state_latency)
        self.egress_latency = r.histogram(
            "dapr_component_pubsub_egress_latencies", "The latency of the response from the pub/sub component (ms).",
            ("component", "namespace", "success", "topic"))
        r.count_view("dapr_component_pubsub_egress_count",
                     "The number of outgoing messages published to the pub/sub component.", self.egress_latency)
        self.ingress_latency = r.histogram(
            "dapr_component_pubsub_ingress_latencies", "The consuming app event processing latency (ms).",
            ("component", "namespace", "process_status", "status", "topic"))
        r.count_view("dapr_component_pubsub_ingress_count",
                     "The number of incoming messages arriving from the pub/sub component.", self.ingress_latency)
        self.output_binding_latency = r.histogram(
            "dapr_component_output_binding_latencies",
            "The latency of the response from the output binding component (ms).",
            ("component", "namespace", "operation", "success"))
        r.count_view("dapr_component_output_binding_count",
                     "The number of operations invoked on the output binding component.", self.output_binding_latency)
        self.input_binding_latency = r.histogram(
            "dapr_component_input_binding_latencies", "The triggered app event processing latency (ms).",
            ("component", "namespace", "success"))
        r.count_view("dapr_component_input_binding_count",
                     "The number of incoming events arriving from the input binding component.",
                     self.input_binding_latency)
        # Runtime.
        self.component_loaded = r.counter(
            "dapr_runtime_component_loaded", "The number of successfully loaded components.", ())
        self.component_init = r.counter(
            "dapr_runtime_component_init_total", "The number of initialized components.", ("component",))
        self.component_init_fail = r.counter(
            "dapr_runtime_component_init_fail_total", "The number of component initialization failures.",
            ("component", "reason"))
        # Actors.
        self.actor_activated = r.counter(
            "dapr_runtime_actor_activated_total", "The number of the actor activation.", ("actor_type",))
        self.actor_deactivated = r.counter(
            "dapr_runtime_actor_deactivated_total", "The number of the successful actor deactivation.",
            ("actor_type",))
        # Resiliency: the resources loaded (counted once at start).
        self.resiliency_loaded = r.counter(
            "dapr_resiliency_loaded", "The number of resiliency policies loaded.", ("name", "namespace"))
        r.collector(process_collector())
        r.collector(self._overflow_figures)

    def _overflow_figures(self):
        for metric in self.registry.metrics.values():
            refused = getattr(metric, "overflowed", 0)
            if refused:
                yield ("pillion_metrics_series_overflow_total", "counter",
                       "Label sets counted under the overflow set because the metric reached its cap.",
                       {"metric": metric.name}, refused)

    # -- the API ---------------------------------------------------------------------

    def api_handler(self, handler):
        """``handler`` (the API's) recording Dapr's HTTP server metrics: route templates, not raw paths.

        One series per (method, route, status) holds the latency buckets and the body byte
        sums; the common case (a Response returned at once) is recorded inline: a key tuple,
        a dict lookup and four adds (a bisect only past 1 ms).
        """
        latency = self.http_server_latency
        series = latency.series
        new_cell = latency.cell
        bounds = latency.bounds
        at = latency.sum_index
        invoked = self.invoke_latency.observe

        def record(request, status: int, size: int, start: float) -> None:
            ms = (perf_counter() - start) * 1000.0
            endpoint = request.endpoint
            key = (request.method, endpoint.route if endpoint is not None else UNMATCHED, status)
            cell = series.get(key) or new_cell(key)
            cell[bisect_left(bounds, ms)] += 1
            cell[at] += ms
            cell[at + 1] += len(request.body)
            cell[at + 2] += size
            # Service invocation, here rather than around Invoker.invoke: one coroutine less per call.
            if endpoint is not None:
                if endpoint.name == "InvokeService":
                    invoked((request.params.get("id", ""), status), ms)
            else:
                target = target_from_headers(request)  # the dapr-app-id form (unmatched paths only)
                if target is not None:
                    invoked((target, status), ms)

        async def later(request, pending, start):
            try:
                response = await pending
            except DaprError as err:
                record(request, err.status, 0, start)
                raise
            except asyncio.CancelledError:
                raise
            except Exception:
                record(request, 500, 0, start)
                raise
            record(request, response.status, len(response.body), start)
            return response

        def measured(request):
            start = perf_counter()
            try:
                result = handler(request)
            except DaprError as err:
                record(request, err.status, 0, start)
                raise
            except Exception:
                record(request, 500, 0, start)
                raise
            if type(result) is not Response:
                return later(request, result, start)
            # record(), inline: this is every synchronous answer (health, state reads, metadata)
            ms = (perf_counter() - start) * 1000.0
            endpoint = request.endpoint
            key = (request.method, endpoint.route if endpoint is not None else UNMATCHED, result.status)
            cell = series.get(key) or new_cell(key)
            cell[0 if ms <= 1.0 else bisect_left(bounds, ms)] += 1
            cell[at] += ms
            cell[at + 1] += len(request.body)
            cell[at + 2] += len(result.body)
            return result

        return measured

    # -- calls into the app ----------------------------------------------------------------

    def app_call(self, call):
        """The app channel's ``call`` recording Dapr's HTTP client metrics.

        The path label is empty, as in Dapr's low-cardinality mode: app paths are the
        app's, unbounded, and method names already show in the invocation metrics.
        """
        latency = self.http_client_latency
        series = latency.series
        new_cell = latency.cell
        bounds = latency.bounds
        at = latency.sum_index

        async def measured(method, target, headers, body, timeout=None):
            start = perf_counter()
            try:
                response = await call(method, target, headers, body, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                ms = (perf_counter() - start) * 1000.0
                cell = latency.cell((method, "", "error"))
                cell[bisect_left(bounds, ms)] += 1
                cell[at] += ms
                cell[at + 1] += len(body)
                raise
            ms = (perf_counter() - start) * 1000.0
            key = (method, "", response.status)
            cell = series.get(key) or new_cell(key)
            cell[bisect_left(bounds, ms)] += 1
            cell[at] += ms
            cell[at + 1] += len(body)
            cell[at + 2] += len(response.body)
            return response

        return measured

    # -- service invocation -----------------------------------------------------------------

    def serve_internal(self, serve):
        """``Invoker.serve_internal`` counting calls from other sidecars, by caller."""
        received = self.invoke_received
        served = self.invoke_served

        async def measured(request):
            caller = (request.header(b"dapr-caller-app-id") or b"").decode("latin-1")
            received.inc((caller,))
            try:
                response = await serve(request)
            except DaprError as err:
                served.inc((caller, err.status))
                raise
            served.inc((caller, response.status))
            return response

        return measured

    # -- components ------------------------------------------------------------------------

    def component(self, name: str, type: str, instance):
        """``instance`` behind a proxy timing its outbound calls, for state, pub/sub and binding components."""
        kind = type.partition(".")[0]
        if kind == "state":
            return MeasuredState(instance, self.state_latency, name, self.namespace)
        if kind == "pubsub":
            return MeasuredPubSub(instance, self.egress_latency, name, self.namespace)
        if kind == "bindings" and hasattr(instance, "invoke"):  # input-only bindings stay input-only
            return MeasuredBinding(instance, self.output_binding_latency, name, self.namespace)
        return instance

    def pubsub_ingress(self, handle, component: str, topic: str):
        """A subscription's message handler timing each delivery by its outcome (success, retry, drop)."""
        latency = self.ingress_latency
        ns = self.namespace
        keys = {}

        async def measured(message):
            start = perf_counter()
            try:
                outcome = await handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                latency.observe((component, ns, "retry", "error", topic), (perf_counter() - start) * 1000.0)
                raise
            key = keys.get(outcome)
            if key is None:
                status = str(getattr(outcome, "name", outcome)).lower()
                key = keys[outcome] = (component, ns, status, status, topic)
            latency.observe(key, (perf_counter() - start) * 1000.0)
            return outcome

        return measured

    def input_binding(self, deliver, component: str):
        """An input binding's deliverer timing each event by whether the app took it."""
        latency = self.input_binding_latency
        ok, failed = (component, self.namespace, True), (component, self.namespace, False)

        async def measured(data, metadata):
            start = perf_counter()
            try:
                taken = await deliver(data, metadata)
            except asyncio.CancelledError:
                raise
            except Exception:
                latency.observe(failed, (perf_counter() - start) * 1000.0)
                raise
            latency.observe(ok if taken else failed, (perf_counter() - start) * 1000.0)
            return taken

        return measured

    # -- Pillion's own -----------------------------------------------------------------------

    def pillion_collector(self, sidecar):
        """Actor timers and active actors, LMDB map use of the state stores, broker clients and queues:
        read when scraped."""

        def collect():
            actors = sidecar.actors
            timers: dict[str, int] = {}
            for actor_type, _, _ in list(getattr(actors, "_timers", {})):
                timers[actor_type] = timers.get(actor_type, 0) + 1
            for actor_type, count in timers.items():
                yield ("dapr_runtime_actor_timers", "gauge", "The number of actor timers requests.",
                       {"actor_type": actor_type}, count)
            active: dict[str, int] = {}
            for actor_type, _ in list(getattr(actors, "active", {})):
                active[actor_type] = active.get(actor_type, 0) + 1
            for actor_type, count in active.items():
                yield ("pillion_actors_active", "gauge", "Actors active in this sidecar.",
                       {"actor_type": actor_type}, count)
            seen: set[int] = set()
            for name in list(sidecar.state_stores):
                env = _lmdb_env(sidecar.components.get(name))
                if env is None or id(env) in seen:
                    continue
                seen.add(id(env))
                info, stat = env.info(), env.stat()
                labels = {"component": name}
                yield ("pillion_lmdb_map_size_bytes", "gauge", "The LMDB map size of a state store.", labels,
                       info["map_size"])
                yield ("pillion_lmdb_map_used_bytes", "gauge", "Bytes of the LMDB map in use (last page).", labels,
                       (info["last_pgno"] + 1) * stat["psize"])
            broker = getattr(sidecar.broker, "broker", None)
            if broker is not None:
                clients = broker.clients.values()
                yield ("pillion_broker_clients", "gauge", "MQTT client states the embedded broker holds.", {},
                       len(broker.clients))
                yield ("pillion_broker_clients_connected", "gauge", "MQTT clients connected to the embedded broker.",
                       {}, broker.connected)
                yield ("pillion_broker_queued_messages", "gauge", "Messages waiting in client queues.", {},
                       sum(len(c.queue) for c in clients))
                yield ("pillion_broker_inflight_messages", "gauge", "Messages sent and not yet acknowledged.", {},
                       sum(len(c.inflight) for c in clients))
                yield ("pillion_broker_retained_messages", "gauge", "Retained messages.", {}, len(broker.retained))
                yield ("pillion_broker_messages_received_total", "counter", "PUBLISH packets received.", {},
                       broker.messages_received)
                yield ("pillion_broker_messages_sent_total", "counter", "PUBLISH packets sent.", {},
                       broker.messages_sent)
                yield ("pillion_broker_messages_dropped_total", "counter",
                       "Messages refused by a full queue, too big, or expired.", {}, broker.messages_dropped)

        self.registry.collector(collect)

    # -- the listener -----------------------------------------------------------------------

    def handler(self, request):
        """The metrics listener's handler: ``GET /metrics`` (any path, as Dapr's exporter answers)."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed", [(b"Allow", b"GET, HEAD")])
        return Response(200, self.registry.render(), [(b"Content-Type", CONTENT_TYPE)])


def _lmdb_env(component):
    shared = getattr(component, "_env", None)
    env = getattr(shared, "env", None)
    return env if env is not None and hasattr(env, "info") else None


class _Measured:
    """Outbound calls of a component, timed; everything else passes through to it."""

    def __init__(self, component, histogram: Histogram, name: str, namespace: str):
        self._component = component
        self._histogram = histogram
        self._name = name
        self._ns = namespace

    def __getattr__(self, name: str):
        return getattr(self._component, name)

    async def _timed(self, key_ok: tuple, key_fail: tuple, call):
        start = perf_counter()
        try:
            result = await call
        except BaseException:
            self._histogram.observe(key_fail, (perf_counter() - start) * 1000.0)
            raise
        self._histogram.observe(key_ok, (perf_counter() - start) * 1000.0)
        return result


class MeasuredState(_Measured):
    """Dapr's operations: get, set, delete, bulk_get, transaction, query."""

    def __init__(self, component, histogram: Histogram, name: str, namespace: str):
        super().__init__(component, histogram, name, namespace)
        self.reads_without_waiting = getattr(component, "reads_without_waiting", False)
        if self.reads_without_waiting:
            self.get_now = _timed_read(component.get_now, histogram, name, namespace)
        self._key_pairs = {op: ((name, namespace, op, True), (name, namespace, op, False))
                           for op in ("get", "set", "delete", "bulk_get", "transaction", "query")}

    def _keys(self, operation: str):
        return self._key_pairs[operation]

    def get(self, *args, **kwargs):
        return self._timed(*self._keys("get"), self._component.get(*args, **kwargs))

    def set(self, *args, **kwargs):
        return self._timed(*self._keys("set"), self._component.set(*args, **kwargs))

    def delete(self, *args, **kwargs):
        return self._timed(*self._keys("delete"), self._component.delete(*args, **kwargs))

    def bulk_get(self, *args, **kwargs):
        return self._timed(*self._keys("bulk_get"), self._component.bulk_get(*args, **kwargs))

    def transact(self, *args, **kwargs):
        return self._timed(*self._keys("transaction"), self._component.transact(*args, **kwargs))

    def query(self, *args, **kwargs):
        return self._timed(*self._keys("query"), self._component.query(*args, **kwargs))


def _timed_read(read, histogram: Histogram, name: str, namespace: str):
    """A store's synchronous read, timed: the API's hot path for state reads, so a closure over locals."""
    ok = histogram.cell((name, namespace, "get", True))  # made once, never looked up again
    failed = (name, namespace, "get", False)
    bounds = histogram.bounds

    def get_now(key):
        start = perf_counter()
        try:
            item = read(key)
        except WouldBlock:  # not a failure: the read goes on in get()
            raise
        except Exception:
            histogram.observe(failed, (perf_counter() - start) * 1000.0)
            raise
        ms = (perf_counter() - start) * 1000.0
        ok[0 if ms <= 1.0 else bisect_left(bounds, ms)] += 1
        ok[-1] += ms
        return item

    return get_now


class MeasuredPubSub(_Measured):
    def publish(self, topic, *args, **kwargs):
        return self._timed((self._name, self._ns, True, topic), (self._name, self._ns, False, topic),
                           self._component.publish(topic, *args, **kwargs))


class MeasuredBinding(_Measured):
    def invoke(self, operation, *args, **kwargs):
        return self._timed((self._name, self._ns, operation, True), (self._name, self._ns, operation, False),
                           self._component.invoke(operation, *args, **kwargs))


async def serve(metrics: SidecarMetrics, address: str, port: int, limits=None):
    """The metrics listener: an HttpServer answering every GET with the exposition text."""
    from ..server.protocol import HttpServer

    server = HttpServer(metrics.handler, limits)
    await server.listen(address, port)
    return server
