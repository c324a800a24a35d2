"""One LMDB environment per path per process, and the thread that writes to it.

Theory of operation (group commit)
----------------------------------
LMDB allows one write transaction at a time per environment (across processes, via
its lock file), and with ``sync=True`` each commit costs an fsync. One writer thread
per environment takes *everything* queued, runs it inside one outer write
transaction and commits once, so N concurrent callers share one fsync.

Each job (one ``set``/``delete``/``transact`` call) runs in its own nested
transaction (``begin(write=True, parent=outer)``): a job that raises (ETag failure,
oversized value) is aborted alone and gets its exception, the others are kept. Only
after the outer commit returns does any job's future resolve, through
``loop.call_soon_threadsafe``; so an acknowledged write is exactly as durable as
the environment's sync flags promise, and the event loop never waits on disk.

If a batch hits ``MapFullError`` the whole outer transaction is aborted (nothing
was acknowledged), the map is doubled up to ``max_map_size`` and the batch re-runs
from scratch; jobs are pure functions of the database state, so re-running is safe.
At the limit, a multi-job batch is retried one job at a time so that only jobs that
really do not fit fail (StoreError).

``set_mapsize`` must not run while any transaction of this process is open. Readers
(event-loop threads) hold ``read_lock`` for the life of each read transaction; the
writer takes it only around ``set_mapsize``, between its own transactions. When
another process grew the map, LMDB answers ``MapResizedError``; the writer adopts the
new size (``set_mapsize(0)``) and a reader asks the writer to do so (``adopt()``).

Versions (ETags) come from a store-wide u64 counter in the ``meta`` database, read
at the start of each outer transaction (under LMDB's writer lock, so consistent
across processes) and written back before commit. Versions used by aborted jobs are
skipped, never reused: per key they are strictly increasing, even across deletes.

A sweep runs between batches every ``sweep_interval`` seconds: it looks at up to
``sweep_limit`` records, resuming where the last sweep stopped, and deletes the
expired ones (one commit, only if it deleted something).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import lmdb

from ...errors import PillionError
from . import StoreError
from . import records

log = logging.getLogger("pillion.state.lmdb")

DB_STATE = b"state"
DB_META = b"meta"
COUNTER_KEY = b"version"
_U64 = struct.Struct("<Q")
MAX_BATCH = 1024


class Batch:
    """What a job sees: the database handle, the batch's clock and the version counter."""

    __slots__ = ("db", "now", "version")

    def __init__(self, db: Any, now: float, version: int):
        self.db = db
        self.now = now
        self.version = version

    def next_version(self) -> int:
        self.version += 1
        return self.version


JobFn = Callable[[lmdb.Transaction, Batch], Any]


class _Job:
    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: JobFn | None, loop: asyncio.AbstractEventLoop | None, future: asyncio.Future | None):
        self.fn = fn  # None: adopt the map size another process set
        self.loop = loop
        self.future = future


_STOP = object()


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write still happened (or not)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, exc in outcomes:
        _settle(future, result, exc)


