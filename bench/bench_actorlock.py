"""Micro benchmark of the actor turn lock twins (not a test).

    PYTHONPATH=src python bench/bench_actorlock.py [--loop asyncio|uvloop]

Prints, for the pure and the compiled twin: uncontended ``async with locks.turn(key)``
enter+exit per second, raw ``try_acquire``+``release`` per second, uncontended
``await acquire()``+``release`` per second, and contended hand-offs per second (two tasks
taking turns on one key).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pillion._testing import import_twin

N = 200_000
HANDOFFS = 100_000


def best(fn, repeat=5):
    return min(fn() for _ in range(repeat))


async def uncontended_with(mod):
    locks = mod.TurnLocks()
    turn = locks.turn
    start = time.perf_counter()
    for _ in range(N):
        async with turn("Actor||1"):
            pass
    return (time.perf_counter() - start) / N


async def uncontended_acquire(mod):
    locks = mod.TurnLocks()
    acquire, release = locks.acquire, locks.release
    start = time.perf_counter()
    for _ in range(N):
        release(await acquire("Actor||1"))
    return (time.perf_counter() - start) / N


def uncontended_try(mod):
    locks = mod.TurnLocks()
    try_acquire, release = locks.try_acquire, locks.release
    start = time.perf_counter()
    for _ in range(N):
        release(try_acquire("Actor||1"))
    return (time.perf_counter() - start) / N


async def reentrant_with(mod):
    locks = mod.TurnLocks()
    turn = locks.turn
    async with turn("Actor||1", "chain"):
        start = time.perf_counter()
        for _ in range(N):
            async with turn("Actor||1", "chain"):
                pass
        return (time.perf_counter() - start) / N


async def contended(mod):
    locks = mod.TurnLocks()
    turn = locks.turn
    count = 0

    async def worker():
        nonlocal count
        while count < HANDOFFS:
            async with turn("Actor||1"):
                count += 1
                await asyncio.sleep(0)  # hold across a loop turn so the other task queues

    start = time.perf_counter()
    await asyncio.gather(worker(), worker())
    assert locks.active() == 0
    return (time.perf_counter() - start) / count


def run(coro_fn, mod, runner):
    return best(lambda: runner(coro_fn(mod)), repeat=3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    print(f"loop: {args.loop}")
    for kind in ("pure", "compiled"):
        mod = import_twin("actorlock", kind)
        rows = [
            ("async with turn(key) (uncontended)", run(uncontended_with, mod, runner)),
            ("await acquire(key) + release", run(uncontended_acquire, mod, runner)),
            ("try_acquire(key) + release", best(lambda: uncontended_try(mod))),
            ("async with turn(key, rid) (reentrant)", run(reentrant_with, mod, runner)),
            ("contended hand-off, 2 tasks", run(contended, mod, runner)),
        ]
        for name, seconds in rows:
            print(f"{kind:9s} {name:40s} {seconds * 1e9:8.0f} ns  {1 / seconds:12,.0f} /s")


if __name__ == "__main__":
    main()
