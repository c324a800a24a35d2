"""Virtual actors in one process: no placement service, no scheduler service.

Every actor type the app names in ``GET /dapr/config`` is hosted here. A call takes the
actor's turn (``actorlock``: FIFO, reentrancy per type, nothing kept for idle actors),
then ``PUT /actors/{type}/{id}/method/{method}`` on the app, whatever the client's verb.
The active table maps each actor to its last use; one periodic scan (not a timer per
actor) deactivates the idle ones with ``DELETE /actors/{type}/{id}``.

Reminders live in LMDB (``reminders.ReminderStore``) and in one scheduler heap with one
loop timer; a reminder due while the sidecar was down fires once at start. Timers live
in memory, one loop timer handle each, and end with their actor.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson

from ..config.durations import parse_duration
from ..errors import DaprError
from ..server.client import ClientError
from .actorlock import StackDepthError, TurnLocks
from .app_channel import AppUnavailable

log = logging.getLogger("pillion.runtime.actors")

DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_DRAIN_TIMEOUT = 60.0
SCAN_INTERVAL = 10.0  # seconds between idle scans
CALL_TIMEOUT = 300.0
_FORWARDED = {b"content-type", b"traceparent", b"tracestate", b"dapr-reentrancy-id"}


@dataclass
class TypeConfig:
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    reentrancy: bool = False
    max_stack_depth: int = 32


@dataclass
class ActorConfig:
    """What the app's ``GET /dapr/config`` says (durations as Go durations)."""

    types: dict[str, TypeConfig] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data) -> ActorConfig:
        if not isinstance(data, dict):
            return cls()
        base = _type_config(data, TypeConfig())
        types = {name: base for name in data.get("entities") or [] if isinstance(name, str)}
        for entry in data.get("entitiesConfig") or []:
            if isinstance(entry, dict):
                specific = _type_config(entry, base)
                for name in entry.get("entities") or []:
                    if name in types:
                        types[name] = specific
        return cls(types)


def _type_config(data: dict, base: TypeConfig) -> TypeConfig:
    def seconds(key: str, default: float) -> float:
        text = data.get(key)
        if not isinstance(text, str) or not text:
            return default
        try:
            return parse_duration(text)
        except ValueError:
            log.warning("/dapr/config: %s %r is not a Go duration; using %s s", key, text, default)
            return default

    reentrancy = data.get("reentrancy") if isinstance(data.get("reentrancy"), dict) else {}
    depth = reentrancy.get("maxStackDepth")
    return TypeConfig(
        idle_timeout=seconds("actorIdleTimeout", base.idle_timeout),
        drain_timeout=seconds("drainOngoingCallTimeout", base.drain_timeout),
        reentrancy=bool(reentrancy.get("enabled", base.reentrancy)),
        max_stack_depth=depth if isinstance(depth, int) and depth > 0 else base.max_stack_depth,
    )


def actor_key(actor_type: str, actor_id: str) -> str:
    return f"{actor_type}||{actor_id}"


