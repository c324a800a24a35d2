"""``bindings.cron``: an input binding that fires on a schedule, as Dapr's does.

The grammar is dapr/kit/cron's (a robfig/cron v3 fork) with optional seconds:
``[sec] min hour dom month dow``, each field a comma list of ``*``/``?``, ``N``,
``N-M`` with optional ``/step`` (``N/step`` means N to the maximum), month and weekday
names (``jan``, ``mon``, any case); descriptors ``@yearly @annually @monthly @weekly
@daily @midnight @hourly`` and ``@every <Go duration>`` (whole milliseconds, at least
1 ms); an optional ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix. Day of month and day of
week are OR-ed unless either is ``*``/``?``, like cron. Without a prefix the schedule
follows the process's local zone, as daprd does.

Each tick calls the handler with empty data and the metadata daprd sends:
``timeZone`` (Go's name of the scheduler's zone, always "Local") and ``readTimeUTC``
(Go's ``time.Time.String()`` of the fire time in UTC). The app's answer is ignored
and a tick missed while the sidecar was down or the device asleep is not replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from ...config.durations import parse_duration
from ...config.manifests import Component
from ..registry import Context
from . import BindingError, InputBinding, InputHandler, MetadataReader

log = logging.getLogger("pillion.bindings.cron")

UTC = timezone.utc
STAR = 1 << 63  # the field was * or ?: day-of-month and day-of-week are then AND-ed
# Sleep at most this long before looking at the wall clock again, so a clock set by NTP
# after boot (edge devices without an RTC) moves the schedule within a minute.
MAX_SLEEP = 60.0

_MONTHS = {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
# (min, max, names) per field, seconds first.
_BOUNDS = ((0, 59, None), (0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))


def _bits(low: int, high: int, step: int = 1) -> int:
    bits = 0
    for i in range(low, high + 1, step):
        bits |= 1 << i
    return bits


def _all(field: int) -> int:
    low, high, _ = _BOUNDS[field]
    return _bits(low, high) | STAR


def local_zone() -> tzinfo:
    """The zone Go calls Local: $TZ ("" is UTC), else /etc/localtime, else UTC."""
    tz = os.environ.get("TZ")
    try:
        if tz is None:
            with open("/etc/localtime", "rb") as f:
                return ZoneInfo.from_file(f, key="Local")
        tz = tz.removeprefix(":")
        if not tz or tz == "UTC":
            return UTC
        if tz.startswith("/"):
            with open(tz, "rb") as f:
                return ZoneInfo.from_file(f, key=tz)
        return ZoneInfo(tz)
    except (OSError, ValueError, KeyError):
        return UTC


def _load_location(name: str) -> tzinfo | None:
    """Go's time.LoadLocation; None stands for Local."""
    if name == "" or name == "UTC":
        return UTC
    if name == "Local":
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        raise ValueError(f"provided bad location {name}: unknown time zone {name}") from None


