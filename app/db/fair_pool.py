"""A connection pool that serves waiting requests in the order they came.

SQLAlchemy's async pool keeps its idle connections in an `asyncio.Queue`, and a request that asks for one
takes it at once if one is there. A connection given back while requests wait is put in the queue for the
first of them, but that request only runs later: a request that arrives in between takes it, and the one
that was woken goes back to the end of the line. Under a crowd (256 clients, 30 connections) most requests
were answered in tens of milliseconds and some waited for seconds, past their clients' timeouts. Here a
connection given back goes straight to the request that has waited longest, and a newcomer queues behind.

One kind of work goes ahead of the line (`served_first`): a short statement that many requests wait on,
such as verifying a busy credential again. Queued behind a crowd it made the whole crowd wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

ItemT = TypeVar("ItemT")

_served_first: ContextVar[bool] = ContextVar("served_first", default=False)


@contextlib.contextmanager
def served_first() -> Iterator[None]:
    """Connections taken in this block go to the head of the line: for a few short statements that other
    requests are waiting on, never for a request's own work (that would only reorder the crowd)."""
    token = _served_first.set(True)
    try:
        yield
    finally:
        _served_first.reset(token)


class FairAsyncQueue(QueueCommon[ItemT]):
    """The pool's idle connections, handed over first come, first served."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[ItemT] = deque()
        # Requests waiting, oldest first; one that gave up (timed out, cancelled) is skipped when reached.
        self._waiters: deque[asyncio.Future[ItemT]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return bool(self.maxsize) and len(self._items) >= self.maxsize

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: ItemT) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: ItemT, block: bool = True, timeout: float | None = None) -> None:
        # The pool gives connections back without blocking (a full queue closes the extra one).
        self.put_nowait(item)

    def get_nowait(self) -> ItemT:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> ItemT:
        # Idle connections and waiting requests never coexist (a connection given back goes to the
        # oldest waiter), so taking an idle one jumps no queue.
        if self._items or not block:
            return self.get_nowait()
        return await_(self._wait(timeout))

    async def _wait(self, seconds: float | None) -> ItemT:
        waiter: asyncio.Future[ItemT] = asyncio.get_running_loop().create_future()
        if _served_first.get():
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except TimeoutError:
            self._pass_on(waiter)
            raise Empty() from None
        except BaseException:
            self._pass_on(waiter)
            raise

    def _pass_on(self, waiter: asyncio.Future[ItemT]) -> None:
        """A request that stopped waiting: a connection handed to it in that same moment goes to the next."""
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())
        else:
            waiter.cancel()


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's async queue pool, its waiting requests served in order (`FairAsyncQueue`)."""

    _queue_class = FairAsyncQueue[ConnectionPoolEntry]
