"""fizz serve's batcher: what is submitted in one loop turn goes in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from fizzbuzz_cli.server.batch import Batcher


class Calls:
    """A fake statement that records its batches; `gate` holds them until set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def run(self, items: list[int]) -> list[str]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [f"answer {n}" for n in items]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


def test_what_one_turn_submits_shares_one_call_and_each_gets_its_own_answer() -> None:
    async def main() -> None:
        calls = Calls()
        batcher = Batcher(calls.run)
        got = await asyncio.gather(*(batcher.submit(n) for n in (1, 2, 2, 9)))
        assert got == ["answer 1", "answer 2", "answer 2", "answer 9"]
        assert calls.batches == [[1, 2, 2, 9]]
        assert await batcher.submit(3) == "answer 3"  # alone: sent at once, by itself
        assert calls.batches[-1] == [3]
    run(main())


def test_batches_run_side_by_side() -> None:
    async def main() -> None:
        calls = Calls()
        batcher = Batcher(calls.run)
        calls.gate.clear()
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        assert calls.batches == [[1]] and not first.done()
        second = asyncio.ensure_future(batcher.submit(2))  # does not wait for the first
        await asyncio.sleep(0.01)
        assert calls.batches == [[1], [2]]
        calls.gate.set()
        assert await asyncio.gather(first, second) == ["answer 1", "answer 2"]
    run(main())


def test_the_limit_sends_a_full_batch_at_once() -> None:
    async def main() -> None:
        calls = Calls()
        batcher = Batcher(calls.run, limit=4)
        got = await asyncio.gather(*(batcher.submit(n) for n in range(10)))
        assert got == [f"answer {n}" for n in range(10)]
        assert [len(b) for b in calls.batches] == [4, 4, 2]
    run(main())


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_is_fresh() -> None:
    async def main() -> None:
        calls = Calls()
        batcher = Batcher(calls.run)
        calls.error = RuntimeError("database away")
        got = await asyncio.gather(batcher.submit(1), batcher.submit(2),
                                   return_exceptions=True)
        assert [str(e) for e in got] == ["database away", "database away"]
        calls.error = None
        assert await batcher.submit(1) == "answer 1"
    run(main())


def test_a_caller_that_leaves_does_not_disturb_the_others() -> None:
    async def main() -> None:
        calls = Calls()
        batcher = Batcher(calls.run)
        calls.gate.clear()
        leaving = asyncio.ensure_future(batcher.submit(1))
        staying = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)
        leaving.cancel()
        calls.gate.set()
        assert await staying == "answer 2"
        with pytest.raises(asyncio.CancelledError):
            await leaving
    run(main())
