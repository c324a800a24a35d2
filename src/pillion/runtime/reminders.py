"""Actor reminders: Dapr's time specs, a one-timer scheduler and durable LMDB storage.

Time specs (``dueTime``, ``period``, ``ttl``) are parsed as daprd 1.12-1.16 parses them
with state-store reminders (``pkg/actors/api/reminders.go`` ``setReminderTimes``,
``period.go`` and dapr/kit ``time``):

- A *duration* is tried as ISO 8601 first (kit ``ParseISO8601Duration``, with its
  leniency: designators in any order, unknown characters skipped, ``Y``/``M`` months
  overwrite, ``W``/``D``/``H``/``M``/``S`` add up, signed integers only), then as a Go
  duration (``pillion.config.durations.parse_duration``).
- ``dueTime``: ISO duration without ``Rn/``, Go duration or RFC 3339 (fractions of any
  length, ``.`` or ``,``, ``Z`` or ``±hh:mm``). Durations are added to ``now``; the
  result — the absolute first due time — is truncated to the whole second below, like
  Go's ``Time.Truncate(time.Second)``. An empty ``dueTime`` is ``now`` untruncated
  (daprd skips the parse); ``"0"`` is ``now`` truncated.
- ``period``: ISO ``[Rn/]PnYnMnWnDTnHnMnS`` or Go duration, never truncated. ``R0`` is
  an error, ``Rn`` limits the total number of fires, empty or all-zero means one shot.
  Years, months and days are calendar arithmetic in UTC with Go's ``AddDate``
  normalisation (Jan 31 + P1M = Mar 3 in a common year), applied from the previous
  scheduled fire as daprd does. Negative periods are refused (daprd accepts them and
  then fires in a tight loop).
- ``ttl``: like ``dueTime`` but durations are relative to the (truncated) first due
  time; the absolute expiry is truncated too. It is an error when ``now`` or the first
  due time is after it. A fire happens only at a scheduled time strictly before it.

Every parse error is a ``TimeSpecError`` carrying daprd's message (``error parsing
reminder due time: …``, ``invalid reminder period: …``, ``error parsing reminder TTL:
…``, ``reminder K has already expired: …``). daprd answers all of them with HTTP 500
``ERR_ACTOR_REMINDER_CREATE`` ("error creating actor reminder: " + message), or
``ERR_ACTOR_TIMER_CREATE`` for timers; 400 is only for malformed JSON and bad names.

``Scheduler`` keeps every pending due time in one heap of plain ints and arms a single
``loop.call_at`` for the earliest; ``ReminderStore`` keeps the records in LMDB and
commits writes from a writer thread, one fsync per batch.

Typical use by the actor runtime::

    store = ReminderStore(os.path.join(data_dir, "reminders"))
    scheduler = Scheduler(fire)                       # fire(key) may be async
    for key, due in store.iter_schedule():            # overdue ones fire at once, once
        scheduler.add(key, due)

    async def fire(key):
        rec = store.get(key)
        ...PUT /actors/{type}/{id}/method/remind/{name}...
        if rec.advance(time.time()):                  # next period, repetitions, ttl
            await store.save(rec); scheduler.add(key, rec.next_due)
        else:
            await store.delete(key)
"""

from __future__ import annotations

import asyncio
import calendar
import fcntl
import heapq
import logging
import math
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import lmdb
import orjson

from ..config.durations import parse_duration
from . import memory as _memory

log = logging.getLogger("pillion.runtime.reminders")

SEPARATOR = "||"  # daprd's DaprSeparator in reminder keys
_NS = 1_000_000_000
_MAX_NS = 2**63 - 1
_INT64 = 2**63


class TimeSpecError(ValueError):
    """A ``dueTime``, ``period`` or ``ttl`` that daprd would refuse; ``str()`` is daprd's message."""


# --------------------------------------------------------------------------- time specs

_ATOI = re.compile(r"[+-]?[0-9]+\Z")


def _atoi(text: str) -> int:
    """Go ``strconv.Atoi``: optional sign, ASCII digits, int64 range."""
    if not _ATOI.match(text):
        raise ValueError(text)
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(text)
    return value


