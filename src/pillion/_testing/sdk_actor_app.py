"""An actor app written against the official Dapr Python SDK (``dapr.ext.fastapi.DaprActor``), unchanged.

``python -m pillion._testing.sdk_actor_app PORT`` with ``DAPR_HTTP_PORT`` (its sidecar, for the
SDK's actor state manager, reminders and timers) and ``SDK_ACTOR_RECORD`` (a file: one JSON line per
reminder or timer fire). Needs ``dapr[fastapi]`` (FastAPI and uvicorn); nothing in the runtime imports it.

One actor type, ``DemoActor``: ``SetMyData``/``GetMyData`` keep a value in actor state;
``SetReminder(true|false)`` registers/unregisters the reminder ``demo_reminder`` (due 1 s, every 1 s)
and ``SetTimer(true|false)`` the timer ``demo_timer`` (due 0 s, every 1 s); each fire is recorded and
counted in actor state, which ``GetCounts`` returns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

from dapr.actor import Actor, ActorInterface, Remindable, actormethod

REMINDER = "demo_reminder"
TIMER = "demo_timer"


class DemoActorInterface(ActorInterface):
    @actormethod(name="GetMyData")
    async def get_my_data(self) -> object: ...

    @actormethod(name="SetMyData")
    async def set_my_data(self, data: object) -> None: ...

    @actormethod(name="SetReminder")
    async def set_reminder(self, enabled: bool) -> None: ...

    @actormethod(name="SetTimer")
    async def set_timer(self, enabled: bool) -> None: ...

    @actormethod(name="GetCounts")
    async def get_counts(self) -> dict: ...


def _record(entry: dict) -> None:
    path = os.environ.get("SDK_ACTOR_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


class DemoActor(Actor, DemoActorInterface, Remindable):
    async def _on_activate(self) -> None:
        _record({"kind": "activate", "id": self.id.id, "at": time.time()})

    async def _on_deactivate(self) -> None:
        _record({"kind": "deactivate", "id": self.id.id, "at": time.time()})

    async def get_my_data(self) -> object:
        found, value = await self._state_manager.try_get_state("mydata")
        return value if found else None

    async def set_my_data(self, data: object) -> None:
        await self._state_manager.set_state("mydata", data)
        await self._state_manager.save_state()

    async def set_reminder(self, enabled: bool) -> None:
        if enabled:
            await self.register_reminder(REMINDER, b"reminder-state", due_time=timedelta(seconds=1),
                                         period=timedelta(seconds=1))  # fmt: skip
        else:
            await self.unregister_reminder(REMINDER)

    async def set_timer(self, enabled: bool) -> None:
        if enabled:
            await self.register_timer(TIMER, self.timer_callback, {"from": self.id.id}, due_time=timedelta(seconds=0),
                                      period=timedelta(seconds=1))  # fmt: skip
        else:
            await self.unregister_timer(TIMER)

    async def get_counts(self) -> dict:
        return {key: await self._count(key) for key in ("reminder", "timer")}

    async def _count(self, key: str) -> int:
        found, value = await self._state_manager.try_get_state(f"{key}_count")
        return value if found else 0

    async def _bump(self, key: str) -> None:
        await self._state_manager.set_state(f"{key}_count", await self._count(key) + 1)
        await self._state_manager.save_state()

    async def timer_callback(self, state) -> None:
        _record({"kind": "timer", "id": self.id.id, "state": state, "at": time.time()})
        await self._bump("timer")

    async def receive_reminder(self, name: str, state: bytes, due_time: timedelta, period: timedelta,
                               ttl: timedelta | None = None) -> None:  # fmt: skip
        _record({"kind": "reminder", "id": self.id.id, "name": name, "state": state.decode(errors="replace"),
                 "due_time": str(due_time), "period": str(period), "at": time.time()})  # fmt: skip
        await self._bump("reminder")


def create_app():
    from contextlib import asynccontextmanager

    from dapr.ext.fastapi import DaprActor
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app):
        await actor.register_actor(DemoActor)  # before serving, so /dapr/config lists DemoActor
        yield

    app = FastAPI(title="pillion sdk actor app", lifespan=lifespan)
    actor = DaprActor(app)
    return app


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
