"""Reminder time specs (daprd's parsing), the one-timer scheduler and the LMDB store."""

from __future__ import annotations

import asyncio
import calendar
import heapq
import os
import subprocess
import sys
import time

import orjson
import pytest

from pillion.runtime.reminders import (
    Period,
    Reminder,
    ReminderStore,
    Scheduler,
    StoreInUse,
    TimeSpecError,
    add_date,
    parse_due_time,
    parse_iso8601_duration,
    parse_period,
    parse_rfc3339,
    parse_ttl,
    reminder_key,
)

NS = 1_000_000_000


def utc(y, mo, d, h=0, mi=0, s=0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, s)))


NOW = utc(2024, 1, 31, 12, 0, 0) + 0.75  # a non-whole second, to see truncation


# ------------------------------------------------------------------ ISO 8601 durations

@pytest.mark.parametrize("text, expected", [
    ("PT10S", (0, 0, 0, 10 * NS, -1)),
    ("PT1H2M3S", (0, 0, 0, 3723 * NS, -1)),
    ("P1DT2H", (0, 0, 1, 2 * 3600 * NS, -1)),
    ("P2W", (0, 0, 14, 0, -1)),
    ("P1W2D", (0, 0, 9, 0, -1)),
    ("P1Y2M3D", (1, 2, 3, 0, -1)),
    ("P1M", (0, 1, 0, 0, -1)),
    ("PT1M", (0, 0, 0, 60 * NS, -1)),
    ("P1MT1M", (0, 1, 0, 60 * NS, -1)),
    ("R5/PT10S", (0, 0, 0, 10 * NS, 5)),
    ("R1/P1D", (0, 0, 1, 0, 1)),
    ("R0/PT1S", (0, 0, 0, NS, 0)),
    ("R5", (0, 0, 0, 0, 5)),          # kit: repetitions alone, zero duration
    ("R5/", (0, 0, 0, 0, 5)),
    ("PT", (0, 0, 0, 0, -1)),         # kit accepts an empty time part
    ("P1D1D", (0, 0, 2, 0, -1)),      # days add up ...
    ("P1M2M", (0, 2, 0, 0, -1)),      # ... months overwrite
    ("P5", (0, 0, 0, 0, -1)),         # trailing digits without designator are ignored
    ("P1X", (0, 0, 0, 0, -1)),        # unknown letters are skipped
    ("P-1D", (0, 0, -1, 0, -1)),      # Atoi takes a sign
    ("P1DT", (0, 0, 1, 0, -1)),       # 'T' right after a designator: empty time part
    ("PTT", (0, 0, 0, 0, -1)),        # kit accepts a repeated 'T' right after 'T'
])
def test_iso_durations_parse_like_dapr_kit(text, expected):
    assert parse_iso8601_duration(text) == expected


@pytest.mark.parametrize("text", [
    "", "P", "1h", "R/PT1S", "Rx/PT1S", "R5/X", "PT1D", "P1H", "P1S", "P1T1H", "PT1.5S",
    "PD", "pt10s", "10S", "R99999999999999999999/PT1S",
])
def test_iso_duration_errors(text):
    with pytest.raises(ValueError, match="unsupported ISO8601 duration format"):
        parse_iso8601_duration(text)


# ------------------------------------------------------------------ RFC 3339

@pytest.mark.parametrize("text, seconds, nanos", [
    ("2020-10-02T15:00:00Z", utc(2020, 10, 2, 15), 0),
    ("2020-10-02T15:00:00+02:00", utc(2020, 10, 2, 13), 0),
    ("2020-10-02T15:00:00-05:30", utc(2020, 10, 2, 20, 30), 0),
    ("2020-10-02T15:00:00.5Z", utc(2020, 10, 2, 15), 500_000_000),
    ("2020-10-02T15:00:00.123456789Z", utc(2020, 10, 2, 15), 123_456_789),
    ("2020-10-02T15:00:00.1234567891234Z", utc(2020, 10, 2, 15), 123_456_789),
    ("2020-10-02T15:00:00,25+01:00", utc(2020, 10, 2, 14), 250_000_000),
    ("2024-02-29T00:00:00Z", utc(2024, 2, 29), 0),
])
def test_rfc3339(text, seconds, nanos):
    assert parse_rfc3339(text) == (seconds, nanos)


