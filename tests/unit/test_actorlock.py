"""Actor turn locks (Dapr §6.6), every test against both twins."""

from __future__ import annotations

import asyncio
import gc
import pickle

import pytest

from pillion._testing import import_twin
from pillion.runtime.actorlock_errors import StackDepthError


@pytest.fixture(params=("pure", "compiled"))
def mod(request):
    return import_twin("actorlock", request.param)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_facade_and_shared_error(mod):
    from pillion.runtime import actorlock

    assert actorlock.StackDepthError is mod.StackDepthError is StackDepthError
    assert issubclass(StackDepthError, RuntimeError)
    err = pickle.loads(pickle.dumps(StackDepthError("A||1", 3)))
    assert (err.key, err.max_stack_depth, str(err)) == ("A||1", 3, "maximum stack depth exceeded (3) for actor 'A||1'")


def test_constructor_validates(mod):
    assert mod.TurnLocks().max_stack_depth == 32
    assert mod.TurnLocks(5).max_stack_depth == 5
    with pytest.raises(ValueError):
        mod.TurnLocks(0)
    with pytest.raises(TypeError):
        mod.TurnLocks(2.0)


def test_uncontended_turn_never_suspends(mod):
    async def main():
        locks = mod.TurnLocks()
        turn = locks.turn("A||1")
        assert (turn.state, turn.depth) == ("new", 0)
        coro = turn.__aenter__()
        with pytest.raises(StopIteration) as stop:
            coro.send(None)  # finishes on the first step: no Future, no suspension
        assert stop.value.value is turn
        assert (turn.state, turn.depth, turn.key, turn.reentrancy_id) == ("held", 1, "A||1", None)
        assert locks.active() == 1 and locks.holder("A||1") == (None, 1)
        await turn.__aexit__(None, None, None)
        assert turn.state == "released" and locks.active() == 0 and locks.holder("A||1") is None
        with pytest.raises(RuntimeError):
            locks.release(turn)
        with pytest.raises(RuntimeError):
            async with turn:
                pass

    run(main())


def test_fifo_order_and_one_holder_at_a_time(mod):
    async def main():
        locks = mod.TurnLocks()
        inside = 0
        order = []

        async def call(i):
            nonlocal inside
            async with locks.turn("A||1") as turn:
                assert turn.depth == 1
                inside += 1
                assert inside == 1
                order.append(i)
                await settle(3)
                inside -= 1

        first = await locks.acquire("A||1")
        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0)  # creation order is arrival order
        assert locks.waiting("A||1") == 20
        locks.release(first)
        await asyncio.gather(*tasks)
        assert order == list(range(20))
        assert locks.active() == 0 and locks.waiting("A||1") == 0

    run(main())


def test_release_wakes_exactly_one_and_no_barging(mod):
    async def main():
        locks = mod.TurnLocks()
        first = await locks.acquire("k")
        got = []

        async def waiter(i):
            got.append((i, await locks.acquire("k")))

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await settle()
        assert locks.waiting("k") == 3
        locks.release(first)
        # Handed over at release time: a newcomer cannot take the key before waiter 0 runs.
        assert locks.try_acquire("k") is None
        assert locks.waiting("k") == 2
        await settle()
        assert [i for i, _ in got] == [0]
        locks.release(got[0][1])
        await settle()
        assert [i for i, _ in got] == [0, 1]
        locks.release(got[1][1])
        await settle()
        locks.release(got[2][1])
        await asyncio.gather(*tasks)
        assert locks.active() == 0

    run(main())


def test_reentrancy_depth_and_limit(mod):
    async def main():
        locks = mod.TurnLocks(max_stack_depth=3)
        async with locks.turn("A||1", "chain") as t1:
            async with locks.turn("A||1", "chain") as t2:
                async with locks.turn("A||1", "chain") as t3:
                    assert (t1.depth, t2.depth, t3.depth) == (1, 2, 3)
                    assert locks.holder("A||1") == ("chain", 3)
                    with pytest.raises(StackDepthError) as info:
                        async with locks.turn("A||1", "chain"):
                            pass
                    assert info.value.max_stack_depth == 3 and info.value.key == "A||1"
                    with pytest.raises(StackDepthError):
                        locks.try_acquire("A||1", "chain")
                    with pytest.raises(StackDepthError):
                        await locks.acquire("A||1", "chain")
                    assert locks.holder("A||1") == ("chain", 3)  # unchanged
                    assert locks.waiting("A||1") == 0
                assert locks.holder("A||1") == ("chain", 2)
            # Another key is independent of the chain's depth.
            async with locks.turn("A||2", "chain") as other:
                assert other.depth == 1
        assert locks.active() == 0

    run(main())