class SharedEnv:
    """An open environment, its databases and its writer thread; see the module docstring."""

    def __init__(self, path: str, *, map_size: int, max_map_size: int, sync: bool, metasync: bool,
                 sweep_interval: float = 10.0, sweep_limit: int = 1000):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.sync = sync
        self.metasync = metasync
        self.max_map_size = max(max_map_size, map_size)
        self.sweep_interval = sweep_interval
        self.sweep_limit = sweep_limit
        self.env = lmdb.open(path, map_size=map_size, subdir=True, sync=sync, metasync=metasync,
                             max_dbs=2, readahead=False, lock=True)
        try:
            self.db = self.env.open_db(DB_STATE)
            self.meta = self.env.open_db(DB_META)
            self.max_key_size = self.env.max_key_size()
        except BaseException:
            self.env.close()
            raise
        self.read_lock = threading.Lock()
        self.commits = 0  # outer write transactions committed (tests watch group commit)
        self.refs = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._sweep_from: bytes | None = None
        self._stopped: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None
        self._thread = threading.Thread(target=self._run, name=f"pillion-lmdb-writer:{path}", daemon=True)
        self._thread.start()

    # -- called from event-loop threads ---------------------------------------------

    def counter(self, txn: lmdb.Transaction) -> int:
        """The last version handed out, as ``txn`` sees it (stores that follow changes poll it)."""
        raw = txn.get(COUNTER_KEY, db=self.meta)
        return _U64.unpack(raw)[0] if raw is not None else 0

    def submit(self, fn: JobFn) -> asyncio.Future:
        """Queue one job; the future resolves after the commit that contains it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return future

    async def adopt(self) -> None:
        """Have the writer take the map size another process set (after MapResizedError)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(None, loop, future))
        await future

    async def stop(self) -> None:
        """Finish queued work, stop the thread, close the environment."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._stopped = (loop, future)
        self._queue.put(_STOP)
        await future

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                self._sweep()
                next_sweep = time.monotonic() + self.sweep_interval
                continue
            items = [first]
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs: list[_Job] = []
            for item in items:
                if item is _STOP:
                    stop = True
                elif item.fn is None:
                    self._adopt()
                    self._resolve(item, None, None)
                else:
                    jobs.append(item)
            if jobs:
                self._run_batch(jobs)
        self._shutdown()

    def _shutdown(self) -> None:
        while True:  # nothing should be left: stores refuse calls once closing
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._resolve(item, None, StoreError("state store closed"))
        with self.read_lock:
            self.env.close()
        if self._stopped is not None:
            loop, future = self._stopped
            self._call(loop, future, None, None)

    def _run_batch(self, jobs: list[_Job]) -> None:
        while True:
            try:
                outcomes = self._attempt(jobs)
            except lmdb.MapFullError:
                if self._grow():
                    continue
                if len(jobs) > 1:
                    for job in jobs:
                        self._run_batch([job])
                    return
                outcomes = [(None, StoreError(
                    f"state database full: map size limit of {self.max_map_size} bytes reached"))]
            except lmdb.MapResizedError:
                self._adopt()
                continue
            except lmdb.Error as exc:
                log.error("state write failed at %s: %s", self.path, exc)
                outcomes = [(None, StoreError(f"state write failed: {exc}"))] * len(jobs)
            break
        # One wake-up per event loop for the whole batch, not one per job: each
        # call_soon_threadsafe writes to the loop's self-pipe.
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for job, (result, exc) in zip(jobs, outcomes):
            if job.loop is not None and job.future is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result, exc))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass

    def _attempt(self, jobs: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        txn = self.env.begin(write=True)
        try:
            start = self.counter(txn)
            batch = Batch(self.db, time.time(), start)
            for job in jobs:
                child = self.env.begin(write=True, parent=txn)
                try:
                    result = job.fn(child, batch)
                except (lmdb.MapFullError, lmdb.MapResizedError):
                    child.abort()
                    raise
                except PillionError as exc:
                    child.abort()
                    outcomes.append((None, exc))
                except (lmdb.Error, ValueError) as exc:
                    child.abort()
                    outcomes.append((None, StoreError(f"state write failed: {exc}")))
                except Exception as exc:  # a bug in a job must reach its caller, not kill the thread
                    child.abort()
                    log.exception("state job failed")
                    outcomes.append((None, StoreError(f"state write failed: {exc!r}")))
                else:
                    child.commit()
                    outcomes.append((result, None))
            if batch.version != start:
                txn.put(COUNTER_KEY, _U64.pack(batch.version), db=self.meta)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        self.commits += 1
        return outcomes

    def _grow(self) -> bool:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            return False
        new = min(current * 2, self.max_map_size)
        with self.read_lock:
            self.env.set_mapsize(new)
        log.info("state map at %s grown from %d to %d bytes", self.path, current, new)
        return True

    def _adopt(self) -> None:
        with self.read_lock:
            self.env.set_mapsize(0)

    def _sweep(self) -> None:
        """Delete up to ``sweep_limit`` records' worth of expired items; see the module docstring."""
        now = time.time()
        for _ in range(2):
            try:
                txn = self.env.begin(write=True)
            except lmdb.MapResizedError:
                self._adopt()
                continue
            break
        else:
            return
        try:
            cursor = txn.cursor(db=self.db)
            positioned = cursor.set_range(self._sweep_from) if self._sweep_from else cursor.first()
            expired: list[bytes] = []
            examined = 0
            while positioned and examined < self.sweep_limit:
                key, value = cursor.item()
                examined += 1
                try:
                    _, expire = records.unpack_header(value)
                except ValueError:
                    pass
                else:
                    if not records.is_live(expire, now):
                        expired.append(key)
                positioned = cursor.next()
            self._sweep_from = cursor.key() if positioned else None
            for key in expired:
                txn.delete(key, db=self.db)
            if expired:
                txn.commit()
                self.commits += 1
                log.debug("swept %d expired state items at %s", len(expired), self.path)
            else:
                txn.abort()
        except lmdb.Error as exc:
            txn.abort()
            log.warning("state sweep at %s failed: %s", self.path, exc)

    def _resolve(self, job: _Job, result: Any, exc: BaseException | None) -> None:
        if job.loop is not None and job.future is not None:
            self._call(job.loop, job.future, result, exc)

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, result, exc)
        except RuntimeError:  # that loop is closed; nobody is waiting any more
            pass


# -- one SharedEnv per path per process --------------------------------------------
# LMDB forbids opening one environment twice in a process (closing either breaks the
# other's locks), so stores naming the same path share one SharedEnv.

_ENVS: dict[str, SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def acquire(path: str, **options: Any) -> SharedEnv:
    """The SharedEnv for ``path``, opened with ``options`` if this is the first user."""
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared = _ENVS.get(key)
        if shared is None:
            shared = _ENVS[key] = SharedEnv(key, **options)
        shared.refs += 1
        return shared


def unref(shared: SharedEnv) -> bool:
    """Drop one user; True when it was the last, and the caller must ``await stop()``."""
    with _ENVS_LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return False
        _ENVS.pop(shared.path, None)
        return True
