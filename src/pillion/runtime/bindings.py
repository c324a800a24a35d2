"""Bindings at run time: which components are input and output, and input delivery to the app.

Input follows daprd: once the app is ready, ``OPTIONS /<route>`` (the component's
``route`` metadata, else its name); 2xx or 405 means the app takes the binding. Each
event is then ``POST /<route>`` with ``Content-Type: application/json``, the event's
metadata as headers; a 2xx answer accepts it, anything else is reported back to the
component, which decides about retrying. An inbound resiliency policy on the component
retries the delivery first (its timeout replaces the 60 s default).
"""

from __future__ import annotations

import asyncio
import logging

from ..server.client import ClientError
from .app_channel import AppUnavailable, header_safe
from .resiliency import BreakerOpen, Failure, Policy

log = logging.getLogger("pillion.runtime.bindings")

PROBE_TIMEOUT = 3.0
DELIVERY_TIMEOUT = 60.0


class BindingBinding:
    """A configured binding: its component, direction and input route."""

    def __init__(self, name: str, component, metadata: dict[str, str], inbound: Policy | None = None) -> None:
        lowered = {k.lower(): v for k, v in metadata.items()}
        self.name = name
        self.component = component
        self.inbound = inbound  # the component's inbound resiliency policy, for deliveries to the app
        direction = {part.strip().lower() for part in lowered.get("direction", "").split(",") if part.strip()}
        self.output = hasattr(component, "invoke") and (not direction or "output" in direction)
        self.input = hasattr(component, "start") and (not direction or "input" in direction)
        self.route = "/" + (lowered.get("route") or name).lstrip("/")


class Bindings:
    def __init__(self, sidecar) -> None:
        self.sidecar = sidecar
        self.bindings: dict[str, BindingBinding] = {}
        self._task: asyncio.Task | None = None

    def add(self, name: str, component, metadata: dict[str, str], inbound: Policy | None = None) -> None:
        self.bindings[name] = BindingBinding(name, component, metadata, inbound)

    def start(self) -> None:
        inputs = [b for b in self.bindings.values() if b.input]
        if inputs and self.sidecar.app is not None:
            self._task = asyncio.get_running_loop().create_task(self._start_inputs(inputs))

    async def _start_inputs(self, inputs: list[BindingBinding]) -> None:
        app = self.sidecar.app
        await app.ready.wait()
        if app.protocol == "grpc":  # ListInputBindings names the bindings the app takes
            try:
                taken = await app.list_input_bindings()
            except AppUnavailable as exc:
                log.error("ListInputBindings failed (%s); no input binding started", exc)
                return
            if taken is None:
                return
        for binding in inputs:
            if app.protocol == "grpc":
                if binding.name not in taken:
                    log.info("input binding %s: the app does not list it in ListInputBindings", binding.name)
                    continue
            elif not await self._app_takes(app, binding):
                continue
            try:
                await binding.component.start(self._deliverer(binding))
            except Exception as exc:  # one binding failing to start must not stop the others
                log.exception("input binding %s failed to start", binding.name)
                if getattr(self.sidecar, "metrics", None) is not None:
                    self.sidecar.metrics.component_init_fail.inc((binding.name, type(exc).__name__))
                continue
            log.info("input binding %s delivers to %s", binding.name, binding.route)

    @staticmethod
    async def _app_takes(app, binding: BindingBinding) -> bool:
        """daprd's OPTIONS probe of an HTTP app: 2xx or 405 means the app takes the binding's events."""
        try:
            response = await app.call("OPTIONS", binding.route, [], b"", timeout=PROBE_TIMEOUT)
        except (AppUnavailable, ClientError) as exc:
            log.error("input binding %s: OPTIONS %s failed (%s); not started", binding.name, binding.route, exc)
            return False
        if 200 <= response.status < 300 or response.status == 405:
            return True
        log.info("input binding %s: the app does not take %s (%d)", binding.name, binding.route, response.status)
        return False

    def _deliverer(self, binding: BindingBinding):
        timeout = binding.inbound.timeout if binding.inbound is not None and binding.inbound.timeout else None

        async def post(data: bytes, headers: list[tuple[bytes, bytes]], metadata: dict[str, str]) -> None:
            if self.sidecar.app.protocol == "grpc":  # OnBindingEvent; an error status raises
                await self.sidecar.app.binding_event(binding.name, data, metadata, timeout=timeout or DELIVERY_TIMEOUT)
                return
            response = await self.sidecar.app.call("POST", binding.route, headers, data,
                                                   timeout=timeout or DELIVERY_TIMEOUT)
            if not 200 <= response.status < 300:
                raise Failure(response.status)

        async def deliver(data: bytes, metadata: dict[str, str]) -> bool:
            headers = [(b"Content-Type", b"application/json")]
            headers.extend((k.encode(), v.encode()) for k, v in metadata.items() if header_safe(k, v))
            try:
                if binding.inbound is None:
                    await post(data, headers, metadata)
                else:
                    await Policy(None, binding.inbound.retry, binding.inbound.breakers, binding.inbound.clock).run(
                        lambda: post(data, headers, metadata))
            except (AppUnavailable, ClientError, BreakerOpen) as exc:
                log.warning("input binding %s: delivery failed: %s", binding.name, exc)
                return False
            except Failure as exc:
                log.warning("input binding %s: the app answered %d", binding.name, exc.status)
                return False
            return True

        metrics = getattr(self.sidecar, "metrics", None)
        return deliver if metrics is None else metrics.input_binding(deliver, binding.name)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def describe(self) -> dict[str, list[str]]:
        """Capabilities per binding for the metadata API."""
        out = {}
        for name, binding in self.bindings.items():
            caps = (["INPUT_BINDING"] if binding.input else []) + (["OUTPUT_BINDING"] if binding.output else [])
            out[name] = caps
        return out
