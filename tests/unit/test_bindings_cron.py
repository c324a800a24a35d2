"""``bindings.cron``: the schedule grammar, next-fire times (DST included) and the tick loop."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import uvloop

from pillion.components.bindings import cron
from pillion.components.bindings.cron import CronBinding, go_utc_string, parse_schedule
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError

UTC = timezone.utc


def component(**metadata: str) -> Component:
    return Component(
        name="tick", namespace=None, type="bindings.cron", version="v1",
        metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/cron.yaml", 1),
    )


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def nxt(spec: str, after: datetime) -> datetime | None:
    return parse_schedule(spec).next(after)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(autouse=True)
def utc_local(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")


@pytest.mark.parametrize("spec, after, expected", [
    ("* * * * *", utc(2024, 1, 1, 10, 0, 30), utc(2024, 1, 1, 10, 1)),
    ("*/15 * * * * *", utc(2024, 1, 1, 10, 0, 16), utc(2024, 1, 1, 10, 0, 30)),
    ("0 30 * * * *", utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 11, 30)),
    ("5/20 * * * * *", utc(2024, 1, 1, 10, 0, 46), utc(2024, 1, 1, 10, 1, 5)),
    ("0 9-17/4 * * mon-fri", utc(2024, 1, 5, 17, 0), utc(2024, 1, 8, 9, 0)),  # Fri -> Mon
    ("0 0 1,15 * *", utc(2024, 1, 2), utc(2024, 1, 15)),
    ("0 0 * JAN,jul ?", utc(2024, 2, 1), utc(2024, 7, 1)),
    ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
    ("0 0 13 * 5", utc(2024, 1, 1), utc(2024, 1, 5)),  # dom OR dow: Friday the 5th comes first
    ("0 0 13 * *", utc(2024, 1, 1), utc(2024, 1, 13)),
    ("@yearly", utc(2024, 6, 1), utc(2025, 1, 1)),
    ("@annually", utc(2024, 6, 1), utc(2025, 1, 1)),
    ("@monthly", utc(2024, 1, 31, 12), utc(2024, 2, 1)),
    ("@weekly", utc(2024, 1, 3), utc(2024, 1, 7)),  # Sunday
    ("@daily", utc(2024, 1, 3, 0, 0), utc(2024, 1, 4)),
    ("@midnight", utc(2024, 12, 31, 23, 59, 59), utc(2025, 1, 1)),
    ("@hourly", utc(2024, 1, 1, 10, 59, 59, 999999), utc(2024, 1, 1, 11)),
    ("CRON_TZ=Asia/Tokyo 0 9 * * *", utc(2024, 1, 1, 1), utc(2024, 1, 2, 0)),
    ("TZ=America/New_York 0 0 12 * * *", utc(2024, 7, 1, 12), utc(2024, 7, 1, 16)),
])
def test_next(spec, after, expected):
    assert nxt(spec, after) == expected


def test_every_aligns_to_the_millisecond():
    after = utc(2024, 1, 1, 0, 0, 0, 123456)
    assert nxt("@every 1m30s", after) == utc(2024, 1, 1, 0, 1, 30, 123000)
    assert nxt("@every 10us", after) == utc(2024, 1, 1, 0, 0, 0, 124000)  # below 1 ms: 1 ms


def test_impossible_date_never_fires():
    assert nxt("0 0 30 2 *", utc(2024, 1, 1)) is None


def test_local_zone_follows_tz(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert nxt("0 8 * * *", utc(2024, 1, 1, 12)) == utc(2024, 1, 2, 7)


def test_dst_spring_forward_skips_the_missing_hour():
    # 2024-03-10 02:30 does not exist in New York: robfig skips that day.
    spec = "CRON_TZ=America/New_York 30 2 * * *"
    assert nxt(spec, utc(2024, 3, 9, 12)) == utc(2024, 3, 11, 6, 30)


def test_dst_fall_back_runs_the_repeated_hour_twice():
    spec = "CRON_TZ=America/New_York 30 1 * * *"
    first = nxt(spec, utc(2024, 11, 3, 4))
    assert first == utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert nxt(spec, first) == utc(2024, 11, 3, 6, 30)  # 01:30 EST


def test_midnight_missing_in_sao_paulo_2018():
    # 2018-11-04 00:00 did not exist in Sao Paulo (clocks went to 01:00).
    spec = "CRON_TZ=America/Sao_Paulo 0 0 * * *"
    got = nxt(spec, utc(2018, 11, 3, 12))
    assert got == utc(2018, 11, 5, 2)  # robfig never sees an hour 0 on the 4th, so the 5th
    assert got.astimezone(ZoneInfo("America/Sao_Paulo")).hour == 0


@pytest.mark.parametrize("spec, message", [
    ("", "empty spec string"),
    ("* * * *", "expected 5 to 6 fields, found 4"),
    ("* * * * * * *", "expected 5 to 6 fields, found 7"),
    ("60 * * * * *", "end of range (60) above maximum (59)"),
    ("* * 0 * *", "beginning of range (0) below minimum (1)"),
    ("* * * * 7", "end of range (7) above maximum (6)"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
    ("*/0 * * * *", "step of range should be a positive number"),
    ("1-2-3 * * * *", "too many hyphens"),
    ("1/2/3 * * * *", "too many slashes"),
    ("x * * * *", "failed to parse int from x"),
    ("@every", "unrecognized descriptor"),
    ("@every 5", "failed to parse duration"),
    ("@fortnightly", "unrecognized descriptor"),
    ("CRON_TZ=Mars/Olympus 0 * * * *", "provided bad location Mars/Olympus"),
    ("CRON_TZ=UTC", "is not followed by a schedule"),
])
def test_bad_schedules(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(spec)


def test_bad_schedule_is_a_config_error_naming_the_item():
    with pytest.raises(ConfigError) as info:
        CronBinding(component(direction="input", schedule="61 * * * *"), None)
    assert info.value.field == "spec.metadata[1].schedule"
    assert "invalid schedule format '61 * * * *'" in info.value.expected
    with pytest.raises(ConfigError) as info:
        CronBinding(component(direction="input"), None)
    assert info.value.field == "spec.metadata"


def test_go_time_string():
    assert go_utc_string(1_700_000_000_123_400_000) == "2023-11-14 22:13:20.1234 +0000 UTC"
    assert go_utc_string(1_700_000_000_000_000_000) == "2023-11-14 22:13:20 +0000 UTC"


def test_ticks_reach_the_handler_and_stop_on_close():
    binding = CronBinding(component(Schedule="@every 50ms"), None)
    calls = []

    async def handler(data, metadata):
        calls.append((data, metadata))
        return False  # the app's answer is ignored: no retry, the schedule goes on

    async def main():
        await binding.start(handler)
        await asyncio.sleep(0.33)
        await binding.close()
        count = len(calls)
        await asyncio.sleep(0.12)
        return count

    count = run(main())
    assert 3 <= count <= 8
    assert len(calls) == count
    data, metadata = calls[0]
    assert data == b""
    assert metadata["timeZone"] == "Local"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC", metadata["readTimeUTC"])


def test_a_failing_or_slow_handler_does_not_stop_the_schedule():
    binding = CronBinding(component(schedule="@every 40ms"), None)
    calls = []

    async def handler(data, metadata):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("app down")
        await asyncio.sleep(10)  # close cancels it
        return True

    async def main():
        await binding.start(handler)
        await asyncio.sleep(0.25)
        await binding.close()

    run(main())
    assert len(calls) >= 3


def test_wall_clock_jump_does_not_replay_missed_ticks(monkeypatch):
    """After the clock jumps a day ahead, one tick fires, not thousands."""
    binding = CronBinding(component(schedule="@every 1s"), None)
    offset = [0.0]
    real_now = cron.CronBinding._now
    monkeypatch.setattr(cron.CronBinding, "_now", staticmethod(lambda: real_now() + timedelta(seconds=offset[0])))
    monkeypatch.setattr(cron, "MAX_SLEEP", 0.05)
    calls = []

    async def handler(data, metadata):
        calls.append(1)
        return True

    async def main():
        await binding.start(handler)
        await asyncio.sleep(0.02)
        offset[0] = 86_400.0
        await asyncio.sleep(0.2)
        await binding.close()

    run(main())
    assert len(calls) == 1