def parse_iso8601_duration(text: str) -> tuple[int, int, int, int, int]:
    """``(years, months, days, nanoseconds, repetitions)`` as dapr/kit parses ``[Rn/]P…``.

    ``repetitions`` is -1 without ``Rn/``. Raises ValueError with kit's message.
    """
    error = ValueError("unsupported ISO8601 duration format: " + text)
    years = months = days = ns = 0
    repetitions = -1
    n = len(text)
    if n < 2:
        raise error
    i = 0
    if text[0] == "R":
        slash = text.find("/")
        i = n if slash < 0 else slash
        if i - 1 < 1:
            raise error
        try:
            repetitions = _atoi(text[1:i])
        except ValueError:
            raise error from None
        i += 1
        if i >= n:  # "R5" or "R5/": repetitions, zero duration
            return 0, 0, 0, 0, repetitions
    if text[i] != "P":
        raise error
    i += 1
    start = i
    in_time = False
    while i < n:
        c = text[i]
        if c == "T":
            if start != i:
                raise error
            in_time = True
            start = i + 1
        elif c in "YWDHSM":
            if start == i or (c in "YWD" and in_time) or (c in "HS" and not in_time):
                raise error
            try:
                value = _atoi(text[start:i])
            except ValueError:
                raise error from None
            if c == "Y":
                years = value
            elif c == "W":
                days += value * 7
            elif c == "D":
                days += value
            elif c == "H":
                ns += value * 3600 * _NS
            elif c == "S":
                ns += value * _NS
            elif in_time:
                ns += value * 60 * _NS
            else:
                months = value
            start = i + 1
        i += 1  # anything else (digits, unknown letters) is skipped, as kit does
    if abs(ns) > _MAX_NS:  # Go would overflow silently; refuse instead
        raise error
    return years, months, days, ns, repetitions


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))\Z"
)


def parse_rfc3339(text: str) -> tuple[int, int]:
    """``(epoch_seconds, nanoseconds)`` of an RFC 3339 / RFC3339Nano time, as Go's
    ``time.Parse(time.RFC3339, …)`` accepts it; ValueError otherwise."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"cannot parse {text!r} as RFC3339")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and year >= 1 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise ValueError(f"{text!r}: day or month out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r}: time out of range")
    offset = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"{text!r}: time zone offset out of range")
        offset = (oh * 3600 + om * 60) * (-1 if m.group(9) == "-" else 1)
    frac = (m.group(7) or "")[:9]
    nanos = int(frac.ljust(9, "0")) if frac else 0
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    return seconds, nanos


def add_date(t: float, years: int, months: int, days: int) -> float:
    """Go's ``t.AddDate(years, months, days)`` in UTC (day overflow normalises forward)."""
    if not (years or months or days):
        return t
    whole = math.floor(t)
    frac = t - whole
    y, mo, d, hh, mi, ss = time.gmtime(whole)[:6]
    total = mo - 1 + months
    y += years + total // 12
    mo = total % 12 + 1
    try:
        return calendar.timegm((y, mo, d + days, hh, mi, ss)) + frac
    except (ValueError, OverflowError):
        raise OverflowError(f"date out of range adding {years}y{months}m{days}d") from None


def _parse_time(text: str, start: float) -> float:
    """dapr/kit ``ParseTime``: ISO duration (no repetitions), Go duration or RFC 3339."""
    try:
        y, mo, d, ns, reps = parse_iso8601_duration(text)
    except ValueError:
        pass
    else:
        if reps != -1:
            raise ValueError("repetitions are not allowed")
        try:
            return add_date(start, y, mo, d) + ns / _NS
        except OverflowError as exc:
            raise ValueError(str(exc)) from None
    try:
        return start + parse_duration(text)
    except ValueError:
        pass
    try:
        seconds, nanos = parse_rfc3339(text)
    except ValueError:
        raise ValueError("unsupported time/duration format: " + text) from None
    return _Instant(seconds + nanos / _NS, seconds)


class _Instant(float):
    """An RFC 3339 time as a float that remembers its whole second (``.999999999`` would
    round up in a double, and truncation must not)."""

    __slots__ = ("whole",)

    def __new__(cls, value: float, whole: int) -> _Instant:
        obj = super().__new__(cls, value)
        obj.whole = whole
        return obj


