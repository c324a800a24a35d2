"""Facade over the actor turn lock twins (Dapr §6.6 turn-based concurrency and reentrancy).

``TurnLocks`` and ``Turn`` come from ``pillion._ext.actorlock`` unless it is missing or
``PILLION_NO_EXTENSIONS`` is set; ``StackDepthError`` (``ERR_ACTOR_STACK_DEPTH``) is the
one both twins raise. The rules are in ``pillion._pure.actorlock``.

    locks = TurnLocks(max_stack_depth=32)
    async with locks.turn(f"{actor_type}||{actor_id}", reentrancy_id):
        ...  # call the app
"""

from __future__ import annotations

from pillion._impl import load
from pillion.runtime.actorlock_errors import StackDepthError

_impl = load("actorlock")

TurnLocks = _impl.TurnLocks
Turn = _impl.Turn

__all__ = ["TurnLocks", "Turn", "StackDepthError"]