class Actors:
    """The sidecar's actor runtime; ``start`` once the app is ready."""

    def __init__(self, sidecar) -> None:
        self.sidecar = sidecar
        self.config = ActorConfig()
        self.ready = asyncio.Event()
        self.locks: dict[str, TurnLocks] = {}  # per actor type: its own reentrancy depth
        self.active: dict[tuple[str, str], float] = {}  # (type, id) -> last use (loop time)
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._scan: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self.reminders = None  # runtime.reminders wiring, set in start()

    # -- start-up ------------------------------------------------------------------------

    def start(self) -> None:
        if self.sidecar.app is not None:
            self._task = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        app = self.sidecar.app
        await app.ready.wait()
        try:
            response = await app.call("GET", "/dapr/config", [(b"dapr-app-id", self.sidecar.app_id.encode())], b"",
                                      timeout=10.0)  # fmt: skip
            data = orjson.loads(response.body) if response.status == 200 and response.body else None
        except (AppUnavailable, ClientError, orjson.JSONDecodeError) as exc:
            log.warning("GET /dapr/config failed (%s): no actors", exc)
            data = None
        self.config = ActorConfig.from_json(data)
        self.locks = {name: TurnLocks(t.max_stack_depth) for name, t in self.config.types.items()}
        if self.config.types:
            log.info("hosting actor types: %s", ", ".join(sorted(self.config.types)))
            self._scan = asyncio.get_running_loop().call_later(self._scan_every(), self._scan_idle)
        self.ready.set()

    def hosts(self, actor_type: str) -> bool:
        return actor_type in self.config.types

    def state_store(self):
        """The state store marked ``actorStateStore: "true"``, or None."""
        for binding in self.sidecar.state_stores.values():
            if "ACTOR" in {str(f) for f in binding.store.features()}:
                return binding
        return None

    # -- calls ---------------------------------------------------------------------------

    def _touch(self, actor_type: str, actor_id: str) -> None:
        self.active[(actor_type, actor_id)] = asyncio.get_running_loop().time()

    async def call(self, actor_type: str, actor_id: str, suffix: str, body: bytes,
                   headers: list[tuple[bytes, bytes]], query: str = ""):
        """``PUT /actors/{type}/{id}/{suffix}`` on the app within the actor's turn."""
        if not self.hosts(actor_type):
            raise DaprError("ERR_ACTOR_INVOKE_METHOD",
                            f"error invoke actor method: did not find address for actor {actor_type}/{actor_id}")
        settings = self.config.types[actor_type]
        forwarded = [(k, v) for k, v in headers if k.lower() in _FORWARDED]
        reentrancy_id = None
        if settings.reentrancy:
            reentrancy_id = next((v.decode() for k, v in forwarded if k.lower() == b"dapr-reentrancy-id"), None)
            if reentrancy_id is None:
                from .. import cloudevents

                reentrancy_id = cloudevents.new_id()
                forwarded.append((b"Dapr-Reentrancy-Id", reentrancy_id.encode()))
        target = f"/actors/{actor_type}/{actor_id}/{suffix}" + (f"?{query}" if query else "")
        try:
            async with self.locks[actor_type].turn(actor_key(actor_type, actor_id), reentrancy_id):
                self._touch(actor_type, actor_id)
                try:
                    return await self.sidecar.app.call("PUT", target, forwarded, body, timeout=CALL_TIMEOUT)
                finally:
                    self._touch(actor_type, actor_id)
        except StackDepthError:
            raise DaprError("ERR_ACTOR_STACK_DEPTH", "maximum stack depth exceeded") from None
        except (AppUnavailable, ClientError) as exc:
            raise DaprError("ERR_ACTOR_INVOKE_METHOD", f"error invoke actor method: {exc}") from None

    # -- idle deactivation -----------------------------------------------------------------

    def _scan_idle(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for (actor_type, actor_id), last in list(self.active.items()):
            settings = self.config.types.get(actor_type)
            if settings is not None and now - last >= settings.idle_timeout \
                    and self.locks[actor_type].holder(actor_key(actor_type, actor_id)) is None:
                del self.active[(actor_type, actor_id)]
                loop.create_task(self.deactivate(actor_type, actor_id))
        self._scan = loop.call_later(self._scan_every(), self._scan_idle)

    def _scan_every(self) -> float:
        """Often enough that an actor outlives its idle timeout by at most half of it."""
        shortest = min((t.idle_timeout for t in self.config.types.values()), default=SCAN_INTERVAL * 2)
        return max(0.1, min(SCAN_INTERVAL, shortest / 2))

    async def deactivate(self, actor_type: str, actor_id: str) -> None:
        """``DELETE /actors/{type}/{id}`` on the app; the actor's timers end."""
        self.active.pop((actor_type, actor_id), None)
        for key in [k for k in self._timers if k[:2] == (actor_type, actor_id)]:
            self._timers.pop(key).cancel()
        try:
            response = await self.sidecar.app.call("DELETE", f"/actors/{actor_type}/{actor_id}", [], b"",
                                                   timeout=10.0)  # fmt: skip
            if response.status != 200:
                log.warning("deactivating %s/%s: the app answered %d", actor_type, actor_id, response.status)
        except (AppUnavailable, ClientError) as exc:
            log.warning("deactivating %s/%s failed: %s", actor_type, actor_id, exc)

    # -- timers (in memory) ---------------------------------------------------------------

    def timer_set(self, actor_type: str, actor_id: str, name: str, fire_at: float, fire) -> None:
        """``fire`` runs at loop time ``fire_at`` (replacing a timer of the same name)."""
        key = (actor_type, actor_id, name)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_at(fire_at, lambda: loop.create_task(fire()))

    def timer_delete(self, actor_type: str, actor_id: str, name: str) -> None:
        handle = self._timers.pop((actor_type, actor_id, name), None)
        if handle is not None:
            handle.cancel()

    # -- shutdown and metadata --------------------------------------------------------------

    async def stop(self) -> None:
        """Deactivate every active actor (the app gets its DELETEs), cancel timers."""
        if self._scan is not None:
            self._scan.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.reminders is not None:
            await self.reminders.close()
        actors = list(self.active)
        if actors:
            await asyncio.gather(*(self.deactivate(t, i) for t, i in actors), return_exceptions=True)

    def describe(self) -> list[dict]:
        counts: dict[str, int] = {name: 0 for name in self.config.types}
        for actor_type, _ in self.active:
            counts[actor_type] = counts.get(actor_type, 0) + 1
        return [{"type": name, "count": count} for name, count in sorted(counts.items())]

    def runtime_status(self) -> dict:
        """As daprd's metadata says it; DISABLED while the app hosts no actor type."""
        if self.sidecar.app is not None and not self.ready.is_set():
            return {"runtimeStatus": "INITIALIZING", "hostReady": False, "placement": ""}
        if not self.config.types:
            return {"runtimeStatus": "DISABLED", "hostReady": False, "placement": ""}
        return {"runtimeStatus": "RUNNING", "hostReady": True, "activeActors": self.describe(),
                "placement": "in-process (no placement service)"}

