"""The connection pool serves waiting requests first come, first served (app/db/fair_pool.py)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from app.db.fair_pool import FairAsyncQueue, served_first


async def take(queue: FairAsyncQueue[str], seconds: float = 5.0) -> str:
    """What the pool does when a request needs a connection (inside SQLAlchemy's greenlet)."""
    return await greenlet_spawn(queue.get, True, seconds)


async def test_a_connection_given_back_goes_to_the_longest_waiting_request_not_to_a_newcomer() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    waiting = [asyncio.create_task(take(queue)) for _ in range(3)]
    await asyncio.sleep(0)  # the three are waiting, in that order
    # A newcomer scheduled just before a connection comes back asks for it before the first waiter,
    # woken by its return, has run again.
    newcomer = asyncio.create_task(take(queue))
    queue.put_nowait("connection")
    assert await waiting[0] == "connection"
    for task in (*waiting[1:], newcomer):
        assert not task.done()
    for turn, expected in enumerate([waiting[1], waiting[2], newcomer]):
        queue.put_nowait(f"connection {turn}")
        assert await expected == f"connection {turn}"


async def test_work_served_first_takes_the_next_connection_ahead_of_the_line_and_only_in_its_block() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    crowd = [asyncio.create_task(take(queue)) for _ in range(2)]
    await asyncio.sleep(0)

    async def take_first() -> str:
        with served_first():
            return await take(queue)

    verification = asyncio.create_task(take_first())
    await asyncio.sleep(0)
    later = asyncio.create_task(take(queue))  # after the block: an ordinary newcomer again
    await asyncio.sleep(0)
    queue.put_nowait("connection")
    assert await verification == "connection"
    assert not any(task.done() for task in (*crowd, later))
    for turn, expected in enumerate([*crowd, later]):
        queue.put_nowait(f"connection {turn}")
        assert await expected == f"connection {turn}"


async def test_a_request_that_waited_past_the_timeout_gets_empty_and_leaves_the_line() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    with pytest.raises(Empty):
        await take(queue, seconds=0.01)
    queue.put_nowait("connection")
    assert queue.qsize() == 1  # kept for the next request, not handed to the one that left
    assert await take(queue) == "connection"


async def test_a_connection_handed_to_a_request_cancelled_that_moment_goes_to_the_next() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    first, second = asyncio.create_task(take(queue)), asyncio.create_task(take(queue))
    await asyncio.sleep(0)
    queue.put_nowait("connection")  # handed to the first...
    first.cancel()  # ...whose client hangs up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "connection"
    assert queue.qsize() == 0


async def test_idle_connections_are_taken_without_waiting_and_a_full_queue_refuses_more() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    queue.put_nowait("idle")
    with pytest.raises(Full):
        queue.put_nowait("one too many")
    assert queue.get(block=False) == "idle"
    with pytest.raises(Empty):
        queue.get(block=False)
