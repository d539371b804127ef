"""Requests that arrive together answered by one statement.

Under load, many clients ask for single tasks (`GET /tasks/<id>`) or add single tasks
(`POST /tasks`) at the same moment. Alone, each would take a pooled connection and run a
statement of its own, and most of that cost is psycopg's and the event loop's, not
PostgreSQL's; each insert would also wait for a commit of its own to reach the disk. A
Batcher gathers what is submitted during one turn of the event loop and hands it to one call
(`run(items)`, one statement: `WHERE id = ANY(...)`, or one multi-row INSERT committed once);
each caller gets its own answer, or the batch's error. A request alone is not delayed: its
batch leaves at the end of the loop's current turn (`call_soon`), and batches run side by
side, each on a pooled connection of its own.

Runs on the event loop's thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await batcher.submit(item)`: the answer `run` gives for it.

    `run(items)` answers a batch of at most `limit` items with one result per item, in
    order."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]],
                 limit: int = 256) -> None:
        self._run = run
        self._limit = limit
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()  # held, so none is collected mid-run

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._limit:
            self._send()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return await future

    def _send(self) -> None:
        """Start a batch with everything submitted so far."""
        self._scheduled = False
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        task = asyncio.get_running_loop().create_task(self._answer(items, futures))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _answer(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._run(items)
        except asyncio.CancelledError:  # the server is stopping: so are the callers
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # every caller of the batch gets its error
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():  # done: a caller that left (its request was cancelled)
                future.set_result(result)
