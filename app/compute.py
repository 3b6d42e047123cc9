"""Pure-Python CPU work (a palette's colour science) in worker processes, off the event loop.

A palette from a colour is some 5 ms of coloraide arithmetic. On the event loop those milliseconds stop
every other request of the process, and under a crowd (256 clients asking for palettes) they were most
of a turn of the loop; a thread would not help, since the work holds the GIL. In a worker process it runs
on another core while the loop goes on serving.

The processes are started with `spawn` (the server has threads a fork would copy mid-flight) and import
the modules the work needs (`preload`) as they start: by `warm_up`, which the server awaits before it
takes requests (the first palettes had waited a second or more for both), else on first use. `close`
stops them. `processes=0` runs the work inline, on the loop.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def _start_worker(preload: tuple[str, ...]) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)


def _ready() -> bool:
    return True


class Compute:
    """Runs picklable functions on `processes` worker processes, or inline when `processes` is 0;
    `preload`: modules each worker imports as it starts."""

    def __init__(self, processes: int, preload: tuple[str, ...] = ()) -> None:
        if processes < 0:
            raise ValueError("processes must be 0 (inline) or more")
        self.processes = processes
        self.preload = preload
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.preload,),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.processes == 0:
            return function(*args, **kwargs)
        pool = self._executor()
        try:
            return await asyncio.wrap_future(pool.submit(function, *args, **kwargs))
        except BrokenProcessPool:
            # A worker died (killed for memory, most likely): a new pool for the next request, and this
            # one's work done here rather than failed.
            self._discard(pool)
            return function(*args, **kwargs)

    async def warm_up(self) -> None:
        """Start the worker processes now rather than on the first request that needs them."""
        if self.processes == 0:
            return
        pool = self._executor()
        try:
            await asyncio.gather(*(asyncio.wrap_future(pool.submit(_ready)) for _ in range(self.processes)))
        except BrokenProcessPool:
            self._discard(pool)  # the first request starts a new one

    def close(self) -> None:
        """Stop the worker processes (work still queued is dropped: its requests are ending too)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