@pytest.mark.parametrize("text", [
    "2020-10-02 15:00:00Z", "2020-10-02t15:00:00Z", "2020-10-02T15:00:00z", "2020-10-02T15:00:00",
    "2020-10-02T15:00Z", "2020-13-02T15:00:00Z", "2023-02-29T00:00:00Z", "2020-10-02T24:00:00Z",
    "2020-10-02T15:00:60Z", "2020-10-02T15:00:00+24:00", "2020-10-02T15:00:00+0200", "20-10-02T15:00:00Z",
    "2020-10-02T15:00:00.Z",
])
def test_rfc3339_errors(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)


# ------------------------------------------------------------------ dueTime

@pytest.mark.parametrize("text, expected", [
    ("1m", utc(2024, 1, 31, 12, 1, 0)),             # Go duration, truncated
    ("0h0m3s0ms", utc(2024, 1, 31, 12, 0, 3)),
    ("1.5s", utc(2024, 1, 31, 12, 0, 2)),           # 12:00:02.25 -> 12:00:02
    ("500ms", utc(2024, 1, 31, 12, 0, 1)),          # 12:00:01.25 -> 12:00:01
    ("0h0m1s0ms0\u03bcs", utc(2024, 1, 31, 12, 0, 1)),  # Python SDK format
    ("PT10S", utc(2024, 1, 31, 12, 0, 10)),
    ("P1DT2H", utc(2024, 2, 1, 14, 0, 0)),
    ("P1M", utc(2024, 3, 2, 12, 0, 0)),             # Jan 31 + 1 month = "Feb 31" = Mar 2 (leap year)
    ("P1Y", utc(2025, 1, 31, 12, 0, 0)),
    ("P1W", utc(2024, 2, 7, 12, 0, 0)),
    ("0", utc(2024, 1, 31, 12, 0, 0)),              # "0": now, truncated
    ("-5s", utc(2024, 1, 31, 11, 59, 55)),          # past: fires at once
    ("2030-01-01T00:00:00Z", utc(2030, 1, 1)),
    ("2030-01-01T00:00:00.999999999+01:00", utc(2029, 12, 31, 23)),
    ("2020-01-01T00:00:00Z", utc(2020, 1, 1)),      # past absolute time is accepted
])
def test_due_time(text, expected):
    assert parse_due_time(text, NOW) == expected


def test_empty_due_time_is_now_untruncated():
    assert parse_due_time("", NOW) == NOW


@pytest.mark.parametrize("text, message", [
    ("R5/PT10S", "error parsing reminder due time: repetitions are not allowed"),
    ("tomorrow", "error parsing reminder due time: unsupported time/duration format: tomorrow"),
    ("10", "error parsing reminder due time: unsupported time/duration format: 10"),
    ("2020-10-02", "error parsing reminder due time: unsupported time/duration format: 2020-10-02"),
])
def test_due_time_errors(text, message):
    with pytest.raises(TimeSpecError) as info:
        parse_due_time(text, NOW)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_timer_kind_in_messages():
    with pytest.raises(TimeSpecError, match="^error parsing timer due time: "):
        parse_due_time("x", NOW, kind="timer")
    with pytest.raises(TimeSpecError, match="^invalid timer period: "):
        parse_period("x", kind="timer")


# ------------------------------------------------------------------ period

