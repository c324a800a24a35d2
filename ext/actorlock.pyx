# cython: embedsignature=True, embedsignature.format=clinic
# Clinic signatures make the methods introspectable for the parity test without binding=True.
"""Turn-based concurrency for virtual actors (Dapr §6.6); compiled twin of ``pillion._pure.actorlock``.

The pure module is the specification (rules in its docstring): same names, same grant
order, same errors. Declarations stay in this file (ext/README.md, "Sharing declarations").
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem, PyDict_DelItem
from cpython.ref cimport PyObject

from asyncio import get_running_loop as _get_running_loop
from collections import deque as _deque

from pillion.runtime.actorlock_errors import StackDepthError

__all__ = ["TurnLocks", "Turn", "StackDepthError"]

cdef object _StackDepthError = StackDepthError

cdef enum:  # Turn states
    _NEW = 0
    _WAITING = 1
    _HELD = 2
    _RELEASED = 3
    _ABANDONED = 4  # left the queue without ever holding (cancelled or closed while waiting)

cdef tuple _STATE_NAMES = ("new", "waiting", "held", "released", "abandoned")


@cython.final
@cython.freelist(64)
cdef class _Entry:
    """One held key: the holding chain's id, its nesting depth, the queue of waiters."""
    cdef object rid
    cdef Py_ssize_t depth
    cdef object waiters  # collections.deque of Turn, made on first contention
    cdef Py_ssize_t nwait


cdef inline _Entry _new_entry(object rid):
    cdef _Entry entry = _Entry.__new__(_Entry)
    entry.rid = rid
    entry.depth = 1
    return entry


@cython.final
cdef class _Done:
    """An awaitable that finishes at once with ``None`` (what ``__aexit__`` returns)."""

    def __await__(self):
        return _EXHAUSTED


cdef object _EXHAUSTED = iter(())
cdef _Done _DONE = _Done()


@cython.final
@cython.freelist(64)
cdef class Turn:
    """One acquisition of one actor key; an async context manager and, once held, the token
    that ``TurnLocks.release`` takes.

    ``depth`` is 1 for the turn that took a free key, n for the n-th nested level of the
    same reentrancy chain, 0 before the turn is held. A turn is entered at most once.
    """
    cdef TurnLocks _locks
    cdef object _key
    cdef object _rid
    cdef Py_ssize_t _depth
    cdef int _state
    cdef _Entry _entry
    cdef object _fut

    def __init__(self, TurnLocks locks not None, key, reentrancy_id=None):
        self._locks = locks
        self._key = key
        self._rid = reentrancy_id

    @property
    def key(self):
        return self._key

    @property
    def reentrancy_id(self):
        return self._rid

    @property
    def depth(self):
        return self._depth

    @property
    def state(self):
        """``"new"``, ``"waiting"``, ``"held"``, ``"released"`` or ``"abandoned"``."""
        return _STATE_NAMES[self._state]

    def __repr__(self):
        return f"<Turn key={self._key!r} reentrancy_id={self._rid!r} depth={self._depth} {self.state}>"

    async def __aenter__(self):
        """Wait for the key (no suspension when it is free or held by this chain)."""
        cdef TurnLocks locks = self._locks
        cdef _Entry entry
        if self._state != _NEW:
            raise RuntimeError(f"turn already used ({self.state})")
        if locks._enter_now(self):
            return self
        entry = self._entry
        fut = _get_running_loop().create_future()
        self._fut = fut
        self._state = _WAITING
        if entry.waiters is None:
            entry.waiters = _deque()
        entry.waiters.append(self)
        entry.nwait += 1
        try:
            await fut
        except BaseException:
            self._fut = None
            if self._state == _HELD:  # handed the key just before the cancellation: pass it on
                locks._release(self)
            elif self._state == _WAITING:  # still queued: leave (lazily; release skips it)
                self._state = _ABANDONED
                self._entry = None
                entry.nwait -= 1
            raise
        self._fut = None
        return self

    def __aexit__(self, exc_type, exc, tb):
        self._locks._release(self)
        return _DONE


