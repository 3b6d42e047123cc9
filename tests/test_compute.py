"""Pure-Python CPU work runs in worker processes off the event loop (app/compute.py), with the same
results as inline; a worker that dies costs its request nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from app.compute import Compute
from app.services.design.palettes import from_color

pytestmark = pytest.mark.any_database


def children() -> set[int]:
    me = os.getpid()
    return {int(pid) for pid in (Path(f"/proc/{me}/task") / str(me) / "children").read_text().split()}


def where_it_ran(_: int) -> int:
    return os.getpid()


def has_imported(module: str) -> bool:
    return module in sys.modules


def die_unless_in(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(1)  # a worker killed mid-task (the OOM killer, say)
    return "done here"


async def test_a_palette_computed_in_a_worker_process_is_the_one_computed_inline() -> None:
    compute = Compute(1)
    try:
        await compute.warm_up()
        worker = await compute.run(where_it_ran, 0)
        assert worker != os.getpid()
        assert worker in children()
        for base, mode in (("#3366ff", "complementary"), ("#e11d48", "triadic"), ("#0f766e", "analogous")):
            assert await compute.run(from_color, base, mode) == from_color(base, mode)  # type: ignore[arg-type]
    finally:
        await compute.aclose()
    assert worker not in children()  # its processes are gone with it


async def test_work_whose_worker_died_is_done_here_and_the_next_gets_a_new_worker() -> None:
    compute = Compute(1)
    try:
        assert await compute.run(die_unless_in, os.getpid()) == "done here"
        worker = await compute.run(where_it_ran, 0)
        assert worker != os.getpid()
    finally:
        await compute.aclose()


async def test_with_no_processes_the_work_runs_inline() -> None:
    compute = Compute(0)
    await compute.warm_up()
    assert await compute.run(where_it_ran, 0) == os.getpid()
    with pytest.raises(ValueError, match="processes"):
        Compute(-1)


async def test_workers_import_the_modules_they_are_given_as_they_start() -> None:
    # `wave`: a module nothing here imports, so only the preload can have put it there.
    for preload, expected in ((("wave",), True), ((), False)):
        compute = Compute(1, preload=preload)
        try:
            await compute.warm_up()
            assert await compute.run(has_imported, "wave") is expected
        finally:
            await compute.aclose()