def test_reentrant_call_enters_ahead_of_queue_other_ids_wait(mod):
    async def main():
        locks = mod.TurnLocks()
        outer = await locks.acquire("k", "x")
        order = []

        async def call(name, rid):
            async with locks.turn("k", rid) as turn:
                order.append((name, turn.depth))
                await settle(2)

        tasks = [asyncio.create_task(call("other", "y")), asyncio.create_task(call("none", None))]
        await settle()
        assert locks.waiting("k") == 2 and order == []
        await call("same", "x")  # bypasses the two waiters
        assert order == [("same", 2)]
        assert locks.holder("k") == ("x", 1)
        locks.release(outer)  # only now is the key free for the queue
        await asyncio.gather(*tasks)
        assert order == [("same", 2), ("other", 1), ("none", 1)]
        assert locks.active() == 0

    run(main())


def test_chain_frees_key_only_when_every_level_released(mod):
    async def main():
        locks = mod.TurnLocks()
        a = await locks.acquire("k", "x")
        b = await locks.acquire("k", "x")
        c = await locks.acquire("k", "x")
        woke = asyncio.create_task(locks.acquire("k", "y"))
        await settle()
        locks.release(a)  # out of order: depth is a count
        locks.release(c)
        await settle()
        assert not woke.done() and locks.holder("k") == ("x", 1)
        locks.release(b)
        turn = await woke
        assert locks.holder("k") == ("y", 1) and turn.depth == 1
        locks.release(turn)
        assert locks.active() == 0

    run(main())


def test_cancel_while_waiting_leaves_queue(mod):
    async def main():
        locks = mod.TurnLocks()
        holder = await locks.acquire("k")
        t1 = asyncio.create_task(locks.acquire("k"))
        t2 = asyncio.create_task(locks.acquire("k"))
        t3 = asyncio.create_task(locks.acquire("k"))
        await settle()
        assert locks.waiting("k") == 3
        t2.cancel()
        await settle()
        assert t2.cancelled() and locks.waiting("k") == 2
        locks.release(holder)
        turn1 = await t1
        locks.release(turn1)
        turn3 = await t3
        assert locks.waiting("k") == 0
        locks.release(turn3)
        assert locks.active() == 0

    run(main())


def test_cancel_after_future_cancelled_before_release(mod):
    """cancel() cancels the waiter's Future at once; a release before the task runs skips it."""

    async def main():
        locks = mod.TurnLocks()
        holder = await locks.acquire("k")
        t1 = asyncio.create_task(locks.acquire("k"))
        t2 = asyncio.create_task(locks.acquire("k"))
        await settle()
        t1.cancel()
        locks.release(holder)  # same step: t1's CancelledError not delivered yet
        assert locks.holder("k") == (None, 1) and locks.waiting("k") == 0
        with pytest.raises(asyncio.CancelledError):
            await t1
        turn2 = await t2
        locks.release(turn2)
        assert locks.active() == 0

    run(main())


def test_cancel_right_after_handoff_passes_key_on(mod):
    async def main():
        locks = mod.TurnLocks()
        holder = await locks.acquire("k")
        t1 = asyncio.create_task(locks.acquire("k"))
        t2 = asyncio.create_task(locks.acquire("k"))
        await settle()
        locks.release(holder)  # hands the key to t1 ...
        t1.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await t1
        turn2 = await t2  # no lost wake-up
        assert turn2.depth == 1 and locks.waiting("k") == 0
        locks.release(turn2)
        assert locks.active() == 0

        # Alone in the queue: the key is freed, not left held.
        holder = await locks.acquire("k")
        t3 = asyncio.create_task(locks.acquire("k"))
        await settle()
        locks.release(holder)
        t3.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t3
        assert locks.active() == 0

    run(main())