def _truncate(t: float) -> float:
    return float(t.whole if isinstance(t, _Instant) else math.floor(t))


def parse_due_time(text: str, now: float, *, kind: str = "reminder") -> float:
    """Absolute first due time (epoch seconds) for ``dueTime``; see the module docstring."""
    if text == "":
        return now
    try:
        return _truncate(_parse_time(text, now))
    except ValueError as exc:
        raise TimeSpecError(f"error parsing {kind} due time: {exc}") from None


def parse_ttl(text: str, due: float, now: float | None = None, *, kind: str = "reminder",
              key: str = "") -> float | None:
    """Absolute expiry (epoch seconds) for ``ttl`` relative to the first ``due`` time;
    None when ``text`` is empty. Raises when it is already expired at ``now``."""
    if text == "":
        return None
    try:
        expires = _truncate(_parse_time(text, due))
    except ValueError as exc:
        raise TimeSpecError(f"error parsing {kind} TTL: {exc}") from None
    now = time.time() if now is None else now
    if now > expires or due > expires:
        raise TimeSpecError(f"{kind} {key} has already expired: dueTime: {_go_time(due)} TTL: {text}")
    return expires


def _go_time(t: float) -> str:
    """Go's ``Time.String()`` for a UTC time, as daprd prints it in errors."""
    whole = math.floor(t)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    nanos = round((t - whole) * _NS)
    if nanos:
        text += ("." + f"{nanos:09d}").rstrip("0")
    return text + " +0000 UTC"


