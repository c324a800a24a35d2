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
import os
import time
from dataclasses import dataclass, field

import orjson

from ..config.durations import parse_duration
from ..errors import DaprError
from ..server.client import ClientError
from .actorlock import StackDepthError, TurnLocks
from .app_channel import AppUnavailable
from .reminders import Reminder, ReminderStore, Scheduler, StoreInUse
from .resiliency import AttemptTimeout, BreakerOpen, Failure, Policy

log = logging.getLogger("pillion.runtime.actors")

DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_DRAIN_TIMEOUT = 60.0
SCAN_INTERVAL = 10.0  # seconds between idle scans
CALL_TIMEOUT = 300.0
REMINDER_RETRY = 5.0  # seconds before a reminder whose callback failed fires again
_FORWARDED = {b"content-type", b"traceparent", b"tracestate", b"baggage", b"dapr-reentrancy-id"}


@dataclass
class TypeConfig:
    call_timeout: float = CALL_TIMEOUT  # a Resiliency timeout policy on the actor type replaces it
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


def _callback_body(reminder: Reminder, callback: str | None = None) -> bytes:
    """What the app's remind/timer method gets: the data as registered (raw JSON), due time, period."""
    fields = {"dueTime": reminder.due_time, "period": reminder.period}
    if callback is not None:
        fields = {"callback": callback, **fields}
    body = orjson.dumps(fields)
    if reminder.data is None:
        return body
    return b'{"data":' + reminder.data.encode() + b"," + body[1:]


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
        self._timers: dict[tuple[str, str, str], tuple[asyncio.TimerHandle, Reminder]] = {}
        self._scan: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self.reminder_store: ReminderStore | None = None
        self.scheduler: Scheduler | None = None

    # -- start-up ------------------------------------------------------------------------

    def start(self) -> None:
        if self.sidecar.app is not None:
            self._task = asyncio.get_running_loop().create_task(self._start())
        else:
            self.ready.set()  # no app, no actor types

    async def _start(self) -> None:
        app = self.sidecar.app
        await app.ready.wait()
        if app.protocol == "grpc":  # daprd asks only HTTP apps for their actor types
            log.info("the app speaks gRPC: it hosts no actors (actors need --app-protocol http)")
            self.config = ActorConfig.from_json(None)
            self.locks = {}
            self.ready.set()
            return
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
            self._open_reminders()
        self.ready.set()

    def _open_reminders(self) -> None:
        """Reminders from LMDB into the one scheduler; one due while we were down fires now, once."""
        path = os.path.join(os.path.expanduser(self.sidecar.options.data_dir), "reminders", self.sidecar.app_id)
        try:
            self.reminder_store = ReminderStore(path)
        except StoreInUse as exc:
            log.error("reminders are not available: %s", exc)
            return
        self.scheduler = Scheduler(self._fire_reminder)
        count = 0
        for key, due in self.reminder_store.iter_schedule():
            self.scheduler.add(key, due)
            count += 1
        if count:
            log.info("%d reminder(s) restored", count)

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
        if (actor_type, actor_id) not in self.active and getattr(self.sidecar, "metrics", None) is not None:
            self.sidecar.metrics.actor_activated.inc((actor_type,))
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
        policy = self.sidecar.resiliency.actor(actor_type, actor_id)
        timeout = settings.call_timeout if policy is None or policy.timeout is None else policy.timeout
        try:
            if policy is None:
                return await asyncio.wait_for(
                    self._in_turn(actor_type, actor_id, reentrancy_id, target, forwarded, body), timeout)

            async def attempt():
                response = await self._in_turn(actor_type, actor_id, reentrancy_id, target, forwarded, body)
                if response.status >= 400:
                    raise Failure(response.status, response)
                return response

            return await Policy(timeout, policy.retry, policy.breakers, policy.clock).run(attempt, StackDepthError)
        except Failure as exc:
            return exc.result  # the app's own answer, once no retry is left
        except (asyncio.TimeoutError, AttemptTimeout):
            raise DaprError("ERR_ACTOR_INVOKE_METHOD", "error invoke actor method: context deadline exceeded "
                            f"({timeout:g} s, waiting for the actor's turn included)") from None
        except BreakerOpen as exc:
            raise DaprError("ERR_ACTOR_INVOKE_METHOD", f"error invoke actor method: {exc}") from None
        except StackDepthError:
            raise DaprError("ERR_ACTOR_STACK_DEPTH", "maximum stack depth exceeded") from None
        except (AppUnavailable, ClientError) as exc:
            raise DaprError("ERR_ACTOR_INVOKE_METHOD", f"error invoke actor method: {exc}") from None

    async def _in_turn(self, actor_type: str, actor_id: str, reentrancy_id: str | None, target: str,
                       headers: list[tuple[bytes, bytes]], body: bytes):
        async with self.locks[actor_type].turn(actor_key(actor_type, actor_id), reentrancy_id):
            self._touch(actor_type, actor_id)
            try:
                return await self.sidecar.app.call("PUT", target, headers, body)
            finally:
                self._touch(actor_type, actor_id)

    # -- reminders (LMDB) and timers (memory) --------------------------------------------------

    def reminders(self):
        if self.reminder_store is None or self.scheduler is None:
            raise DaprError("ERR_ACTOR_RUNTIME_NOT_FOUND", "actor runtime is not ready: reminders are not available")
        return self.reminder_store

    async def set_reminder(self, reminder: Reminder) -> None:
        await self.reminders().save(reminder)
        self.scheduler.add(reminder.key, reminder.next_due)

    async def delete_reminder(self, key: str) -> None:
        await self.reminders().delete(key)
        self.scheduler.remove(key)

    async def _fire_reminder(self, key: str) -> None:
        reminder = self.reminder_store.get(key) if self.reminder_store is not None else None
        if reminder is None:
            return
        body = _callback_body(reminder)
        try:
            response = await self.call(reminder.actor_type, reminder.actor_id, f"method/remind/{reminder.name}", body,
                                       [(b"Content-Type", b"application/json")])  # fmt: skip
            cancel = (response.header(b"x-daprremindercancel") or b"").lower() == b"true"
        except DaprError as exc:
            log.warning("reminder %s failed (%s); trying again in %.0f s", key, exc, REMINDER_RETRY)
            self.scheduler.add(key, time.time() + REMINDER_RETRY)
            return
        current = self.reminder_store.get(key)
        if current is None or current.created != reminder.created:
            return  # deleted or registered anew while its callback ran
        if not cancel and reminder.advance(time.time()):
            await self.reminder_store.save(reminder)
            self.scheduler.add(key, reminder.next_due)
        else:
            await self.reminder_store.delete(key)

    def set_timer(self, timer: Reminder, callback: str) -> None:
        """An in-memory timer; it fires like a reminder, at ``method/timer/{name}``."""
        self.delete_timer(timer.actor_type, timer.actor_id, timer.name)
        self._touch(timer.actor_type, timer.actor_id)
        self._arm_timer(timer, callback)

    def _arm_timer(self, timer: Reminder, callback: str) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + max(0.0, timer.next_due - time.time()),
                              lambda: loop.create_task(self._fire_timer(timer, callback)))  # fmt: skip
        self._timers[(timer.actor_type, timer.actor_id, timer.name)] = (handle, timer)

    async def _fire_timer(self, timer: Reminder, callback: str) -> None:
        key = (timer.actor_type, timer.actor_id, timer.name)
        try:
            await self.call(timer.actor_type, timer.actor_id, f"method/timer/{timer.name}",
                            _callback_body(timer, callback), [(b"Content-Type", b"application/json")])  # fmt: skip
        except DaprError as exc:
            log.warning("timer %s/%s/%s failed: %s", *key, exc)
        entry = self._timers.get(key)
        if entry is None or entry[1] is not timer:
            return  # deleted or replaced while its callback ran
        if timer.advance(time.time()):
            self._arm_timer(timer, callback)
        else:
            del self._timers[key]

    def delete_timer(self, actor_type: str, actor_id: str, name: str) -> None:
        entry = self._timers.pop((actor_type, actor_id, name), None)
        if entry is not None:
            entry[0].cancel()

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
        if getattr(self.sidecar, "metrics", None) is not None:
            self.sidecar.metrics.actor_deactivated.inc((actor_type,))
        for key in [k for k in self._timers if k[:2] == (actor_type, actor_id)]:
            self.delete_timer(*key)
        try:
            response = await self.sidecar.app.call("DELETE", f"/actors/{actor_type}/{actor_id}", [], b"",
                                                   timeout=10.0)  # fmt: skip
            if response.status != 200:
                log.warning("deactivating %s/%s: the app answered %d", actor_type, actor_id, response.status)
        except (AppUnavailable, ClientError) as exc:
            log.warning("deactivating %s/%s failed: %s", actor_type, actor_id, exc)

    # -- shutdown and metadata --------------------------------------------------------------

    async def stop(self) -> None:
        """Deactivate every active actor (the app gets its DELETEs), cancel timers."""
        if self._scan is not None:
            self._scan.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for key in list(self._timers):
            self.delete_timer(*key)
        if self.scheduler is not None:
            self.scheduler.close()
        if self.reminder_store is not None:
            await self.reminder_store.aclose()
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