def test_wait_for_timeout_while_waiting(mod):
    async def main():
        locks = mod.TurnLocks()
        async with locks.turn("k"):
            with pytest.raises(asyncio.TimeoutError):
                async with asyncio.timeout(0.01):
                    async with locks.turn("k"):
                        pytest.fail("entered a held key")
            assert locks.waiting("k") == 0
        assert locks.active() == 0

    run(main())


def test_closed_waiter_leaves_queue(mod):
    async def main():
        locks = mod.TurnLocks()
        holder = await locks.acquire("k")
        coro = locks.acquire("k")
        coro.send(None)  # now queued, suspended on its Future
        assert locks.waiting("k") == 1
        coro.close()
        assert locks.waiting("k") == 0
        locks.release(holder)
        assert locks.active() == 0

    run(main())


def test_exception_inside_turn_releases(mod):
    async def main():
        locks = mod.TurnLocks()
        waiter = None

        async def failing():
            async with locks.turn("k"):
                await settle()
                raise KeyError("boom")

        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        waiter = asyncio.create_task(locks.acquire("k"))
        with pytest.raises(KeyError):
            await task
        turn = await waiter
        locks.release(turn)
        with pytest.raises(ZeroDivisionError):
            async with locks.turn("k", "x"):
                async with locks.turn("k", "x"):
                    1 / 0
        assert locks.active() == 0

    run(main())


def test_release_errors(mod):
    async def main():
        locks, other = mod.TurnLocks(), mod.TurnLocks()
        turn = await locks.acquire("k")
        with pytest.raises(ValueError):
            other.release(turn)
        with pytest.raises(TypeError):
            locks.release(object())
        with pytest.raises(RuntimeError):
            locks.release(locks.turn("k"))  # never entered
        locks.release(turn)
        with pytest.raises(RuntimeError):
            locks.release(turn)
        assert locks.active() == 0 and other.active() == 0
        with pytest.raises(TypeError):
            await locks.acquire(["unhashable"])
        assert locks.active() == 0

    run(main())


def test_table_empties_and_thousand_keys_do_not_block_each_other(mod):
    async def main():
        locks = mod.TurnLocks()
        gate = asyncio.Event()
        inside = 0
        peak = 0

        async def call(i):
            nonlocal inside, peak
            async with locks.turn(f"A||{i}"):
                inside += 1
                peak = max(peak, inside)
                await gate.wait()
                inside -= 1

        tasks = [asyncio.create_task(call(i)) for i in range(1000)]
        await settle()
        assert inside == peak == 1000  # all holding at once
        assert locks.active() == 1000
        assert sum(locks.waiting(f"A||{i}") for i in range(1000)) == 0
        gate.set()
        await asyncio.gather(*tasks)
        assert locks.active() == 0 and locks.holder("A||0") is None

    run(main())


def test_many_callers_per_key(mod):
    async def main():
        locks = mod.TurnLocks()
        inside = {}
        done = []

        async def call(key, i):
            async with locks.turn(key):
                assert inside.get(key, 0) == 0
                inside[key] = 1
                await asyncio.sleep(0)
                inside[key] = 0
                done.append((key, i))

        await asyncio.gather(*(call(k, i) for i in range(50) for k in ("a", "b", "c")))
        for k in ("a", "b", "c"):
            assert [i for key, i in done if key == k] == list(range(50))
        assert locks.active() == 0

    run(main())


def test_uvloop(mod):
    uvloop = pytest.importorskip("uvloop")

    async def main():
        locks = mod.TurnLocks()
        order = []

        async def call(i):
            async with locks.turn("k"):
                order.append(i)
                await asyncio.sleep(0)

        await asyncio.gather(*(call(i) for i in range(10)))
        task = asyncio.create_task(call(99))
        async with locks.turn("k"):
            await asyncio.sleep(0)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert order == list(range(10)) and locks.active() == 0

    uvloop.run(main())


def test_no_reference_leaks_from_turns(mod):
    async def main():
        locks = mod.TurnLocks()
        for _ in range(3):
            async with locks.turn("k"):
                pass
        gc.collect()
        before = len(gc.get_objects())
        for _ in range(1000):
            async with locks.turn("k", "x"):
                async with locks.turn("k", "x"):
                    pass
        gc.collect()
        assert len(gc.get_objects()) - before < 50

    run(main())
