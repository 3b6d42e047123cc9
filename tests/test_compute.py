"""Pure-Python CPU work runs in worker processes off the event loop (app/compute.py), with the same
results as inline; a worker that dies costs its request nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.compute import Compute
from app.schemas.palette_answer import palette_json
from app.services.design.palettes import analysed_from_color, rendered_from_color
from tests.support.compute_tasks import (
    die_unless_in,
    has_imported,
    refuse,
    slowly,
    spin,
    where_it_ran,
    where_it_ran_with,
)
from tests.support.processes import spawned_children

pytestmark = pytest.mark.any_database


@asynccontextmanager
async def started(processes: int, **options: Any) -> AsyncIterator[Compute]:
    """A Compute of `processes` workers, closed (its processes gone) when the block ends."""
    compute = Compute(processes, **options)
    try:
        yield compute
    finally:
        await compute.aclose()


async def test_a_palette_computed_in_a_worker_process_is_the_one_computed_inline() -> None:
    """Objects and the rendered answer alike: the server sends a worker its render function by name."""
    async with started(1) as compute:
        await compute.warm_up()
        worker = await compute.run(where_it_ran, 0)
        assert worker != os.getpid()
        assert worker in spawned_children()
        for base, mode in (("#3366ff", "complementary"), ("#e11d48", "triadic"), ("#0f766e", "analogous")):
            assert await compute.run(analysed_from_color, base, mode) == analysed_from_color(base, mode)  # type: ignore[arg-type]
            rendered = await compute.run(rendered_from_color, base, mode, palette_json)
            assert rendered == palette_json(analysed_from_color(base, mode))  # type: ignore[arg-type]
    assert worker not in spawned_children()  # its processes are gone with it


async def test_work_whose_worker_died_is_done_here_and_the_next_gets_a_new_worker() -> None:
    async with started(1) as compute:
        assert await compute.run(die_unless_in, os.getpid()) == "done here"
        worker = await compute.run(where_it_ran, 0)
        assert worker != os.getpid()


async def test_with_no_processes_the_work_runs_inline() -> None:
    compute = Compute(0)
    await compute.warm_up()
    assert await compute.run(where_it_ran, 0) == os.getpid()
    with pytest.raises(ValueError, match="processes"):
        Compute(-1)


async def test_workers_import_the_modules_they_are_given_as_they_start() -> None:
    # `wave`: a module nothing here imports, so only the preload can have put it there.
    for preload, expected in ((("wave",), True), ((), False)):
        async with started(1, preload=preload) as compute:
            await compute.warm_up()
            assert await compute.run(has_imported, "wave") is expected


async def test_an_error_in_the_work_reaches_the_caller_and_the_worker_goes_on() -> None:
    async with started(1) as compute:
        with pytest.raises(ValueError, match="not a colour"):
            await compute.run(refuse, "not a colour")
        assert await compute.run(slowly, "next") == "next"


@pytest.mark.parametrize("processes", [1, 0])
async def test_each_task_s_cpu_time_where_it_ran_is_told_by_function_failures_included(
    processes: int,
) -> None:
    """What the compute metrics count, failed tasks included: CPU time, not the wait (`slowly` sleeps)."""
    seen: list[tuple[str, float]] = []
    async with started(processes, observe=lambda task, cpu: seen.append((task, cpu))) as compute:
        await compute.run(spin, 0.05)
        await compute.run(slowly, "asleep")
        with pytest.raises(ValueError, match="no"):
            await compute.run(refuse, "no")
    tasks = "tests.support.compute_tasks"
    assert [task for task, _ in seen] == [f"{tasks}.spin", f"{tasks}.slowly", f"{tasks}.refuse"]
    spun, slept, refused = (cpu for _, cpu in seen)
    assert 0.05 <= spun < 1
    assert 0 <= slept < 0.1
    assert 0 <= refused < 0.1


async def test_a_caller_that_left_mid_task_does_not_leave_its_answer_to_the_next() -> None:
    async with started(1) as compute:
        await compute.warm_up()
        left = asyncio.create_task(compute.run(slowly, "the first's"))
        await asyncio.sleep(0.05)
        left.cancel()
        with pytest.raises(asyncio.CancelledError):
            await left
        assert await compute.run(slowly, "the second's") == "the second's"


async def test_many_callers_at_once_each_get_their_own_answer() -> None:
    async with started(2) as compute:
        answers = await asyncio.gather(*(compute.run(where_it_ran_with, n) for n in range(40)))
    assert [n for n, _ in answers] == list(range(40))
    assert len({worker for _, worker in answers}) == 2  # both workers took a share


async def test_a_worker_stuck_starting_is_stopped_and_the_work_done_here() -> None:
    before = spawned_children()
    async with started(1, preload=("tests.support.slow_to_import",), start_seconds=0.5) as compute:
        await compute.warm_up()  # returns: start-up is not held by a stuck worker
        assert spawned_children() == before  # and the stuck one is gone
        assert await compute.run(where_it_ran, 0) == os.getpid()
