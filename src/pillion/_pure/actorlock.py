"""Turn-based concurrency for virtual actors (Dapr §6.6); the pure twin and specification.

``pillion._ext.actorlock`` is the compiled twin: same names, same signatures, same grant
order, same errors. Use it through ``pillion.runtime.actorlock``.

One table maps an actor key (any hashable, e.g. ``"type||id"``) to an entry that exists
only while someone holds that actor's lock: created by the first acquire, removed by the
release that leaves no holder and no live waiter. An actor nobody calls costs nothing.

Rules (the contract both twins follow):

* One chain at a time holds a key. A caller whose ``reentrancy_id`` is not ``None`` and
  equals the holder's enters at once, ahead of any queue, one level deeper; going past
  ``max_stack_depth`` levels raises ``StackDepthError`` and changes nothing.
* Everyone else waits in FIFO order. ``release`` of the last level of a chain hands the
  key straight to the first live waiter (ownership moves at release time, so a caller
  arriving before that waiter runs queues behind it; no barging). Only that waiter is
  woken, even if others in the queue carry the same ``reentrancy_id``: they keep their
  place and enter when their turn comes.
* The uncontended path (free key, or reentry) creates no Future and no Task: ``Turn`` is
  its own awaitable context manager and finishes without suspending. Only a caller that
  has to wait creates one Future.
* A waiter cancelled (or closed) while queued leaves the queue; one cancelled after the
  key was handed to it but before it ran passes the key on to the next waiter. A
  holder leaving ``async with`` by an exception releases.
"""

from __future__ import annotations

from asyncio import get_running_loop
from collections import deque

from pillion.runtime.actorlock_errors import StackDepthError

__all__ = ["TurnLocks", "Turn", "StackDepthError"]

# Turn states
_NEW = 0
_WAITING = 1
_HELD = 2
_RELEASED = 3
_ABANDONED = 4  # left the queue without ever holding (cancelled or closed while waiting)

_STATE_NAMES = ("new", "waiting", "held", "released", "abandoned")


class _Entry:
    """One held key: the holding chain's id, its nesting depth, the queue of waiters."""

    __slots__ = ("rid", "depth", "waiters", "nwait")

    def __init__(self, rid) -> None:
        self.rid = rid
        self.depth = 1
        self.waiters = None  # deque of Turn, made on first contention; may hold abandoned turns
        self.nwait = 0  # live (still waiting) turns in ``waiters``


class _Done:
    """An awaitable that finishes at once with ``None`` (what ``__aexit__`` returns)."""

    __slots__ = ()

    def __await__(self):
        return _EXHAUSTED


_EXHAUSTED = iter(())  # always exhausted: awaiting it yields nothing and returns None
_DONE = _Done()


class Turn:
    """One acquisition of one actor key; an async context manager and, once held, the token
    that ``TurnLocks.release`` takes.

    ``depth`` is 1 for the turn that took a free key, n for the n-th nested level of the
    same reentrancy chain, 0 before the turn is held. A turn is entered at most once.
    """

    __slots__ = ("_locks", "_key", "_rid", "_depth", "_state", "_entry", "_fut")

    def __init__(self, locks: "TurnLocks", key, reentrancy_id: str | None = None) -> None:
        if type(locks) is not TurnLocks:
            raise TypeError(f"locks must be TurnLocks, not {type(locks).__name__}")
        self._locks = locks
        self._key = key
        self._rid = reentrancy_id
        self._depth = 0
        self._state = _NEW
        self._entry = None
        self._fut = None

    @property
    def key(self):
        return self._key

    @property
    def reentrancy_id(self):
        return self._rid

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def state(self) -> str:
        """``"new"``, ``"waiting"``, ``"held"``, ``"released"`` or ``"abandoned"``."""
        return _STATE_NAMES[self._state]

    def __repr__(self) -> str:
        return f"<Turn key={self._key!r} reentrancy_id={self._rid!r} depth={self._depth} {self.state}>"

    async def __aenter__(self) -> "Turn":
        """Wait for the key (no suspension when it is free or held by this chain)."""
        locks = self._locks
        if self._state != _NEW:
            raise RuntimeError(f"turn already used ({self.state})")
        key = self._key
        entry = locks._table.get(key)
        if entry is None:
            locks._table[key] = self._entry = _Entry(self._rid)
            self._depth = 1
            self._state = _HELD
            return self
        if self._rid is not None and entry.rid == self._rid:
            if entry.depth >= locks._max_depth:
                raise StackDepthError(key, locks._max_depth)
            entry.depth += 1
            self._depth = entry.depth
            self._entry = entry
            self._state = _HELD
            return self
        fut = get_running_loop().create_future()
        self._fut = fut
        self._entry = entry
        self._state = _WAITING
        if entry.waiters is None:
            entry.waiters = deque()
        entry.waiters.append(self)
        entry.nwait += 1
        try:
            await fut
        except BaseException:
            self._fut = None
            if self._state == _HELD:  # handed the key just before the cancellation: pass it on
                locks.release(self)
            elif self._state == _WAITING:  # still queued: leave (lazily; release skips it)
                self._state = _ABANDONED
                self._entry = None
                entry.nwait -= 1
            raise
        self._fut = None
        return self

    def __aexit__(self, exc_type, exc, tb):
        self._locks.release(self)
        return _DONE


