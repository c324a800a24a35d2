"""HTTP middleware components (``middleware.http.*``) and the pipelines that run them.

A Configuration lists middleware by name in ``spec.httpPipeline`` (requests to the
sidecar's API) and ``spec.appHttpPipeline`` (calls from the sidecar into the app), as
Dapr does. Each middleware sees a request and the rest of the pipeline (``next``) and
either answers itself (a 429, say) or returns what ``next`` answers. API requests are
``server.http.Request`` objects answered by ``Response``; app calls are ``AppCall``
objects answered by the app's ``ClientResponse``. An empty pipeline is no pipeline:
``chain`` returns the handler itself, so it costs nothing per request.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Next = Callable[[Any], Awaitable[Any]]


class AppCall:
    """One call into the app, as the app pipeline sees it."""

    __slots__ = ("method", "target", "headers", "body", "timeout")

    def __init__(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes,
                 timeout: float | None = None):
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.timeout = timeout


class HttpMiddleware(abc.ABC):
    """One configured middleware component."""

    name: str

    @abc.abstractmethod
    async def handle(self, request, next: Next):
        """A request to the sidecar's API: answer it, or ``return await next(request)``."""

    @abc.abstractmethod
    async def handle_app(self, call: AppCall, next: Next):
        """A call into the app: answer it with a ClientResponse, or ``return await next(call)``."""


async def _resolved(result):
    return await result if inspect.isawaitable(result) else result


def chain(middlewares: Sequence[HttpMiddleware], handler: Callable, *, app: bool = False) -> Callable:
    """``handler`` behind ``middlewares`` (the first runs first); ``handler`` itself when there are none."""
    if not middlewares:
        return handler

    def link(middleware: HttpMiddleware, following: Callable) -> Callable:
        step = middleware.handle_app if app else middleware.handle

        async def run(request):
            return await step(request, lambda req: _resolved(following(req)))

        return run

    pipeline = handler
    for middleware in reversed(middlewares):
        pipeline = link(middleware, pipeline)
    return pipeline