@cython.final
cdef class TurnLocks:
    """Per-actor turn locks: ``async with locks.turn(key, reentrancy_id): ...``."""
    cdef dict _table
    cdef Py_ssize_t _max_depth

    def __init__(self, max_stack_depth=32):
        if type(max_stack_depth) is not int:
            raise TypeError(f"max_stack_depth must be int, not {type(max_stack_depth).__name__}")
        if max_stack_depth < 1:
            raise ValueError(f"max_stack_depth must be at least 1, not {max_stack_depth}")
        self._table = {}
        self._max_depth = max_stack_depth

    @property
    def max_stack_depth(self):
        return self._max_depth

    cdef bint _enter_now(self, Turn turn) except -1:
        """Hold ``turn`` now if possible (True); else set ``turn._entry`` to the entry (False)."""
        cdef PyObject *found = PyDict_GetItemWithError(self._table, turn._key)
        cdef _Entry entry
        if found == NULL:
            entry = _new_entry(turn._rid)
            PyDict_SetItem(self._table, turn._key, entry)
            turn._entry = entry
            turn._depth = 1
            turn._state = _HELD
            return True
        entry = <_Entry>found
        turn._entry = entry
        if turn._rid is not None and entry.rid is not None and entry.rid == turn._rid:
            if entry.depth >= self._max_depth:
                turn._entry = None
                raise _StackDepthError(turn._key, self._max_depth)
            entry.depth += 1
            turn._depth = entry.depth
            turn._state = _HELD
            return True
        return False

    cdef int _release(self, Turn turn) except -1:
        cdef _Entry entry
        cdef Turn nxt
        if turn._locks is not self:
            raise ValueError("turn belongs to another TurnLocks")
        if turn._state != _HELD:
            raise RuntimeError(f"turn is not held ({turn.state})")
        entry = turn._entry
        turn._state = _RELEASED
        turn._entry = None
        entry.depth -= 1
        if entry.depth:
            return 0
        waiters = entry.waiters
        if waiters:
            while waiters:
                nxt = <Turn>waiters.popleft()
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
                return 0
        PyDict_DelItem(self._table, turn._key)
        return 0

    def turn(self, key, reentrancy_id=None):
        """A new, not yet entered ``Turn`` for ``key``: ``async with locks.turn(key, rid) as t``."""
        cdef Turn turn = Turn.__new__(Turn)
        turn._locks = self
        turn._key = key
        turn._rid = reentrancy_id
        return turn

    def acquire(self, key, reentrancy_id=None):
        """Awaitable giving a held ``Turn``; hand that to ``release`` when done.

        Raises ``StackDepthError`` for a reentry deeper than ``max_stack_depth``.
        """
        return self.turn(key, reentrancy_id).__aenter__()

    def try_acquire(self, key, reentrancy_id=None):
        """A held ``Turn`` if the key can be entered without waiting, else ``None``.

        Never queues. Raises ``StackDepthError`` like ``acquire``.
        """
        cdef Turn turn = Turn.__new__(Turn)
        turn._locks = self
        turn._key = key
        turn._rid = reentrancy_id
        if self._enter_now(turn):
            return turn
        turn._entry = None
        return None

    def release(self, Turn turn not None):
        """End a held turn; the last level of a chain hands the key to the next waiter.

        Raises ``RuntimeError`` if ``turn`` is not held (twice, or never), ``ValueError``
        if it belongs to another ``TurnLocks``.
        """
        self._release(turn)

    def active(self):
        """Number of keys with a holder (every key in the table has one)."""
        return len(self._table)

    def waiting(self, key):
        """Number of callers queued for ``key`` (not counting reentrant levels)."""
        cdef PyObject *found = PyDict_GetItemWithError(self._table, key)
        if found == NULL:
            return 0
        return (<_Entry>found).nwait

    def holder(self, key):
        """``(reentrancy_id, depth)`` of the chain holding ``key``, or ``None`` if it is free."""
        cdef PyObject *found = PyDict_GetItemWithError(self._table, key)
        if found == NULL:
            return None
        return ((<_Entry>found).rid, (<_Entry>found).depth)