class SpecSchedule:
    """A crontab schedule as six bit sets; ``next`` is robfig's algorithm, DST quirks included."""

    __slots__ = ("second", "minute", "hour", "dom", "month", "dow", "location")

    def __init__(self, fields: tuple[int, int, int, int, int, int], location: tzinfo | None):
        self.second, self.minute, self.hour, self.dom, self.month, self.dow = fields
        self.location = location  # None: the process's local zone

    def _day_matches(self, t: datetime) -> bool:
        dom = bool(1 << t.day & self.dom)
        dow = bool(1 << (t.weekday() + 1) % 7 & self.dow)
        if self.dom & STAR or self.dow & STAR:
            return dom and dow
        return dom or dow

    def next(self, after: datetime) -> datetime | None:
        """The first activation strictly after ``after`` (aware), in UTC; None if none within 5 years."""
        loc = self.location if self.location is not None else local_zone()

        def add(t: datetime, delta: timedelta) -> datetime:
            return (t.astimezone(UTC) + delta).astimezone(loc)

        def wall(y: int, mo: int, d: int, h: int = 0) -> datetime:
            """Go's time.Date: out-of-range parts roll over; a time in a DST gap moves forward."""
            y, mo = y + (mo - 1) // 12, (mo - 1) % 12 + 1
            naive = datetime(y, mo, 1, tzinfo=loc) + timedelta(days=d - 1, hours=h)
            return naive.astimezone(UTC).astimezone(loc)

        t = add(after.astimezone(loc), timedelta(seconds=1, microseconds=-after.microsecond))
        added = False
        year_limit = t.year + 5
        while True:  # each `continue` is robfig's `goto WRAP`
            if t.year > year_limit:
                return None
            wrapped = False
            while not 1 << t.month & self.month:
                if not added:
                    added = True
                    t = wall(t.year, t.month, 1)
                t = wall(t.year, t.month + 1, t.day, t.hour)
                if t.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(t):
                if not added:
                    added = True
                    t = wall(t.year, t.month, t.day)
                t = wall(t.year, t.month, t.day + 1, t.hour)
                if t.hour:  # midnight did not exist (DST): back or on to a 00 hour
                    t = add(t, timedelta(hours=24 - t.hour if t.hour > 12 else -t.hour))
                if t.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not 1 << t.hour & self.hour:
                if not added:
                    added = True
                    t = wall(t.year, t.month, t.day, t.hour)
                t = add(t, timedelta(hours=1))
                if t.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not 1 << t.minute & self.minute:
                if not added:
                    added = True
                    t = add(t, -timedelta(seconds=t.second, microseconds=t.microsecond))
                t = add(t, timedelta(minutes=1))
                if t.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not 1 << t.second & self.second:
                if not added:
                    added = True
                    t = add(t, -timedelta(microseconds=t.microsecond))
                t = add(t, timedelta(seconds=1))
                if t.second == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            return t.astimezone(UTC)


class EverySchedule:
    """``@every d``: d after the previous activation, aligned to the millisecond."""

    __slots__ = ("delay_us",)

    def __init__(self, seconds: float):
        ns = max(round(seconds * 1e9), 1_000_000)
        self.delay_us = ns // 1_000_000 * 1000

    def next(self, after: datetime) -> datetime | None:
        return (after + timedelta(microseconds=self.delay_us - after.microsecond % 1000)).astimezone(UTC)


def _parse_int(expr: str) -> int:
    text = expr[1:] if expr[:1] in "+-" else expr
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"failed to parse int from {expr}: invalid syntax")
    num = int(expr)
    if num < 0:
        raise ValueError(f"negative number ({num}) not allowed: {expr}")
    return num


