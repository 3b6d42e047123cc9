"""Work for the compute tests' worker processes, in a module that imports little: a worker imports the
module of the function it is given, and these tests start many workers."""

from __future__ import annotations

import os
import sys
import time


def where_it_ran(_: int) -> int:
    return os.getpid()


def where_it_ran_with(value: int) -> tuple[int, int]:
    time.sleep(0.01)
    return value, os.getpid()


def refuse(reason: str) -> None:
    raise ValueError(reason)


def slowly(value: str) -> str:
    time.sleep(0.2)
    return value


def has_imported(module: str) -> bool:
    return module in sys.modules


def die_unless_in(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(1)  # a worker killed mid-task (the OOM killer, say)
    return "done here"


def spin(cpu_seconds: float) -> None:
    """Busy for `cpu_seconds` of this thread's CPU time."""
    started = time.thread_time()
    while time.thread_time() - started < cpu_seconds:
        pass
