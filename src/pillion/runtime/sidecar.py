"""Sidecar assembly and lifecycle: configuration -> components -> API -> servers.

Start-up order follows daprd: load resources and configuration (a bad file stops
here), create components, open the API and internal listeners, register in the
host registry, then wait for the app's port. ``/v1.0/healthz`` answers 204 only
once all of that is done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from .._version import __version__
from ..api import all_endpoints
from ..api.access import http_version, serves
from ..api.dispatch import Dispatcher
from ..api.invoke import invoke_by_header
from ..api.lock import LockStoreBinding, lock_key_prefix
from ..api.state import StateStoreBinding, key_prefix
from ..broker.options import BrokerOptions
from ..broker.server import BrokerServer, is_pillion_broker
from ..broker.store import StoreInUse
from ..components import registry as component_registry
from ..components.middleware import chain
from ..components.secretstores import is_secret_store
from ..config.manifests import Configuration, Resources
from ..errors import ConfigError
from ..server.client import HttpClientPool
from ..server.protocol import HttpServer, Limits
from .acl import AccessControl
from .app_channel import AppChannel, HealthCheck
from .invocation import Invoker
from .nameresolution import ChainResolver, HostRegistryResolver, StaticResolver
from .actors import Actors
from .bindings import Bindings
from .pubsub import PubSubBinding, Subscriptions
from .memory import body_budget
from .registry import HostRegistry, SidecarEntry
from .resiliency import Resilient, Resiliencies
from .secrets import SecretScopes, resolve_refs

log = logging.getLogger("pillion.runtime.sidecar")

DEFAULT_GRPC_PORT = 50001  # daprd's


@dataclass
class SidecarOptions:
    app_id: str
    app_port: int | None = None
    app_protocol: str = "http"
    app_channel_address: str = "127.0.0.1"
    app_max_concurrency: int = -1
    http_port: int = 3500
    grpc_port: int | None = None  # gRPC API port; None: 50001 when the grpc extra is installed; 0: none
    grpc_port_free_if_taken: bool = False  # ``pillion run``: a taken 50001 means another free port, as dapr run
    internal_port: int = 0
    listen_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    internal_listen_address: str = "127.0.0.1"
    public_port: int | None = None
    resources_paths: list[str] = field(default_factory=list)
    config: str | None = None
    max_body: int = 4 * 1024 * 1024
    max_header: int = 4 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    health: HealthCheck | None = None
    graceful_shutdown: float = 5.0
    data_dir: str = "~/.pillion/data"
    mqtt_port: int | None = None  # None: spec.mqtt.port of the Configuration, else 1883
    api_token: str | None = None
    app_api_token: str | None = None
    namespace: str | None = None
    command: list[str] = field(default_factory=list)
    metrics_port: int | None = None  # Prometheus listener; None: no metrics (the CLI gives daprd's 9090)
    metrics_listen_address: str = "127.0.0.1"
    api_logging: bool | None = None  # --enable-api-logging; None: the Configuration decides


class Lifecycle:
    """What the sidecar tells a service manager as it starts, gets ready and stops: here, nothing."""

    def starting(self, sidecar: Sidecar) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def ready(self, text: str) -> None:
        pass

    def stopping(self, reason: str) -> None:
        pass

    def stopped(self) -> None:
        pass


class Sidecar:
    def __init__(self, options: SidecarOptions):
        self.options = options
        self.app_id = options.app_id
        self.extended: dict[str, str] = {}
        self.components: dict[str, object] = {}
        self.state_stores: dict[str, StateStoreBinding] = {}
        self.secret_stores: dict[str, object] = {}
        self.lock_stores: dict[str, LockStoreBinding] = {}
        self.middleware: dict[str, object] = {}
        self.configuration_stores: dict[str, object] = {}
        self.secret_scopes = SecretScopes()
        self.outbound_ready = False
        self.ready = False  # what /v1.0/healthz reports; not_ready() says why not
        self.started = time.time()
        self.resources: Resources | None = None
        self.configuration: Configuration | None = None
        self.app: AppChannel | None = None
        self.invoker: Invoker | None = None
        self.servers: list = []  # HttpServer, and the gRPC API's GrpcApi: shutdown(grace) each
        self.grpc_port = 0  # the gRPC API's port once it listens
        self.registry: HostRegistry | None = None
        self.entry: SidecarEntry | None = None
        self.pool: HttpClientPool | None = None
        self.tracer = None  # runtime.tracing.Tracer when spec.tracing samples (see _tracer)
        self.broker: BrokerServer | None = None
        self.shared_broker_url: str | None = None  # another Pillion's broker, when it holds our MQTT port
        self.pubsubs: dict[str, PubSubBinding] = {}
        self.subscriptions = Subscriptions(self)
        self.actors = Actors(self)
        self.bindings = Bindings(self)
        self.metrics = None  # runtime.metrics.SidecarMetrics while the metrics listener runs
        self._metrics_server: HttpServer | None = None
        self._stop = asyncio.Event()
        self.stop_reason = ""
        self._drained = False
        # pillion.systemd.notify.SystemdLifecycle replaces it when systemd started us (NOTIFY_SOCKET).
        self.lifecycle = Lifecycle()

    # -- configuration (synchronous, before anything listens) -------------------

    def load(self) -> None:
        """Read every resource and the configuration; raises ConfigError on the first bad one."""
        opts = self.options
        self.resources = Resources((), (), (), ())
        if opts.config or opts.resources_paths:
            # The YAML loader costs over a megabyte of RSS: import it only when there is YAML.
            from ..config.loader import load_configuration, load_resources

            self.configuration = load_configuration(opts.config) if opts.config else None
            self.resources = load_resources(opts.resources_paths, app_id=opts.app_id, namespace=opts.namespace)
        self.secret_scopes = SecretScopes.from_configuration(self.configuration)
        secret_stores = {c.name for c in self.resources.components if is_secret_store(c.type)}
        for component in self.resources.components:
            component_registry.check(component, secret_stores)
        types = {c.name: c.type for c in self.resources.components}
        for which in ("httpPipeline", "appHttpPipeline"):
            for handler in self._pipeline_spec(which):
                if types.get(handler["name"]) != handler["type"]:
                    source = self.configuration.source
                    raise ConfigError(source.file, source.document, f"{handler['where']}.name",
                                      f"the name of a {handler['type']} component in the resources; "
                                      f"{handler['name']!r} is not one")

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.resources is None:
            self.load()
        opts = self.options
        self.lifecycle.starting(self)
        self.lifecycle.status("starting the MQTT broker")
        self.resiliency = Resiliencies(self.resources.resiliencies, self.app_id)
        await self._start_broker()
        await self._start_metrics()
        self.lifecycle.status("loading components")
        self._create_components()
        for binding in self.pubsubs.values():
            await binding.component.start()

        self.pool = HttpClientPool(read_timeout=300.0)
        self.tracer = self._tracer()
        if opts.app_port:
            channel = AppChannel
            if opts.app_protocol == "grpc":  # grpcio is imported only for a gRPC app
                from functools import partial

                from ..grpcapi import installed

                if not installed():
                    raise ConfigError("command line", None, "--app-protocol",
                                      "a gRPC app needs the grpc extra: pip install 'pillion[grpc]'")
                from .app_channel_grpc import GrpcAppChannel

                channel = partial(GrpcAppChannel, max_message=opts.max_body)
            self.app = channel(
                self.pool, opts.app_channel_address, opts.app_port,
                api_token=opts.app_api_token, max_concurrency=opts.app_max_concurrency, health=opts.health,
                on_ready=self._update_ready, pipeline=self._pipeline("appHttpPipeline"),
            )
            if self.tracer is not None:  # client spans around every call into the app (inside the metrics)
                self.app.call = self.tracer.app_call(self.app.call, opts.app_channel_address, opts.app_port)
            if self.metrics is not None:
                self.app.call = self.metrics.app_call(self.app.call)
        self.registry = HostRegistry(os.path.expanduser(opts.data_dir))
        acl = AccessControl.from_spec(self.configuration.access_control if self.configuration else None)
        resolvers = [HostRegistryResolver(self.registry)]
        naming = self.configuration.name_resolution if self.configuration else None
        if naming and naming.get("component") == "static":
            resolvers.append(StaticResolver(naming.get("configuration", {}).get("apps", {})))
        endpoints = {e.name: e.base_url for e in self.resources.http_endpoints}
        self.invoker = Invoker(self.app_id, self.app, self.pool, ChainResolver(*resolvers), acl, endpoints,
                               self.resiliency)
        if self.tracer is not None:
            self.invoker.serve_internal = self.tracer.internal(self.invoker.serve_internal)

        limits = Limits(
            max_body=opts.max_body, max_header=opts.max_header, header_timeout=opts.header_timeout,
            body_timeout=opts.body_timeout, keepalive_timeout=opts.idle_timeout, body_budget=body_budget(),
        )
        api = HttpServer(chain(self._api_middleware() + self._pipeline("httpPipeline"),
                               Dispatcher(self, self._served_endpoints(), opts.api_token,
                                          invoke_by_header if self._serves_http("invoke", "v1.0") else None)), limits)
        if self.tracer is not None:  # server spans around the pipeline: they see what middleware answers
            api.handler = self.tracer.api(api.handler)
        if self.metrics is not None:  # outermost: middleware answers are counted too
            api.handler = self.metrics.api_handler(api.handler)
        self.lifecycle.status(f"opening the HTTP API on port {opts.http_port}")
        for address in opts.listen_addresses:
            await api.listen(address, opts.http_port)
        internal = HttpServer(self.invoker.serve_internal if self.metrics is None
                              else self.metrics.serve_internal(self.invoker.serve_internal), limits)
        await internal.listen(opts.internal_listen_address, opts.internal_port)
        self.servers = [api, internal]
        if self._metrics_server is not None:
            self.servers.append(self._metrics_server)
        if opts.public_port:
            public = HttpServer(Dispatcher(self, _public_endpoints(), None), limits)
            await public.listen(opts.listen_addresses[0], opts.public_port)
            self.servers.append(public)
        self.http_port = api.ports()[0]
        self.internal_port = internal.ports()[0]
        await self._start_grpc(limits)

        self.entry = self.registry.register(
            SidecarEntry(
                app_id=self.app_id, pid=os.getpid(), http_port=self.http_port,
                internal_host=opts.internal_listen_address, internal_port=self.internal_port,
                app_port=opts.app_port, grpc_port=self.grpc_port or None, command=opts.command,
            )
        )
        if self.app is not None:
            self.lifecycle.status(f"waiting for the app on port {opts.app_port}")
            self.app.start()
        self.subscriptions.start()
        self.actors.start()
        self.bindings.start()
        self.outbound_ready = True
        self._update_ready()
        log.info(
            "pillion %s sidecar %r: HTTP API on port %d, %sinternal port %d, %d component(s)",
            __version__, self.app_id, self.http_port, f"gRPC API on port {self.grpc_port}, " if self.grpc_port else "",
            self.internal_port, len(self.components),
        )

    def _serves_http(self, name: str, version: str) -> bool:
        return serves(self.configuration, "http", name, version)

    def _served_endpoints(self) -> tuple:
        """The HTTP API less what ``spec.api`` takes away (health checks are always served)."""
        return tuple(e for e in all_endpoints() if e.public or self._serves_http(e.group, http_version(e.route)))

    async def _start_grpc(self, limits: Limits) -> None:
        """The gRPC API on the same loop, when the extra is installed (or the port asked for)."""
        from ..grpcapi import installed

        port = self.options.grpc_port
        if port == 0:
            return
        if not installed():
            if port is not None:
                raise ConfigError("command line", None, "--dapr-grpc-port",
                                  "the gRPC API needs the grpc extra: pip install 'pillion[grpc]'")
            log.debug("no gRPC API: the grpc extra is not installed")
            return
        from ..grpcapi.stubs import generated_modules

        with generated_modules():
            from ..grpcapi.server import CallTiming, GrpcApi

            hooks = [] if self.tracer is None else [self.tracer.grpc_spans()]
            observe = self._grpc_observer()
            if observe is not None:
                hooks.append(CallTiming(observe))
            api = GrpcApi(self, self.options.api_token, limits.max_body, hooks)
        self.lifecycle.status(f"opening the gRPC API on port {port or DEFAULT_GRPC_PORT}")
        for address in self.options.listen_addresses:
            want = api.ports()[0] if api.ports() else DEFAULT_GRPC_PORT if port is None else port
            try:
                await api.listen(address, want)
            except OSError:
                if port is not None or api.ports() or not self.options.grpc_port_free_if_taken:
                    raise
                log.info("port %d is taken (another sidecar?): the gRPC API takes a free port", want)
                await api.listen(address, 0)
        await api.start()
        self.servers.append(api)
        self.grpc_port = api.ports()[0]

    def _grpc_observer(self):
        """What sees each gRPC call when it ends: the metrics and the API log, if on (else None)."""
        api_log = self._api_log()
        metrics = self.metrics
        if api_log is None and metrics is None:
            return None

        def observe(method: str, code: str, started: float) -> None:
            if metrics is not None:
                metrics.grpc_server_latency.observe((method, code), (time.perf_counter() - started) * 1000)
            if api_log is not None:
                api_log.grpc_called(method, code, started)

        return observe

    def _create_components(self) -> None:
        opts = self.options
        context = component_registry.Context(
            opts.app_id, os.path.expanduser(opts.data_dir), opts.namespace, instance=str(opts.http_port),
            broker=self.broker, shared_broker_url=self.shared_broker_url,
        )
        # Secret stores first, in file order (one may read its own secrets from an earlier one),
        # then every other component with its secretKeyRef values filled in.
        for component in self.resources.components:
            if is_secret_store(component.type):
                (component,) = resolve_refs((component,), self.secret_stores)
                self.secret_stores[component.name] = self.components[component.name] = \
                    component_registry.create(component, context)
        others = resolve_refs((c for c in self.resources.components if not is_secret_store(c.type)),
                              self.secret_stores)
        for component in others:
            instance = self.components[component.name] = component_registry.create(component, context)
            instance = self._resilient(component, instance)
            if self.metrics is not None:
                self.metrics.component_loaded.inc()
                self.metrics.component_init.inc((component.name,))
                instance = self.metrics.component(component.name, component.type, instance)
            if component.type.startswith("state."):
                # Dapr reads keyPrefix for the store, case-insensitively; the store never sees it.
                metadata = {k.lower(): v for k, v in component.metadata_dict().items()}
                prefix = key_prefix(metadata.get("keyprefix"), app_id=opts.app_id, store=component.name,
                                    namespace=opts.namespace)
                self.state_stores[component.name] = StateStoreBinding(component.name, instance, prefix)
            elif component.type.startswith("lock."):
                metadata = {k.lower(): v for k, v in component.metadata_dict().items()}
                prefix = lock_key_prefix(metadata.get("keyprefix"), app_id=opts.app_id, store=component.name)
                self.lock_stores[component.name] = LockStoreBinding(component.name, instance, prefix)
            elif component.type.startswith("middleware."):
                self.middleware[component.name] = instance
            elif component.type.startswith("configuration."):
                self.configuration_stores[component.name] = instance
            elif component.type.startswith("bindings."):
                self.bindings.add(component.name, instance, component.metadata_dict(),
                                  self.resiliency.component(component.name, "binding", "inbound"))
            elif component.type.startswith("pubsub."):
                self.pubsubs[component.name] = PubSubBinding(component.name, instance, component.metadata_dict(),
                                                             opts.app_id,
                                                             self.resiliency.component(component.name, "pubsub",
                                                                                       "inbound"))

    def _tracer(self):
        """The tracer of ``spec.tracing``, started; None (and nothing imported) when tracing is off."""
        spec = self.configuration.spec.get("tracing") if self.configuration is not None else None
        if not spec:
            return None
        from .tracing import from_spec

        tracer = from_spec(spec, self.app_id)
        if tracer is not None:
            tracer.start()
        return tracer

    def _api_middleware(self) -> list:
        """Pillion's own steps in front of the Configuration's httpPipeline."""
        api_log = self._api_log()
        return [api_log] if api_log is not None else []

    def _api_log(self):
        """The API logger (``--enable-api-logging`` or the Configuration's), or None."""
        from .apilog import from_settings

        return from_settings(self.app_id, self.options.api_logging,
                             self.configuration.spec if self.configuration is not None else None)

    async def _start_metrics(self) -> None:
        """The Prometheus listener (daprd's ``--metrics-port``); off when the port is taken, as for MQTT."""
        opts = self.options
        spec = self.configuration.spec.get("metrics") if self.configuration is not None else None
        if opts.metrics_port is None or (isinstance(spec, dict) and spec.get("enabled") is False):
            return
        from .metrics import SidecarMetrics, serve

        metrics = SidecarMetrics(self.app_id, opts.namespace)
        try:
            self._metrics_server = await serve(metrics, opts.metrics_listen_address, opts.metrics_port)
        except OSError as exc:
            log.warning("metrics: cannot listen on %s:%d (%s); running without metrics",
                        opts.metrics_listen_address, opts.metrics_port, exc.strerror or exc)
            return
        metrics.pillion_collector(self)
        for resiliency in self.resources.resiliencies:
            metrics.resiliency_loaded.inc((resiliency.name, opts.namespace or ""))
        self.metrics = metrics
        self.extended["metricsPort"] = str(self._metrics_server.ports()[0])
        log.info("metrics: Prometheus text on http://%s:%s/metrics", opts.metrics_listen_address,
                 self.extended["metricsPort"])

    def _pipeline_spec(self, which: str) -> list[dict[str, str]]:
        return self.configuration.pipeline(which) if self.configuration is not None else []

    def _pipeline(self, which: str) -> list:
        """The middleware components of the Configuration's ``httpPipeline`` or ``appHttpPipeline``."""
        return [self.middleware[handler["name"]] for handler in self._pipeline_spec(which)]

    def _resilient(self, component, instance):
        """The component behind its outbound resiliency policy, when one applies (else itself)."""
        outbound = _OUTBOUND.get(component.type.partition(".")[0])
        if outbound is None:
            return instance
        kind, methods, permanent, error = outbound()
        policy = self.resiliency.component(component.name, kind, "outbound")
        return instance if policy is None else Resilient(instance, policy, methods, permanent, error)

    async def _start_broker(self) -> None:
        """The embedded MQTT broker; without its port or its store it still runs in process."""
        opts = self.options
        options = BrokerOptions(data_dir=os.path.expanduser(opts.data_dir))
        if self.configuration is not None:
            options = options.merged(**self.configuration.mqtt)
        options = options.merged(port=opts.mqtt_port)
        while True:
            self.broker = BrokerServer(options)
            try:
                await self.broker.start()
                break
            except StoreInUse as exc:
                log.warning("MQTT broker: %s; retained messages and sessions are kept in memory only", exc)
                options = options.merged(persistence=False)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not (options.port or options.tls_port):
                    raise
                if options.port and await is_pillion_broker("127.0.0.1", options.port):
                    self.shared_broker_url = f"tcp://127.0.0.1:{options.port}"
                    log.info("MQTT port %d belongs to another Pillion on this host: pub/sub uses its broker",
                             options.port)
                else:
                    log.warning("MQTT broker: port %d is in use; no MQTT listener, the broker runs in process only",
                                options.port)
                options = options.merged(port=0, tls_port=0)
        ports = [s.getsockname()[1] for s in self.broker.sockets]
        if ports:
            self.extended["mqttPort"] = str(ports[0])

    def _update_ready(self) -> None:
        self.ready = not self.not_ready()
        if self.ready:
            self.lifecycle.ready(f"ready: HTTP API on port {self.http_port}, {len(self.components)} component(s)")

    def not_ready(self) -> list[str]:
        waiting = []
        if not self.outbound_ready:
            waiting.append("api")
        if self.app is not None and not self.app.ready.is_set():
            waiting.append("app-channel")
        return waiting

    def request_shutdown(self, reason: str) -> None:
        if not self._stop.is_set():
            log.info("stopping: %s", reason)
            self.stop_reason = reason
            self.lifecycle.stopping(reason)
            self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_shutdown, f"received {signal.Signals(sig).name}")

    async def drain(self) -> None:
        """Stop taking work and finish what is in flight, while the app still runs.

        No new deliveries, input events or requests; the calls in flight end; then every
        active actor is deactivated (the app gets its DELETEs). ``pillion run`` stops the
        app only after this. Runs once; ``stop`` calls it too.
        """
        if self._drained:
            return
        self._drained = True
        self.lifecycle.stopping(self.stop_reason or "shutting down")
        if self.registry is not None and self.entry is not None:
            self.registry.unregister(self.entry)
        await self.subscriptions.stop(self.options.graceful_shutdown)
        await self.bindings.stop()
        await asyncio.gather(*(s.shutdown(self.options.graceful_shutdown) for s in self.servers))
        await self.actors.stop()  # after the calls in flight: then every active actor is deactivated

    async def stop(self) -> None:
        """Graceful drain: stop listening, finish in-flight requests, close components."""
        await self.drain()
        if self.app is not None:
            await self.app.close()
        for component in self.components.values():
            close = getattr(component, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        if self.broker is not None:  # after the pub/subs on it: their last acknowledgements are written
            await self.broker.close()
        if self.tracer is not None:  # the spans of the last requests
            await self.tracer.close()
        if self.pool is not None:
            await self.pool.close()
        if self.registry is not None:
            self.registry.close()
        self.lifecycle.stopped()

    # -- metadata API ----------------------------------------------------------------

    def metadata(self) -> dict:
        opts = self.options
        features = self.configuration.features if self.configuration else {}
        bindings = self.bindings.describe()
        components = [
            {"name": c.name, "type": c.type, "version": c.version or "v1",
             "capabilities": bindings.get(c.name) or _capabilities(self.components.get(c.name))}
            for c in self.resources.components
        ]
        out: dict = {
            "id": self.app_id,
            "runtimeVersion": __version__,
            "enabledFeatures": [name for name, on in features.items() if on],
            "actors": self.actors.describe(),
            "components": components,
            "extended": {"daprRuntimeVersion": __version__, "runtime": "pillion", **self.extended},
            "subscriptions": [subscription.describe() for subscription in self.subscriptions.active],
            "httpEndpoints": [{"name": e.name} for e in self.resources.http_endpoints],
            "actorRuntime": self.actors.runtime_status(),
        }
        if opts.app_port:
            conn: dict = {"port": opts.app_port, "protocol": opts.app_protocol, "channelAddress": opts.app_channel_address}
            if opts.app_max_concurrency > 0:
                conn["maxConcurrency"] = opts.app_max_concurrency
            if opts.health is not None:
                conn["health"] = {
                    "healthCheckPath": opts.health.path,
                    "healthProbeInterval": _duration(opts.health.interval),
                    "healthProbeTimeout": _duration(opts.health.timeout),
                    "healthThreshold": opts.health.threshold,
                }
            out["appConnectionProperties"] = conn
        return out


def _outbound_state():
    from ..components.state import ETagError, StoreError

    return "statestore", ("get", "bulk_get", "set", "delete", "transact", "query"), (ETagError,), StoreError


def _outbound_pubsub():
    from ..components.pubsub import PublishError

    return "pubsub", ("publish",), (), PublishError


def _outbound_binding():
    from ..components.bindings import BindingError, UnsupportedOperation

    return "binding", ("invoke",), (UnsupportedOperation,), BindingError


def _outbound_lock():
    from ..components.lock import StoreError

    return "lock", ("try_lock", "unlock"), (), StoreError


def _outbound_configuration():
    from ..components.configuration import StoreError

    return "configuration", ("get",), (), StoreError


# Component type prefix -> (kind, outbound methods, exceptions never retried, error type), for policies.
_OUTBOUND = {"state": _outbound_state, "pubsub": _outbound_pubsub, "bindings": _outbound_binding,
             "lock": _outbound_lock, "configuration": _outbound_configuration}


def _capabilities(component) -> list[str]:
    """Dapr's capability strings (ETAG, TRANSACTIONAL, ...) for the metadata API."""
    features = getattr(component, "features", None)  # a method on state stores, a set on pub/subs
    if callable(features):
        features = features()
    return sorted(str(f) for f in features) if features is not None else []


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


def _public_endpoints():
    """Dapr's public port serves health and metadata only, without the token."""
    from dataclasses import replace

    from ..api import health, metadata

    return tuple(replace(e, public=True) for e in health.ENDPOINTS + metadata.ENDPOINTS if e.name != "PutMetadata")