def _parse_range(expr: str, field: int) -> int:
    low, high, names = _BOUNDS[field]
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    extra = 0

    def value(text: str) -> int:
        if names is not None and text.lower() in names:
            return names[text.lower()]
        return _parse_int(text)

    if low_and_high[0] in ("*", "?"):
        start, end, extra = low, high, STAR
    else:
        start = value(low_and_high[0])
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = value(low_and_high[1])
        else:
            raise ValueError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _parse_int(range_and_step[1])
        if len(low_and_high) == 1:
            end = high  # "N/step" means N to the maximum
        if step > 1:
            extra = 0
    else:
        raise ValueError(f"too many slashes: {expr}")
    if start < low:
        raise ValueError(f"beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise ValueError(f"end of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ValueError(f"step of range should be a positive number: {expr}")
    return _bits(start, end, step) | extra


_DESCRIPTORS = {  # name -> (second, minute, hour, dom, month, dow) as single values, None for all
    "@yearly": (0, 0, 0, 1, 1, None),
    "@annually": (0, 0, 0, 1, 1, None),
    "@monthly": (0, 0, 0, 1, None, None),
    "@weekly": (0, 0, 0, None, None, 0),
    "@daily": (0, 0, 0, None, None, None),
    "@midnight": (0, 0, 0, None, None, None),
    "@hourly": (0, 0, None, None, None, None),
}


def parse_schedule(spec: str) -> SpecSchedule | EverySchedule:
    """dapr/kit/cron's parser with optional seconds and descriptors; ValueError with Go's wording."""
    if not spec:
        raise ValueError("empty spec string")
    location: tzinfo | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        cut = next((i for i, ch in enumerate(spec) if ch.isspace()), -1)
        if cut == -1:
            raise ValueError(f"timezone prefix {spec} is not followed by a schedule")
        location = _load_location(spec[spec.index("=") + 1:cut])
        spec = spec[cut:].strip()
    if spec.startswith("@"):
        if spec in _DESCRIPTORS:
            values = _DESCRIPTORS[spec]
            fields = tuple(_all(i) if v is None else 1 << v for i, v in enumerate(values))
            return SpecSchedule(fields, location)
        if spec.startswith("@every "):
            try:
                return EverySchedule(parse_duration(spec[len("@every "):]))
            except ValueError as exc:
                raise ValueError(f"failed to parse duration {spec}: {exc}") from None
        raise ValueError(f"unrecognized descriptor: {spec}")
    parts = spec.split()
    if not 5 <= len(parts) <= 6:
        raise ValueError(f"expected 5 to 6 fields, found {len(parts)}: [{' '.join(parts)}]")
    if len(parts) == 5:
        parts.insert(0, "0")
    fields = []
    for index, part in enumerate(parts):
        bits = 0
        for expr in (e for e in part.split(",") if e):
            bits |= _parse_range(expr, index)
        fields.append(bits)
    return SpecSchedule(tuple(fields), location)


def go_utc_string(ns: int) -> str:
    """Go's ``time.Now().UTC().String()``: "2006-01-02 15:04:05.999999999 +0000 UTC"."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + " +0000 UTC"


class CronBinding(InputBinding):
    """A ``bindings.cron`` component: one task sleeping until the next activation."""

    def __init__(self, component: Component, context: Context):
        reader = MetadataReader(component)
        self.name = component.name
        self.spec = reader.get("schedule") or ""
        if not self.spec:
            reader.fail("schedule", "a cron schedule such as '*/5 * * * *' or '@every 15s' (schedule not set)")
        try:
            self.schedule = parse_schedule(self.spec)
        except ValueError as exc:
            reader.fail("schedule", f"a cron schedule such as '0 */5 * * * *', '@hourly', '@every 15s' or "
                                    f"'CRON_TZ=Europe/Berlin 0 8 * * *': invalid schedule format "
                                    f"'{self.spec}': {exc}")
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._closed = False

    async def start(self, handler: InputHandler) -> None:
        if self._closed:
            raise BindingError("binding is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(handler), name=f"cron:{self.name}")

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    async def _run(self, handler: InputHandler) -> None:
        base = self._now()
        due = self.schedule.next(base)
        while due is not None:
            now = self._now()
            if now < base:  # the wall clock went back: plan again from the new time
                base, due = now, self.schedule.next(now)
                continue
            if now < due:
                await asyncio.sleep(min((due - now).total_seconds(), MAX_SLEEP))
                continue
            self._fire(handler)
            # From the current time, not from `due`: ticks missed while asleep are skipped.
            base = now
            due = self.schedule.next(now)
        log.warning("cron binding %r: schedule %r never fires again", self.name, self.spec)

    def _fire(self, handler: InputHandler) -> None:
        """Run the handler in its own task so a slow app does not delay the next tick (robfig runs jobs concurrently)."""
        metadata = {"timeZone": "Local", "readTimeUTC": go_utc_string(time.time_ns())}
        task = asyncio.get_running_loop().create_task(self._deliver(handler, metadata))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _deliver(self, handler: InputHandler, metadata: dict[str, str]) -> None:
        try:
            await handler(b"", metadata)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cron binding %r: delivering a tick failed", self.name)