class TurnLocks:
    """Per-actor turn locks: ``async with locks.turn(key, reentrancy_id): ...``."""

    __slots__ = ("_table", "_max_depth")

    def __init__(self, max_stack_depth: int = 32) -> None:
        if type(max_stack_depth) is not int:
            raise TypeError(f"max_stack_depth must be int, not {type(max_stack_depth).__name__}")
        if max_stack_depth < 1:
            raise ValueError(f"max_stack_depth must be at least 1, not {max_stack_depth}")
        self._table = {}
        self._max_depth = max_stack_depth

    @property
    def max_stack_depth(self) -> int:
        return self._max_depth

    def turn(self, key, reentrancy_id: str | None = None) -> Turn:
        """A new, not yet entered ``Turn`` for ``key``: ``async with locks.turn(key, rid) as t``."""
        return Turn(self, key, reentrancy_id)

    def acquire(self, key, reentrancy_id: str | None = None):
        """Awaitable giving a held ``Turn``; hand that to ``release`` when done.

        Raises ``StackDepthError`` for a reentry deeper than ``max_stack_depth``.
        """
        return Turn(self, key, reentrancy_id).__aenter__()

    def try_acquire(self, key, reentrancy_id: str | None = None) -> Turn | None:
        """A held ``Turn`` if the key can be entered without waiting, else ``None``.

        Never queues. Raises ``StackDepthError`` like ``acquire``.
        """
        entry = self._table.get(key)
        turn = Turn(self, key, reentrancy_id)
        if entry is None:
            self._table[key] = turn._entry = _Entry(reentrancy_id)
        elif reentrancy_id is not None and entry.rid == reentrancy_id:
            if entry.depth >= self._max_depth:
                raise StackDepthError(key, self._max_depth)
            entry.depth += 1
            turn._entry = entry
        else:
            return None
        turn._depth = turn._entry.depth
        turn._state = _HELD
        return turn

    def release(self, turn: Turn) -> None:
        """End a held turn; the last level of a chain hands the key to the next waiter.

        Raises ``RuntimeError`` if ``turn`` is not held (twice, or never), ``ValueError``
        if it belongs to another ``TurnLocks``.
        """
        if type(turn) is not Turn:
            raise TypeError(f"turn must be Turn, not {type(turn).__name__}")
        if turn._locks is not self:
            raise ValueError("turn belongs to another TurnLocks")
        if turn._state != _HELD:
            raise RuntimeError(f"turn is not held ({turn.state})")
        entry = turn._entry
        turn._state = _RELEASED
        turn._entry = None
        entry.depth -= 1
        if entry.depth:
            return
        waiters = entry.waiters
        if waiters:
            while waiters:
                nxt = waiters.popleft()
                if nxt._state != _WAITING:
                    continue  # abandoned while queued
                entry.nwait -= 1
                fut = nxt._fut
                if fut.done():  # its task was cancelled; the CancelledError is on its way
                    nxt._state = _ABANDONED
                    nxt._entry = None
                    continue
                entry.rid = nxt._rid
                entry.depth = 1
                nxt._depth = 1
                nxt._state = _HELD
                fut.set_result(None)
                return
        del self._table[turn._key]

    def active(self) -> int:
        """Number of keys with a holder (every key in the table has one)."""
        return len(self._table)

    def waiting(self, key) -> int:
        """Number of callers queued for ``key`` (not counting reentrant levels)."""
        entry = self._table.get(key)
        return 0 if entry is None else entry.nwait

    def holder(self, key) -> tuple | None:
        """``(reentrancy_id, depth)`` of the chain holding ``key``, or ``None`` if it is free."""
        entry = self._table.get(key)
        return None if entry is None else (entry.rid, entry.depth)