@pytest.mark.parametrize("text, fields", [
    ("", (0, 0, 0, 0, None)),
    ("1m", (0, 0, 0, 60 * NS, None)),
    ("0h0m9s0ms", (0, 0, 0, 9 * NS, None)),
    ("250ms", (0, 0, 0, NS // 4, None)),
    ("PT10S", (0, 0, 0, 10 * NS, None)),
    ("R5/PT10S", (0, 0, 0, 10 * NS, 5)),
    ("R1/PT10S", (0, 0, 0, 10 * NS, 1)),
    ("P1Y2M3W4DT5H6M7S", (1, 2, 25, (5 * 3600 + 6 * 60 + 7) * NS, None)),
])
def test_period_parse(text, fields):
    p = parse_period(text)
    assert (p.years, p.months, p.days, p.ns, p.repeats) == fields
    assert p.text == text


@pytest.mark.parametrize("text, repeats", [("", False), ("0", False), ("PT0S", False), ("R5", False),
                                           ("1s", True), ("R2/P1M", True), ("R1/PT1S", True)])
def test_period_has_repeats(text, repeats):
    assert parse_period(text).has_repeats is repeats


@pytest.mark.parametrize("text, message", [
    ("R0/PT10S", "invalid reminder period: has zero repetitions"),
    ("R0", "invalid reminder period: has zero repetitions"),
    ("every minute", "invalid reminder period: parse error: unsupported duration format: every minute"),
    ("10", "invalid reminder period: parse error: unsupported duration format: 10"),
    ("R/PT1S", "invalid reminder period: parse error: unsupported duration format: R/PT1S"),
    ("-1s", "invalid reminder period: negative periods are not supported: -1s"),
    ("P-1D", "invalid reminder period: negative periods are not supported: P-1D"),
])
def test_period_errors(text, message):
    with pytest.raises(TimeSpecError) as info:
        parse_period(text)
    assert str(info.value) == message


def test_period_fixed_iteration_is_anchored():
    p = parse_period("100ms")
    first = 1_700_000_000.0
    t, points = first, []
    for _ in range(1000):
        t = p.next_after(t, first)
        points.append(t)
    assert points[-1] == pytest.approx(first + 100.0, abs=1e-6)  # no accumulated drift
    assert all(b > a for a, b in zip(points, points[1:]))


def test_period_months_calendar_arithmetic():
    p = parse_period("P1M")
    first = utc(2023, 1, 15, 8)
    t, seen = first, []
    for _ in range(13):
        t = p.next_after(t, first)
        seen.append(time.gmtime(t)[:4])
    assert seen[0] == (2023, 2, 15, 8) and seen[1] == (2023, 3, 15, 8) and seen[11] == (2024, 1, 15, 8)
    assert seen[12] == (2024, 2, 15, 8)


def test_period_month_end_normalises_like_go_adddate():
    p = parse_period("P1M")
    first = utc(2023, 1, 31)
    second = p.next_after(first, first)
    assert time.gmtime(second)[:3] == (2023, 3, 3)  # Feb 31 -> Mar 3, as Go
    assert time.gmtime(p.next_after(second, first))[:3] == (2023, 4, 3)  # steps from the previous fire


def test_period_years_and_leap_day():
    p = parse_period("P1Y")
    first = utc(2024, 2, 29, 6)
    assert time.gmtime(p.next_after(first, first))[:4] == (2025, 3, 1, 6)
    assert add_date(utc(2024, 3, 1), 0, -1, 0) == utc(2024, 2, 1)
    assert add_date(utc(2024, 12, 31), 0, 2, 0) == utc(2025, 3, 3)
    assert add_date(utc(2024, 1, 1) + 0.5, 0, 0, 40) == utc(2024, 2, 10) + 0.5


def test_period_days_are_exact_in_utc():
    p = parse_period("P1DT1H")
    first = utc(2024, 3, 30)
    assert p.next_after(first, first) == first + 25 * 3600


def test_period_repetitions_derived_and_explicit():
    p = parse_period("R3/PT10S")
    first = 1000.0
    assert p.next_after(1000.0, first) == 1010.0
    assert p.next_after(1010.0, first) == 1020.0
    assert p.next_after(1020.0, first) is None              # third fire was the last
    assert p.next_after(1000.0, first, remaining=0) is None
    assert p.next_after(1000.0, first, remaining=2) == 1010.0
    assert parse_period("").next_after(1000.0, 1000.0) is None
    assert parse_period("R5").next_after(1000.0, 1000.0) is None


def test_period_calendar_repetitions_derived():
    p = parse_period("R2/P1M")
    first = utc(2024, 1, 1)
    second = p.next_after(first, first)
    assert second == utc(2024, 2, 1)
    assert p.next_after(second, first) is None


def test_period_skip_after():
    p = parse_period("PT10S")
    assert p.next_after(1000.0, 1000.0, after=1095.0) == 1100.0
    assert p.next_after(1000.0, 1000.0, after=1100.0) == 1110.0
    m = parse_period("P1M")
    first = utc(2024, 1, 10)
    assert m.next_after(first, first, after=utc(2024, 6, 1)) == utc(2024, 6, 10)


# ------------------------------------------------------------------ ttl

def test_ttl_formats():
    due = utc(2024, 1, 31, 12, 0, 10)
    assert parse_ttl("", due, NOW) is None
    assert parse_ttl("1h", due, NOW) == due + 3600
    assert parse_ttl("1.9s", due, NOW) == due + 1              # truncated
    assert parse_ttl("PT30M", due, NOW) == due + 1800
    assert parse_ttl("P1M", due, NOW) == utc(2024, 3, 2, 12, 0, 10)
    assert parse_ttl("2030-01-01T00:00:00.7Z", due, NOW) == utc(2030, 1, 1)
    assert parse_ttl("0", due, NOW) == due                     # due == expiry is accepted


def test_ttl_errors():
    due = utc(2024, 1, 31, 12, 0, 10)
    with pytest.raises(TimeSpecError, match=r"^reminder A\|\|1\|\|r has already expired: "
                                            r"dueTime: 2024-01-31 12:00:10 \+0000 UTC TTL: 2020-01-01T00:00:00Z$"):
        parse_ttl("2020-01-01T00:00:00Z", due, NOW, key="A||1||r")
    with pytest.raises(TimeSpecError, match="has already expired"):
        parse_ttl("-1s", due, NOW)
    with pytest.raises(TimeSpecError, match="has already expired"):  # before the due time, after now
        parse_ttl("2024-01-31T12:00:05Z", due, NOW)
    with pytest.raises(TimeSpecError, match="^error parsing reminder TTL: repetitions are not allowed$"):
        parse_ttl("R2/PT1M", due, NOW)
    with pytest.raises(TimeSpecError, match="^error parsing reminder TTL: unsupported time/duration format: soon$"):
        parse_ttl("soon", due, NOW)


# ------------------------------------------------------------------ reminder lifecycle

def fires(rec: Reminder, limit: int = 100) -> list[float]:
    """Scheduled fire times, firing exactly on time."""
    out = []
    while rec.active and len(out) < limit:
        out.append(rec.next_due)
        if not rec.advance(rec.next_due):
            break
    return out


def test_reminder_one_shot():
    rec = Reminder.create("T", "1", "r", "5s", now=NOW)
    assert rec.key == "T||1||r" and rec.next_due == utc(2024, 1, 31, 12, 0, 5)
    assert fires(rec) == [utc(2024, 1, 31, 12, 0, 5)]


def test_reminder_repetitions_end_first():
    rec = Reminder.create("T", "1", "r", "0", "R3/PT10S", "1h", now=NOW)
    base = utc(2024, 1, 31, 12)
    assert fires(rec) == [base, base + 10, base + 20]


def test_reminder_ttl_ends_first():
    rec = Reminder.create("T", "1", "r", "0", "R10/PT10S", "25s", now=NOW)
    base = utc(2024, 1, 31, 12)
    assert fires(rec) == [base, base + 10, base + 20]


def test_reminder_ttl_exclusive_boundary():
    rec = Reminder.create("T", "1", "r", "0", "PT10S", "30s", now=NOW)
    base = utc(2024, 1, 31, 12)
    assert fires(rec) == [base, base + 10, base + 20]   # +30 is not strictly before the ttl


def test_reminder_unlimited_until_ttl_monthly():
    rec = Reminder.create("T", "1", "r", "2024-02-01T00:00:00Z", "P1M", "P1Y", now=NOW)
    got = [time.gmtime(t)[:3] for t in fires(rec)]
    assert len(got) == 12 and got[0] == (2024, 2, 1) and got[-1] == (2025, 1, 1)


def test_reminder_missed_periods_fire_once_and_keep_repetitions():
    rec = Reminder.create("T", "1", "r", "0", "R5/PT1M", now=NOW)
    base = utc(2024, 1, 31, 12)
    assert rec.advance(base + 1) and rec.next_due == base + 60 and rec.remaining == 4
    # down for 10 minutes: on start the overdue fire happens once, then the schedule resumes
    restart = base + 60 + 600 + 5
    assert rec.next_due < restart
    assert rec.advance(restart)
    assert rec.next_due == base + 60 * 12 and rec.remaining == 3


def test_reminder_data_and_json_round_trip():
    rec = Reminder.create("T", "1", "r", "1s", "PT1S", "1m", data=b'{"a":[1,2]}', now=NOW)
    back = Reminder.from_json(rec.to_json())
    assert back == rec and back.data == '{"a":[1,2]}'
    record = orjson.loads(rec.to_json())  # positional, so a record holds values only
    assert record[:7] == ["T", "1", "r", "1s", "PT1S", "1m", '{"a":[1,2]}'] and len(record) == 12


def test_reminder_create_errors_propagate():
    with pytest.raises(TimeSpecError, match="invalid reminder period: has zero repetitions"):
        Reminder.create("T", "1", "r", "1s", "R0/PT1S", now=NOW)
    with pytest.raises(TimeSpecError, match=r"reminder T\|\|1\|\|r has already expired"):
        Reminder.create("T", "1", "r", "1m", "", "2024-01-31T12:00:30Z", now=NOW)


# ------------------------------------------------------------------ scheduler

class FakeHandle:
    def __init__(self, loop, when, callback):
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    def cancel(self):
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop: a clock we move and call_at/call_soon."""

    def __init__(self, start: float = 100.0):
        self.now = start
        self.handles: list[tuple[float, int, FakeHandle]] = []
        self.seq = 0

    def time(self):
        return self.now

    def call_at(self, when, callback):
        handle = FakeHandle(self, when, callback)
        self.seq += 1
        heapq.heappush(self.handles, (when, self.seq, handle))
        return handle

    def call_soon(self, callback):
        return self.call_at(self.now, callback)

    def armed(self) -> int:
        return sum(1 for _, _, h in self.handles if not h.cancelled)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self.handles and self.handles[0][0] <= target:
            when, _, handle = heapq.heappop(self.handles)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            handle.callback()
        self.now = target


class Wall:
    def __init__(self, loop: FakeLoop, offset: float = 1_700_000_000.0):
        self.loop, self.offset = loop, offset

    def __call__(self):
        return self.loop.now + self.offset


def make(**kw):
    loop = FakeLoop()
    wall = Wall(loop)
    fired: list[tuple[str, float]] = []
    sched = Scheduler(lambda key: fired.append((key, wall())), loop=loop, wall=wall, **kw)
    return loop, wall, sched, fired


def test_scheduler_orders_and_uses_one_timer():
    loop, wall, sched, fired = make()
    t0 = wall()
    for i, delay in enumerate([5, 1, 3, 2, 4]):
        sched.add(f"k{i}", t0 + delay)
    assert loop.armed() == 1 and len(sched) == 5
    loop.advance(10)
    assert [k for k, _ in fired] == ["k1", "k3", "k2", "k4", "k0"]
    assert [round(t - t0, 3) for _, t in fired] == [1, 2, 3, 4, 5]
    assert len(sched) == 0


def test_scheduler_never_fires_early_and_reschedule_and_remove():
    loop, wall, sched, fired = make()
    t0 = wall()
    sched.add("a", t0 + 1.0004)
    sched.add("b", t0 + 2)
    sched.add("a", t0 + 3)        # reschedule: the old entry goes stale
    assert sched.remove("b") and not sched.remove("b") and not sched.remove("zzz")
    loop.advance(2.5)
    assert fired == []
    loop.advance(1)
    assert [k for k, _ in fired] == ["a"] and fired[0][1] >= t0 + 3
    assert sched.due("a") is None


def test_scheduler_past_due_fires_at_once_and_same_key_once():
    loop, wall, sched, fired = make()
    t0 = wall()
    sched.add("old", t0 - 3600)
    sched.add("x", t0 + 1)
    sched.add("x", t0 + 2)
    sched.add("x", t0 + 1)        # back to the first time: still one fire
    loop.advance(0)
    assert fired == [("old", t0)]
    loop.advance(5)
    assert [k for k, _ in fired] == ["old", "x"]


def test_scheduler_periodic_readd_from_callback():
    loop = FakeLoop()
    wall = Wall(loop)
    fired = []

    def on_due(key):
        fired.append(wall())
        if len(fired) < 5:
            sched.add(key, fired[-1] + 10)

    sched = Scheduler(on_due, loop=loop, wall=wall)
    t0 = wall()
    sched.add("p", t0 + 10)
    loop.advance(100)
    assert [round(t - t0) for t in fired] == [10, 20, 30, 40, 50]


def test_scheduler_lazy_deletion_compacts():
    loop, wall, sched, fired = make()
    t0 = wall()
    for i in range(1000):
        sched.add(f"k{i}", t0 + 100 + i)
    for round_ in range(50):            # churn: reschedule everything again and again
        for i in range(1000):
            sched.add(f"k{i}", t0 + 200 + round_ + i)
    assert sched.heap_size <= 2 * len(sched) + 1
    assert sched.compactions > 0
    for i in range(0, 1000, 2):
        sched.remove(f"k{i}")
    for i in range(2000):               # add/remove churn with fresh keys
        sched.add(f"tmp{i}", t0 + 50)
        sched.remove(f"tmp{i}")
    assert len(sched) == 500 and sched.heap_size <= 2 * len(sched) + 64
    assert len(sched._keys) <= 1001      # slots are reused
    loop.advance(10_000)
    assert sorted(k for k, _ in fired) == sorted(f"k{i}" for i in range(1, 1000, 2))


def test_scheduler_max_sleep_and_forward_clock_step():
    loop, wall, sched, fired = make(max_sleep=60)
    t0 = wall()
    sched.add("in1h", t0 + 3600)
    assert loop.handles[0][0] == pytest.approx(loop.now + 60)   # wakes at least every minute
    wall.offset += 3000                                          # NTP steps the wall clock +3000 s
    loop.advance(60)
    assert fired == [] and sched.clock_steps == 1
    loop.advance(539)                                            # wall due is still t0+3600: 540 s away
    assert fired == []
    loop.advance(2)
    assert [k for k, _ in fired] == ["in1h"] and fired[0][1] == pytest.approx(t0 + 3600, abs=1.5)


def test_scheduler_backward_clock_step_does_not_fire_early():
    loop, wall, sched, fired = make(max_sleep=30)
    t0 = wall()
    sched.add("r", t0 + 100)
    wall.offset -= 1000
    loop.advance(100)
    assert fired == []
    loop.advance(1000)
    assert [k for k, _ in fired] == ["r"] and fired[0][1] >= t0 + 100


def test_scheduler_batches_many_due_keys():
    loop, wall, sched, fired = make(batch=100)
    t0 = wall()
    for i in range(1050):
        sched.add(f"k{i}", t0 - 1)
    loop.advance(0)
    assert len(fired) == 1050


def test_scheduler_callback_errors_are_contained():
    loop = FakeLoop()
    wall = Wall(loop)
    seen = []

    def on_due(key):
        seen.append(key)
        raise RuntimeError("boom")

    sched = Scheduler(on_due, loop=loop, wall=wall)
    sched.add("a", wall() + 1)
    sched.add("b", wall() + 2)
    loop.advance(3)
    assert seen == ["a", "b"]


def test_scheduler_real_loop_async_callbacks():
    async def main():
        fired = []
        start = time.time()

        async def on_due(key):
            await asyncio.sleep(0)
            fired.append((key, time.time() - start))

        sched = Scheduler(on_due)
        sched.add("c", start + 0.15)
        sched.add("a", start + 0.05)
        sched.add("b", start + 0.10)
        sched.add("gone", start + 0.07)
        sched.remove("gone")
        await asyncio.sleep(0.3)
        sched.close()
        return fired

    fired = asyncio.run(main())
    assert [k for k, _ in fired] == ["a", "b", "c"]
    assert all(t >= d - 0.002 for (_, t), d in zip(fired, [0.05, 0.10, 0.15]))


# ------------------------------------------------------------------ store

def test_store_round_trip_and_restart(tmp_path):
    path = str(tmp_path / "reminders")

    async def write():
        store = ReminderStore(path)
        recs = [Reminder.create("T", str(i), "r", "1m", "PT10S", data=b'"x"', now=NOW) for i in range(50)]
        await asyncio.gather(*(store.save(r) for r in recs))
        assert store.commits <= 2       # concurrent saves share a commit
        await store.delete("T||3||r")
        await store.delete("T||missing||r")
        rec = store.get("T||4||r")
        rec.advance(rec.next_due)
        await store.save(rec)
        await store.aclose()
        return recs

    recs = asyncio.run(write())
    store = ReminderStore(path)          # reopen: what was acknowledged is there
    try:
        loaded = {r.key: r for r in store.load_all()}
        assert len(loaded) == 49 and "T||3||r" not in loaded
        assert loaded["T||0||r"] == recs[0]
        assert loaded["T||4||r"].next_due == recs[4].next_due + 10
        assert dict(store.iter_schedule())["T||7||r"] == recs[7].next_due
        assert len(store) == 49 and store.get("nope") is None
    finally:
        store.close()


def test_store_batches_and_last_write_wins(tmp_path):
    async def main():
        store = ReminderStore(str(tmp_path / "r"))
        a = Reminder.create("T", "1", "r", "1s", now=NOW)
        b = Reminder.create("T", "1", "r", "2s", now=NOW)
        await asyncio.gather(store.save(a), store.save(b), store.delete("T||2||r"))
        await asyncio.gather(store.delete("T||1||r"), store.save(a))
        got = store.get("T||1||r")
        await store.aclose()
        return got, a

    got, a = asyncio.run(main())
    assert got == a


def test_store_damaged_records_are_dropped(tmp_path):
    path = str(tmp_path / "r")
    store = ReminderStore(path)
    store.put_sync([Reminder.create("T", "1", "r", "1s", now=NOW)])
    with store.env.begin(write=True) as txn:
        txn.put(b"T||2||r", b"not json", db=store.records)
    assert [r.key for r in store.load_all()] == ["T||1||r"]
    assert len(store) == 1
    store.close()


def test_store_owner_lock(tmp_path):
    path = str(tmp_path / "r")
    store = ReminderStore(path)
    try:
        code = ("import sys\nfrom pillion.runtime.reminders import ReminderStore, StoreInUse\n"
                "try:\n    ReminderStore(sys.argv[1])\nexcept StoreInUse:\n    sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code, path]).returncode == 3
    finally:
        store.close()
    ReminderStore(path).close()
    assert StoreInUse.__mro__[1] is OSError


def test_store_survives_kill_9(tmp_path):
    """A save that returned is on disk even when the process dies right after."""
    path = str(tmp_path / "r")
    code = (
        "import asyncio, os, sys\n"
        "from pillion.runtime.reminders import Reminder, ReminderStore\n"
        "async def main():\n"
        "    s = ReminderStore(sys.argv[1])\n"
        "    await asyncio.gather(*(s.save(Reminder.create('T', str(i), 'r', '1h', now=1e9 + 1)) for i in range(20)))\n"
        "    os.kill(os.getpid(), 9)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code, path])
    assert result.returncode == -9
    store = ReminderStore(path)
    try:
        assert len(store.load_all()) == 20
    finally:
        store.close()


def test_restart_fires_overdue_once(tmp_path):
    """Down across many periods: on start the reminder fires once, then follows its schedule."""
    path = str(tmp_path / "r")
    store = ReminderStore(path)
    rec = Reminder.create("T", "1", "r", "0", "PT10S", now=NOW)
    store.put_sync([rec])
    store.close()

    loop = FakeLoop()
    wall = Wall(loop, offset=rec.next_due + 95 - loop.now)   # started 95 s (9.5 periods) later
    store = ReminderStore(path)
    fired = []

    def on_due(key):
        r = store.get(key)
        fired.append(wall())
        if r.advance(wall()):
            store.put_sync([r])
            sched.add(key, r.next_due)

    sched = Scheduler(on_due, loop=loop, wall=wall)
    for key, due in store.iter_schedule():
        sched.add(key, due)
    loop.advance(30)
    store.close()
    base = rec.next_due
    assert [round(t - base) for t in fired] == [95, 100, 110, 120]


def test_key_helper():
    assert reminder_key("A", "b", "c") == "A||b||c"
    assert isinstance(Period(), Period)


# ------------------------------------------------------------------ scale

SCALE = r"""
import asyncio, os, sys, time
from pillion.runtime.reminders import Reminder, ReminderStore, Scheduler

def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    return out

path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "write":
    store = ReminderStore(path)
    now = time.time()
    recs = [Reminder.create("SensorActor", f"device-{i:06d}", "poll", f"{i % 3600}s", "PT1H", "",
                            data=b'{"threshold":42}', now=now) for i in range(n)]
    store.put_sync(recs)
    store.close()
    sys.exit(0)

async def main():
    # cold start, as after a reboot: drop the file's cached pages (they were fsynced), else the
    # kernel's fault-around maps cached neighbours of every page read and RssFile counts them
    fd = os.open(os.path.join(path, "data.mdb"), os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    base = rss()
    t = time.perf_counter()
    store = ReminderStore(path)
    sched = Scheduler(lambda key: None)
    if mode == "schedule":
        for key, due in store.iter_schedule():
            sched.add(key, due)
        kept = None
    else:
        kept = {}
        for r in store.load_all():
            kept[r.key] = r
            sched.add(r.key, r.next_due)
    elapsed = time.perf_counter() - t
    after = rss()
    print(len(sched), round(elapsed, 3), round(base["VmRSS"], 1), round(after["VmRSS"], 1),
          round(after["RssAnon"], 1), round(after["RssFile"], 1), round(base["RssAnon"], 1))
    sched.close()
    store.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["schedule", "records"])
def test_100k_reminders_load_time_and_memory(tmp_path, mode):
    path = str(tmp_path / "r")
    n = 100_000
    subprocess.run([sys.executable, "-c", SCALE, path, "write", str(n)], check=True)
    out = subprocess.run([sys.executable, "-c", SCALE, path, mode, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    count, elapsed, base, total, anon, file_, base_anon = int(out[0]), *map(float, out[1:])
    print(f"\n{mode}: {count} reminders loaded in {elapsed:.3f} s; RSS {base:.1f} -> {total:.1f} MB "
          f"(anon {base_anon:.1f} -> {anon:.1f}, file {file_:.1f})")
    assert count == n
    assert elapsed < (10 if os.environ.get("CI") else 5)
    assert total < 50 if mode == "schedule" else total < 200
