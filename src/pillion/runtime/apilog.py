"""API logging (``--enable-api-logging``, Configuration ``spec.logging.apiLogging``): one line per call.

daprd logs each API call at info level under its own scope with the method, the path
(or, with ``obfuscateURLs``, the route template), the status, the duration and the app
id; ``omitHealthChecks`` leaves out ``/v1.0/healthz``. Pillion does the same as the
first step of the API pipeline, so the line also covers requests a later step answers.
"""

from __future__ import annotations

import logging
import time

from ..components.middleware import HttpMiddleware

log = logging.getLogger("pillion.runtime.http-info")


class ApiLogging(HttpMiddleware):
    name = "api-logging"

    def __init__(self, app_id: str, *, obfuscate_urls: bool = False, omit_health_checks: bool = False):
        self.app_id = app_id
        self.obfuscate_urls = obfuscate_urls
        self.omit_health_checks = omit_health_checks

    async def handle(self, request, next):
        started = time.perf_counter()
        status = 500
        try:
            response = await next(request)
            status = response.status
            return response
        finally:
            endpoint = request.endpoint
            if not (self.omit_health_checks and endpoint is not None and endpoint.group == "healthz"):
                path = endpoint.route if self.obfuscate_urls and endpoint is not None else request.path
                log.info("HTTP API Called: method=%s path=%s code=%d duration=%.3fms app_id=%s", request.method,
                         path, status, (time.perf_counter() - started) * 1000, self.app_id)

    def grpc_called(self, method: str, code: str, started: float) -> None:
        """The gRPC front's line for one call (``method`` is the full ``/package.Service/Method``)."""
        if self.omit_health_checks and method.endswith("/Healthz"):
            return
        log.info("gRPC API Called: method=%s code=%s duration=%.3fms app_id=%s", method, code,
                 (time.perf_counter() - started) * 1000, self.app_id)

    async def handle_app(self, call, next):
        return await next(call)


def from_settings(app_id: str, flag: bool | None, spec: dict | None) -> ApiLogging | None:
    """The middleware when API logging is on: the flag decides when given, else the Configuration."""
    settings = ((spec or {}).get("logging") or {}).get("apiLogging") or {}
    if not isinstance(settings, dict):
        settings = {}
    enabled = flag if flag is not None else _truthy(settings.get("enabled"))
    if not enabled:
        return None
    return ApiLogging(app_id, obfuscate_urls=_truthy(settings.get("obfuscateURLs")),
                      omit_health_checks=_truthy(settings.get("omitHealthChecks")))


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))
