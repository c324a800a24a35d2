"""Broker persistence: retained messages and persistent sessions in one LMDB environment.

The core stays sans-IO: while it handles packets it appends changes to a ``Journal``
(plain tuples, already encoded). The asyncio edge (``Persistence``) hands each
journal batch to one writer thread, which applies it in one write transaction and
one fsync, then tells the loop which batch is durable. Sessions hold the PUBACK or
PUBREC of a message whose routing wrote to the journal until that batch is durable,
so an acknowledged QoS 1/2 message survives ``kill -9``. While one batch commits the
next one collects, so a busy broker pays one fsync per batch, not per message.

Layout (three named databases):

- ``retained``: topic -> message record;
- ``sessions``: client id -> JSON (expiry, subscriptions, inbound QoS 2 packet ids);
- ``messages``: client id, NUL, 8-byte big-endian sequence -> message record, in
  delivery order per client (MQTT strings never contain NUL, so the prefix is exact).

A message record is a fixed header (state, packet id, wall-clock expiry or 0) and the
message encoded as an MQTT 5 PUBLISH, so topics, payloads and properties round-trip
through the codec that already handles them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import lmdb
import orjson

from ..runtime import memory as _memory
from . import codec
from .packets import Publish

log = logging.getLogger("pillion.broker.store")

# Message states in a record.
QUEUED = 0  # waiting for the window, no packet id yet
INFLIGHT = 1  # PUBLISH sent with ``packet_id``, not yet acknowledged
RELEASING = 2  # QoS 2: PUBREC received, PUBREL sent with ``packet_id``

_HEADER = struct.Struct(">BHd")  # state, packet id, message expiry as time.time() (0: none)
_SEQ = struct.Struct(">Q")

DB_RETAINED = b"retained"
DB_SESSIONS = b"sessions"
DB_MESSAGES = b"messages"
DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE = _memory.lmdb_map_sizes("broker")  # 64 MiB / 4 GiB on 64-bit

# Journal operations: (op, key[, value]).
PUT_RETAINED, DEL_RETAINED, PUT_SESSION, DEL_SESSION, PUT_MESSAGE, DEL_MESSAGE = range(6)


def encode_message(message: Publish | None, state: int = QUEUED, packet_id: int = 0, expires: float = 0.0) -> bytes:
    """A message record; ``message`` may be None for a RELEASING record (no body needed)."""
    header = _HEADER.pack(state, packet_id or 0, expires)
    if message is None:
        return header
    wire = Publish(message.topic, message.payload, message.qos, message.retain, False,
                   1 if message.qos else None, message.properties)  # fmt: skip
    return header + codec.encode(wire, 5)


def decode_message(record: bytes) -> tuple[int, int, float, Publish | None]:
    """``(state, packet_id, expires, message)``; raises ValueError for a damaged record."""
    if len(record) < _HEADER.size:
        raise ValueError("message record shorter than its header")
    state, packet_id, expires = _HEADER.unpack_from(record)
    body = memoryview(record)[_HEADER.size:]
    if not body:
        return state, packet_id, expires, None
    message, used = codec.decode(body, 5, len(body))
    if not isinstance(message, Publish) or used != len(body):
        raise ValueError("message record does not hold exactly one PUBLISH")
    message.packet_id = packet_id or None
    return state, packet_id, expires, message


def message_key(client_id: str, seq: int) -> bytes:
    return client_id.encode() + b"\0" + _SEQ.pack(seq)


def _bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


class Journal:
    """Changes the core made since the last ``take``; sans-IO.

    ``batch`` numbers the batch being collected; ``durable`` is the highest batch the
    store has committed. A session that must hold an acknowledgement until its writes
    are on disk tags it with ``batch`` and registers in ``waiting``. ``wall_offset``
    turns the core's clock into ``time.time()`` for message expiry on disk.

    A message queued and acknowledged within one batch never reaches the disk: its
    deletion turns the batch's writes of that key into ``None`` (skipped by the store),
    which spares a busy broker most of its writes to fast consumers.
    """

    __slots__ = ("ops", "batch", "durable", "waiting", "notify", "wall_offset", "_fresh")

    def __init__(self, wall_offset: float = 0.0) -> None:
        self.wall_offset = wall_offset
        self.ops: list[tuple | None] = []
        self.batch = 1
        self.durable = 0
        self.waiting: set = set()
        self.notify: Callable[[], None] | None = None
        self._fresh: dict[bytes, list[int]] = {}  # message key first written in this batch -> its ops

    def add(self, op: int, key: str | bytes, value: bytes | None = None) -> None:
        if not self.ops and self.notify is not None:
            self.notify()
        if op == PUT_MESSAGE:
            if value[0] == QUEUED:
                self._fresh[key] = [len(self.ops)]
            elif key in self._fresh:
                self._fresh[key].append(len(self.ops))
        elif op == DEL_MESSAGE:
            indexes = self._fresh.pop(key, None)
            if indexes is not None:
                for index in indexes:
                    self.ops[index] = None
                return
        self.ops.append((op, key, value))

    def take(self) -> tuple[list[tuple | None], int]:
        """The collected batch and its number; collection moves to the next batch."""
        ops, self.ops = self.ops, []
        self._fresh = {}
        batch = self.batch
        self.batch += 1
        return ops, batch

    def committed(self, batch: int) -> set:
        """``batch`` is durable; returns the sessions that may now release acknowledgements."""
        self.durable = max(self.durable, batch)
        waiting, self.waiting = self.waiting, set()
        return waiting


@dataclass
class StoredSession:
    client_id: str
    record: dict
    messages: list[tuple[int, int, int, float, Publish | None]] = field(default_factory=list)
    # (seq, state, packet_id, expires, message)


@dataclass
class Restored:
    retained: dict[str, tuple[float, Publish]]
    sessions: dict[str, StoredSession]
    # Journal ops that delete what could not be decoded (logged; ``Broker.restore`` runs them).
    garbage: list[tuple[int, bytes, None]] = field(default_factory=list)


class StoreInUse(OSError):
    """Another broker process owns this directory; two brokers must not share sessions."""


class BrokerStore:
    """The LMDB environment, owned by one process (an exclusive ``flock`` on ``owner.lock``).

    ``load`` runs once at start, ``apply`` on the writer thread.
    """

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = DEFAULT_MAX_MAP_SIZE,
                 sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.max_map_size = max(map_size, max_map_size)
        self._owner = os.open(os.path.join(path, "owner.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._owner)
            raise StoreInUse(f"the broker state at {path} is in use by another process") from None
        try:
            self.env = lmdb.open(path, map_size=map_size, subdir=True, max_dbs=3, sync=sync, metasync=sync,
                                 readahead=False, lock=True)
            self.retained = self.env.open_db(DB_RETAINED)
            self.sessions = self.env.open_db(DB_SESSIONS)
            self.messages = self.env.open_db(DB_MESSAGES)
        except BaseException:
            self.close()
            raise
        self.commits = 0

    def close(self) -> None:
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None
        if self._owner >= 0:
            os.close(self._owner)  # releases the flock
            self._owner = -1

    def load(self) -> Restored:
        restored = Restored({}, {})
        with self.env.begin() as txn:
            for key, value in txn.cursor(self.retained):
                try:
                    _, _, expires, message = decode_message(value)
                    restored.retained[key.decode()] = (expires, message)
                except (ValueError, UnicodeDecodeError) as exc:
                    restored.garbage.append((DEL_RETAINED, key, None))
                    log.error("deleting damaged retained record %r: %s", key, exc)
            for key, value in txn.cursor(self.sessions):
                try:
                    client_id = key.decode()
                    restored.sessions[client_id] = StoredSession(client_id, orjson.loads(value))
                except (ValueError, UnicodeDecodeError) as exc:
                    restored.garbage.append((DEL_SESSION, key, None))
                    log.error("deleting damaged session record %r and its messages: %s", key, exc)
            for key, value in txn.cursor(self.messages):
                client_id, separator, seq = key[:-_SEQ.size - 1], key[-_SEQ.size - 1:-_SEQ.size], key[-_SEQ.size:]
                stored = restored.sessions.get(client_id.decode(errors="replace"))
                try:
                    if stored is None or separator != b"\0":
                        raise ValueError("no session for this message")
                    stored.messages.append((_SEQ.unpack(seq)[0], *decode_message(value)))
                except ValueError as exc:
                    restored.garbage.append((DEL_MESSAGE, key, None))
                    log.error("deleting damaged message record %r: %s", key, exc)
        return restored

    def apply(self, ops: Iterable[tuple]) -> None:
        """Apply one batch in one transaction; grows the map when it is full."""
        ops = list(ops)
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    self._apply(txn, ops)
                self.commits += 1
                return
            except lmdb.MapFullError:
                size = self.env.info()["map_size"]
                if size >= self.max_map_size:
                    raise
                self.env.set_mapsize(min(size * 2, self.max_map_size))

    def _apply(self, txn, ops: list[tuple | None]) -> None:
        for entry in ops:
            if entry is None:
                continue
            op, key, value = entry
            if op == PUT_MESSAGE:
                txn.put(key, value, db=self.messages)
            elif op == DEL_MESSAGE:
                txn.delete(key, db=self.messages)
            elif op == PUT_RETAINED:
                txn.put(_bytes(key), value, db=self.retained)
            elif op == DEL_RETAINED:
                txn.delete(_bytes(key), db=self.retained)
            elif op == PUT_SESSION:
                txn.put(_bytes(key), value, db=self.sessions)
            elif op == DEL_SESSION:
                txn.delete(_bytes(key), db=self.sessions)
                prefix = _bytes(key) + b"\0"
                cursor = txn.cursor(self.messages)
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        if not cursor.delete():
                            break


_STOP = object()


class Persistence:
    """The asyncio edge: ships journal batches to a writer thread, one batch in flight.

    ``on_durable(sessions)`` runs on the loop after each commit with the sessions whose
    acknowledgements may go out; ``on_failure(sessions, exc)`` when a commit failed
    (nothing in that batch was acknowledged; the caller disconnects those clients so
    they resend).
    """

    def __init__(self, store: BrokerStore, journal: Journal, loop: asyncio.AbstractEventLoop,
                 on_durable: Callable[[set], None], on_failure: Callable[[set, BaseException], None]) -> None:
        self.store = store
        self.journal = journal
        self.loop = loop
        self.on_durable = on_durable
        self.on_failure = on_failure
        self._in_flight = False
        self._scheduled = False
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name=f"pillion-broker-writer:{store.path}", daemon=True)
        self._thread.start()
        journal.notify = self._schedule

    def _schedule(self) -> None:
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._in_flight or not self.journal.ops:
            return
        ops, batch = self.journal.take()
        self._in_flight = True
        self._idle.clear()
        self._queue.put((ops, batch))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            ops, batch = item
            started = time.monotonic()
            try:
                if any(op is not None for op in ops):
                    self.store.apply(ops)
                error = None
            except Exception as exc:  # disk full, map limit: reported, never kills the thread
                log.error("broker store commit failed (%d changes): %s", len(ops), exc)
                error = exc
            log.debug("committed %d changes in %.1f ms", len(ops), (time.monotonic() - started) * 1000)
            try:
                self.loop.call_soon_threadsafe(self._done, batch, error)
            except RuntimeError:  # the loop is closed
                return

    def _done(self, batch: int, error: BaseException | None) -> None:
        self._in_flight = False
        sessions = self.journal.committed(batch)
        if error is None:
            self.on_durable(sessions)
        else:
            self.on_failure(sessions, error)
        if self.journal.ops:
            self._flush()
        else:
            self._idle.set()

    async def close(self) -> None:
        """Commit what is collected, stop the thread and close the environment."""
        while not self._idle.is_set() or self.journal.ops:
            if not self._in_flight:
                self._flush()
            await self._idle.wait()
        self._queue.put(_STOP)
        await self.loop.run_in_executor(None, self._thread.join)
        self.store.close()