class Period:
    """A parsed reminder ``period``: calendar part, fixed part and repetitions.

    ``repeats`` is the total number of fires allowed, None for unlimited. A period
    without any duration (empty, ``0``, ``PT0S``, ``R5``) is a one shot.
    """

    __slots__ = ("text", "years", "months", "days", "ns", "repeats")

    def __init__(self, text: str = "", years: int = 0, months: int = 0, days: int = 0, ns: int = 0,
                 repeats: int | None = None) -> None:
        self.text = text
        self.years = years
        self.months = months
        self.days = days
        self.ns = ns
        self.repeats = repeats

    def __repr__(self) -> str:
        return f"Period({self.text!r}, y={self.years}, m={self.months}, d={self.days}, ns={self.ns}, repeats={self.repeats})"

    @property
    def has_repeats(self) -> bool:
        """daprd's ``HasRepeats``: fires more than once (before repetitions run out)."""
        return self.repeats != 0 and bool(self.years or self.months or self.days or self.ns)

    @property
    def fixed_step(self) -> float | None:
        """Seconds between fires when no months/years are involved (days are 86400 s in UTC)."""
        if self.years or self.months:
            return None
        return self.days * 86400 + self.ns / _NS

    def following(self, t: float) -> float:
        """daprd's ``GetFollowing``: ``t.AddDate(y, m, d).Add(duration)``."""
        return add_date(t, self.years, self.months, self.days) + self.ns / _NS

    def _fires_through(self, t: float, first_due: float) -> int:
        """How many schedule points lie in ``[first_due, t]``."""
        if t < first_due:
            return 0
        step = self.fixed_step
        if step is not None:
            return int((t - first_due) // step) + 1
        count, point = 0, first_due
        while point <= t:
            count += 1
            point = self.following(point)
        return count

    def next_after(self, previous_fire: float, first_due: float, remaining: int | None = None,
                   after: float | None = None) -> float | None:
        """The schedule point following ``previous_fire`` (the *scheduled* time of the
        fire that just happened), or None when the period does not repeat or its
        repetitions are used up.

        ``remaining`` is the number of fires still allowed after ``previous_fire``; when
        not given it is derived from the position of ``previous_fire`` in the schedule
        that starts at ``first_due``. ``after`` skips schedule points up to that time
        (missed periods after a restart or a slow callback), without using repetitions.
        Fixed periods are computed from ``first_due`` (no drift); calendar periods step
        from ``previous_fire`` like daprd.
        """
        if not self.has_repeats:
            return None
        if remaining is None and self.repeats is not None:
            remaining = self.repeats - self._fires_through(previous_fire, first_due)
        if remaining is not None and remaining <= 0:
            return None
        floor = previous_fire if after is None or after < previous_fire else after
        step = self.fixed_step
        try:
            if step is not None:
                if floor < first_due:
                    return first_due
                k = math.floor((floor - first_due) / step) + 1
                point = first_due + k * step
                while point <= floor:  # float rounding
                    k += 1
                    point = first_due + k * step
                return point
            point = self.following(previous_fire)
            while point <= floor:
                point = self.following(point)
            return point
        except OverflowError:
            return None


def parse_period(text: str, *, kind: str = "reminder") -> Period:
    """A ``Period`` for ``period`` (empty: one shot); raises TimeSpecError like daprd."""
    if text == "":
        return Period()
    try:
        years, months, days, ns, reps = parse_iso8601_duration(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise TimeSpecError(f"invalid {kind} period: parse error: unsupported duration format: {text}") from None
        years = months = days = 0
        ns = round(seconds * _NS)
        reps = -1
    if reps == 0:
        raise TimeSpecError(f"invalid {kind} period: has zero repetitions")
    if years < 0 or months < 0 or days < 0 or ns < 0:
        raise TimeSpecError(f"invalid {kind} period: negative periods are not supported: {text}")
    return Period(text, years, months, days, ns, None if reps < 0 else reps)


# --------------------------------------------------------------------------- records


def reminder_key(actor_type: str, actor_id: str, name: str) -> str:
    return actor_type + SEPARATOR + actor_id + SEPARATOR + name


@dataclass(slots=True)
class Reminder:
    """One reminder, as stored.

    ``data`` is the raw JSON text registered (None: absent). ``first_due`` and
    ``next_due`` are epoch seconds; ``remaining`` counts the fires still allowed,
    including the one at ``next_due`` (None: unlimited); ``expires`` is the absolute ttl.
    """

    actor_type: str
    actor_id: str
    name: str
    due_time: str = ""
    period: str = ""
    ttl: str = ""
    data: str | None = None
    first_due: float = 0.0
    next_due: float = 0.0
    remaining: int | None = None
    expires: float | None = None
    created: float = 0.0

    @property
    def key(self) -> str:
        return reminder_key(self.actor_type, self.actor_id, self.name)

    @classmethod
    def create(cls, actor_type: str, actor_id: str, name: str, due_time: str = "", period: str = "",
               ttl: str = "", data: str | bytes | None = None, *, now: float | None = None,
               kind: str = "reminder") -> Reminder:
        """Validate the time specs like daprd's ``setReminderTimes``; raises TimeSpecError."""
        now = time.time() if now is None else now
        due = parse_due_time(due_time or "", now, kind=kind)
        parsed = parse_period(period or "", kind=kind)
        expires = parse_ttl(ttl or "", due, now, kind=kind, key=reminder_key(actor_type, actor_id, name))
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode()
        remaining = parsed.repeats if parsed.has_repeats else 1
        return cls(actor_type, actor_id, name, due_time or "", period or "", ttl or "", data,
                   due, due, remaining, expires, now)

    @property
    def active(self) -> bool:
        """Whether a fire at ``next_due`` may happen (daprd: due strictly before the ttl)."""
        return (self.remaining is None or self.remaining > 0) and (self.expires is None or self.next_due < self.expires)

    def advance(self, now: float | None = None) -> bool:
        """Account for the fire at ``next_due`` and move to the next one.

        Returns False when the reminder is finished (one shot, repetitions used up or
        the next point is at/after the ttl): delete it. Schedule points at or before
        ``now`` are skipped — after downtime or a slow callback the reminder fires once,
        not once per missed period, and skipped points use no repetitions.
        """
        if self.remaining is not None:
            self.remaining -= 1
        period = parse_period(self.period)
        following = period.next_after(self.next_due, self.first_due, self.remaining, now)
        if following is None:
            return False
        self.next_due = following
        return self.active

    def to_json(self) -> bytes:
        """A positional JSON array: 100,000 reminders are 100,000 records, so field names cost."""
        return orjson.dumps([self.actor_type, self.actor_id, self.name, self.due_time, self.period, self.ttl,
                             self.data, self.first_due, self.next_due, self.remaining, self.expires,
                             self.created])  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes) -> Reminder:
        (actor_type, actor_id, name, due_time, period, ttl, data, first_due, next_due, remaining, expires,
         created) = orjson.loads(raw)  # fmt: skip
        return cls(actor_type, actor_id, name, due_time, period, ttl, data, float(first_due), float(next_due),
                   remaining, expires, float(created))


# --------------------------------------------------------------------------- scheduler

_SLOT_BITS = 24  # up to 16.7 million reminders at once
_SLOT_MASK = (1 << _SLOT_BITS) - 1


class Scheduler:
    """Due times of many keys behind one ``loop.call_at``.

    The heap holds one int per pending entry, ``(due_ms << 24) | slot``, where ``due_ms``
    is the due time on the loop's monotonic clock in whole milliseconds (rounded up) and
    ``slot`` indexes the key list; ``index`` maps each key to its live entry. ``add`` of
    a scheduled key and ``remove`` leave the old entry in the heap (lazy deletion); the
    heap is rebuilt from ``index`` when stale entries exceed half of it.

    When an entry comes due the key is unscheduled and ``on_due(key)`` runs on the loop
    (a coroutine it returns runs as a task); the caller re-adds the key for its next
    period. At most ``batch`` keys fire per loop iteration.

    Wall times are converted with an offset taken at construction. At each wake-up
    (at least every ``max_sleep`` seconds) a step of the wall clock against the
    monotonic clock larger than ``clock_step`` seconds (NTP setting the time on an edge
    device, an operator's ``date -s``) shifts every entry so it still fires at its wall
    due time; slewing below that is ignored. Reminders are absolute wall times (daprd
    stores them so), which this keeps true.
    """

    def __init__(self, on_due: Callable[[str], object], *, loop: asyncio.AbstractEventLoop | None = None,
                 max_sleep: float = 60.0, clock_step: float = 1.0, batch: int = 1000,
                 wall: Callable[[], float] = time.time) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.on_due = on_due
        self.max_sleep = max_sleep
        self.clock_step = clock_step
        self.batch = batch
        self._wall = wall
        self._offset = wall() - self.loop.time()
        self._heap: list[int] = []
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self._handle = None
        self._armed_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self.compactions = 0
        self.clock_steps = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def due(self, key: str) -> float | None:
        """The wall time ``key`` is scheduled at (to the millisecond), or None."""
        code = self._index.get(key)
        return None if code is None else (code >> _SLOT_BITS) / 1000 + self._offset

    def add(self, key: str, due: float) -> None:
        """Schedule (or reschedule) ``key`` at wall time ``due`` (epoch seconds)."""
        self._check_clock()
        ms = math.ceil((due - self._offset) * 1000)
        old = self._index.get(key)
        if old is not None:
            slot = old & _SLOT_MASK
        elif self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            if slot > _SLOT_MASK:
                raise OverflowError("too many scheduled keys")
            self._keys.append(key)
        code = (ms << _SLOT_BITS) | slot
        if code == old:
            return
        self._index[key] = code
        heapq.heappush(self._heap, code)
        if not self._maybe_compact() and self._heap[0] == code:
            self._arm()

    def remove(self, key: str) -> bool:
        """Unschedule ``key``; False when it was not scheduled."""
        code = self._index.pop(key, None)
        if code is None:
            return False
        slot = code & _SLOT_MASK
        self._keys[slot] = None
        self._free.append(slot)
        self._maybe_compact()
        if not self._index:
            self._cancel()
        return True

    def close(self) -> None:
        self._cancel()
        self._heap.clear()
        self._index.clear()
        self._keys.clear()
        self._free.clear()

    # internals

    def _maybe_compact(self) -> bool:
        heap = self._heap
        stale = len(heap) - len(self._index)
        if stale * 2 <= len(heap) or len(heap) < 64:
            return False
        self._heap = list(self._index.values())
        heapq.heapify(self._heap)
        self.compactions += 1
        self._arm()
        return True

    def _check_clock(self) -> None:
        offset = self._wall() - self.loop.time()
        step = offset - self._offset
        if abs(step) <= self.clock_step:
            return
        shift = round(step * 1000) << _SLOT_BITS
        log.warning("wall clock stepped by %+.3f s; rescheduling %d reminders on wall time", step, len(self._index))
        self._offset += round(step * 1000) / 1000
        self._heap = [code - shift for code in self._heap]  # a uniform shift keeps heap order
        self._index = {key: code - shift for key, code in self._index.items()}
        self.clock_steps += 1
        self._arm()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_at = None

    def _arm(self) -> None:
        if not self._heap:
            self._cancel()
            return
        when = min((self._heap[0] >> _SLOT_BITS) / 1000, self.loop.time() + self.max_sleep)
        if self._handle is not None:
            if self._armed_at is not None and self._armed_at <= when:
                return  # an earlier (or equal) wake-up is pending; it re-arms
            self._handle.cancel()
        self._armed_at = when
        self._handle = self.loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self._handle = None
        self._armed_at = None
        self._check_clock()
        now_ms = math.floor(self.loop.time() * 1000) + 1  # call_at may run a hair early
        heap, index, keys = self._heap, self._index, self._keys
        fired = 0
        while heap and heap[0] >> _SLOT_BITS <= now_ms and fired < self.batch:
            code = heapq.heappop(heap)
            slot = code & _SLOT_MASK
            key = keys[slot]
            if key is None or index.get(key) != code:
                continue  # stale
            del index[key]
            keys[slot] = None
            self._free.append(slot)
            fired += 1
            self._call(key)
            if heap is not self._heap:  # on_due compacted or shifted the heap
                heap, index = self._heap, self._index
        if heap and heap[0] >> _SLOT_BITS <= now_ms:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = self.loop.time()
            self._handle = self.loop.call_soon(self._wake)
        else:
            self._arm()

    def _call(self, key: str) -> None:
        try:
            result = self.on_due(key)
        except Exception:
            log.exception("reminder callback failed for %s", key)
            return
        if asyncio.iscoroutine(result):
            task = self.loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reminder callback failed", exc_info=task.exception())


# --------------------------------------------------------------------------- storage

_DUE = struct.Struct("<d")
DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE = _memory.lmdb_map_sizes("reminders")  # 64 MiB / 4 GiB on 64-bit


def _encode(reminder: Reminder) -> tuple[bytes, bytes]:
    return reminder.to_json(), _DUE.pack(reminder.next_due)


class StoreInUse(OSError):
    """Another process owns this reminder directory."""


class ReminderStore:
    """Reminder records in their own LMDB environment (a directory, e.g. ``<data>/reminders``).

    Two databases, written together: ``records`` maps ``actorType||actorId||name``
    (UTF-8) to ``Reminder.to_json()``; ``due`` maps the same key to the next due time
    (8-byte double), so start-up (``iter_schedule``) reads a few MB instead of every
    record, and a record's pages are touched only when it fires. One
    process owns the directory (``flock`` on ``owner.lock``). Reads (``get``,
    ``load_all``, ``iter_schedule``) run on the caller's thread; ``save`` and ``delete``
    are coroutines that return once the change is committed and fsynced: changes made
    while a commit runs are collected and written by the next one, in one transaction,
    so concurrent registrations share an fsync. A later change to a key in the same
    batch replaces the earlier one.
    """

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = DEFAULT_MAX_MAP_SIZE,
                 sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.max_map_size = max(map_size, max_map_size)
        self.env = None
        self._owner = os.open(os.path.join(path, "owner.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._owner)
            self._owner = -1
            raise StoreInUse(f"the reminders at {path} are in use by another process") from None
        try:
            self.env = lmdb.open(path, map_size=map_size, subdir=True, max_dbs=2, sync=sync, metasync=sync,
                                 readahead=False, lock=True)
            self.records = self.env.open_db(b"records")
            self.due = self.env.open_db(b"due")
        except BaseException:
            self._release()
            raise
        self.commits = 0
        self._pending: dict[bytes, tuple[bytes, bytes] | None] = {}
        self._waiters: list[asyncio.Future] = []
        self._in_flight = False
        self._scheduled = False
        self._idle: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pillion-reminders-writer")

    # reads

    def get(self, key: str) -> Reminder | None:
        with self.env.begin() as txn:
            raw = txn.get(key.encode(), db=self.records)
        return None if raw is None else Reminder.from_json(raw)

    def __len__(self) -> int:
        with self.env.begin() as txn:
            return txn.stat(self.records)["entries"]

    def _records(self) -> Iterator[tuple[bytes, bytes]]:
        with self.env.begin() as txn:
            yield from txn.cursor(self.records)

    def load_all(self) -> list[Reminder]:
        """Every stored reminder; damaged records are logged and deleted."""
        reminders, damaged = [], []
        for key, raw in self._records():
            try:
                reminders.append(Reminder.from_json(raw))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("deleting damaged reminder record %r: %s", key, exc)
                damaged.append(key)
        self._apply({key: None for key in damaged})
        return reminders

    def iter_schedule(self) -> Iterator[tuple[str, float]]:
        """``(key, next_due)`` of every stored reminder from the ``due`` index, without
        reading the records: what a ``Scheduler`` needs at start (``get`` reads the
        record when it fires)."""
        damaged = []
        with self.env.begin() as txn:
            for key, raw in txn.cursor(self.due):
                try:
                    yield key.decode(), _DUE.unpack(raw)[0]
                except (struct.error, UnicodeDecodeError) as exc:
                    log.error("deleting damaged reminder index entry %r: %s", key, exc)
                    damaged.append(key)
        self._apply({key: None for key in damaged})

    # writes

    def put_sync(self, reminders: list[Reminder]) -> None:
        """Write many reminders in one transaction, on this thread (imports, tests)."""
        self._apply({r.key.encode(): _encode(r) for r in reminders})

    async def save(self, reminder: Reminder) -> None:
        """Store ``reminder``; returns after the commit is durable."""
        await self._submit(reminder.key.encode(), _encode(reminder))

    async def delete(self, key: str) -> None:
        """Delete ``key`` (absent is fine); returns after the commit is durable."""
        await self._submit(key.encode(), None)

    async def _submit(self, key: bytes, value: tuple[bytes, bytes] | None) -> None:
        if self.env is None:
            raise RuntimeError("reminder store is closed")
        loop = asyncio.get_running_loop()
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
        self._pending[key] = value
        future = loop.create_future()
        self._waiters.append(future)
        self._idle.clear()
        if not self._in_flight and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._in_flight or not self._waiters:
            return
        ops, waiters = self._pending, self._waiters
        self._pending, self._waiters = {}, []
        self._in_flight = True
        done = loop.run_in_executor(self._executor, self._apply, ops)
        done.add_done_callback(lambda f: self._done(loop, f, waiters))

    def _done(self, loop: asyncio.AbstractEventLoop, result: asyncio.Future, waiters: list[asyncio.Future]) -> None:
        self._in_flight = False
        error = result.exception()
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if self._waiters:
            self._flush(loop)
        elif self._idle is not None:
            self._idle.set()

    def _apply(self, ops: dict[bytes, tuple[bytes, bytes] | None]) -> None:
        if not ops:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in ops.items():
                        if value is None:
                            txn.delete(key, db=self.records)
                            txn.delete(key, db=self.due)
                        else:
                            txn.put(key, value[0], db=self.records)
                            txn.put(key, value[1], db=self.due)
                self.commits += 1
                return
            except lmdb.MapFullError:
                size = self.env.info()["map_size"]
                if size >= self.max_map_size:
                    raise
                self.env.set_mapsize(min(size * 2, self.max_map_size))

    # lifecycle

    async def aclose(self) -> None:
        """Wait for pending writes, then close."""
        if self._idle is not None:
            await self._idle.wait()
        self.close()

    def close(self) -> None:
        """Close now (pending async writes must have finished; see ``aclose``)."""
        self._executor.shutdown(wait=True)
        if self.env is not None:
            self.env.close()
            self.env = None
        self._release()

    def _release(self) -> None:
        if self._owner >= 0:
            os.close(self._owner)
            self._owner = -1
