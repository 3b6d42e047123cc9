"""Pure-Python CPU work (a palette's colour science) in worker processes, off the event loop.

A palette from a colour is some 5 ms of coloraide arithmetic. On the event loop those milliseconds stop
every other request of the process, and under a crowd (256 clients asking for palettes) they were most
of a turn of the loop; a thread would not help, since the work holds the GIL. In a worker process it runs
on another core while the loop goes on serving.

Each worker is spoken to over its own socket, from the event loop itself: a task is one length-prefixed
pickle out and one back. `concurrent.futures.ProcessPoolExecutor` hands each task through two helper
threads of the server's process, each of which must win the GIL from the busy event loop (up to 5 ms a
time). Measured on a palette: the server's own CPU per palette from 0.83 ms to 0.40 ms, and, with the
loop kept busy 2 ms a turn, the wait for the answer from 46 ms to 26 ms.

The workers are started with `spawn` (the server has threads a fork would copy mid-flight) and import the
modules the work needs (`preload`) as they start: by `warm_up`, which the server awaits before it takes
requests (the first palettes had waited a second or more for both), else on first use. `aclose` stops
them. `processes=0` runs the work inline, on the loop.

The local background remover keeps a pool of its own (app/integrations/images/local_background.py): its
work holds the GIL in many short stretches, each of which waited for a busy loop in a thread. A cut-out
whose worker died is not redone on the server (`inline_if_gone`): it may be what killed it. Each task's
CPU time where it ran is reported (`observe`: the compute metrics in /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import pickle
import signal
import socket
import struct
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any, ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

_LENGTH = struct.Struct("!I")
_READY = b"ready"
_STOP_SECONDS = 5.0
# Spawning and importing takes a second or two; a worker not ready long after is stuck (a hung import),
# and must not hold the server's start-up with it.
START_SECONDS = 60.0


def _receive_exactly(connection: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send_frame(connection: socket.socket, payload: bytes) -> None:
    connection.sendall(_LENGTH.pack(len(payload)) + payload)


def _serve(connection: socket.socket, preload: tuple[str, ...]) -> None:
    """A worker's life: import, say ready, then run one task per frame until the server hangs up."""
    # Ctrl-C in a terminal reaches the whole process group; the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)
    _send_frame(connection, _READY)
    while (header := _receive_exactly(connection, _LENGTH.size)) is not None:
        payload = _receive_exactly(connection, _LENGTH.unpack(header)[0])
        if payload is None:
            return
        # The other end is the server that started this process (a socketpair), never the network.
        function, args, kwargs = pickle.loads(payload)  # noqa: S301
        started = time.process_time()
        try:
            value = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure is the task's answer, not the worker's end
            cpu = time.process_time() - started
            try:
                reply = pickle.dumps((False, exc, cpu), pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its text is left
                reply = pickle.dumps((False, RuntimeError(repr(exc)), cpu), pickle.HIGHEST_PROTOCOL)
        else:
            reply = pickle.dumps((True, value, time.process_time() - started), pickle.HIGHEST_PROTOCOL)
        _send_frame(connection, reply)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class WorkerGone(Exception):
    """The worker process ended mid-task (killed for memory, most likely)."""


class _Worker:
    """One worker process and the server's end of its socket; one task at a time."""

    def __init__(
        self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, preload: tuple[str, ...], start_seconds: float) -> _Worker:
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(theirs, preload), name="pixforge-compute", daemon=True
        )
        try:
            process.start()
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = cls(process, reader, writer)
        try:
            async with asyncio.timeout(start_seconds):
                ready = await worker._receive()
            if ready != _READY:
                raise WorkerGone("the worker did not start")
        except TimeoutError as exc:
            process.kill()  # stuck in its imports: it would not read the end of its socket
            await worker.stop()
            raise WorkerGone(f"the worker was not ready after {start_seconds:g} s") from exc
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def _receive(self) -> bytes:
        try:
            header = await self.reader.readexactly(_LENGTH.size)
            return await self.reader.readexactly(_LENGTH.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerGone(f"worker exited with {self.process.exitcode}") from exc

    async def call(self, payload: bytes) -> tuple[bool, Any, float]:
        try:
            self.writer.write(_LENGTH.pack(len(payload)) + payload)
            await self.writer.drain()
        except ConnectionError as exc:
            raise WorkerGone(f"worker exited with {self.process.exitcode}") from exc
        # From our own worker process, over a socketpair.
        return cast(tuple[bool, Any, float], pickle.loads(await self._receive()))  # noqa: S301

    async def stop(self) -> None:
        self.writer.close()  # the worker reads the end of its socket and returns
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        await asyncio.to_thread(self.process.join, _STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)


class Compute:
    """Runs picklable functions on `processes` worker processes, or inline when `processes` is 0;
    `preload`: modules each worker imports as it starts, within `start_seconds`. `observe` is told each
    task's function (`module.name`) and the CPU seconds it took where it ran, failed tasks included.
    A task whose worker died is done inline instead, unless `inline_if_gone` is False (work too big for
    the event loop, or for the server's memory): the caller then gets WorkerGone."""

    def __init__(
        self,
        processes: int,
        preload: tuple[str, ...] = (),
        start_seconds: float = START_SECONDS,
        observe: Callable[[str, float], None] | None = None,
        *,
        inline_if_gone: bool = True,
    ) -> None:
        if processes < 0:
            raise ValueError("processes must be 0 (inline) or more")
        self.processes = processes
        self.preload = preload
        self.start_seconds = start_seconds
        self._observe = observe
        self._inline_if_gone = inline_if_gone
        self._idle: asyncio.Queue[_Worker | None] | None = None
        self._workers: set[_Worker] = set()

    def _line(self) -> asyncio.Queue[_Worker | None]:
        if self._idle is None:
            # `None` is a worker not started yet: the task that takes it starts one.
            self._idle = asyncio.Queue()
            for _ in range(self.processes):
                self._idle.put_nowait(None)
        return self._idle

    async def _started(self, worker: _Worker | None) -> _Worker:
        if worker is None:
            worker = await _Worker.start(self.preload, self.start_seconds)
            self._workers.add(worker)
        return worker

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.processes == 0:
            return self._inline(function, *args, **kwargs)
        payload = pickle.dumps((function, args, kwargs), pickle.HIGHEST_PROTOCOL)
        line = self._line()
        taken = await line.get()
        # Shielded: a request cancelled mid-task must not leave its reply in the socket for the next.
        exchange = asyncio.ensure_future(self._exchange(line, taken, payload))
        exchange.add_done_callback(_retrieve)  # its caller may have gone, and its error with it
        try:
            done, value, cpu = await asyncio.shield(exchange)
        except (WorkerGone, OSError) as exc:
            # The next task starts a new worker.
            if self._inline_if_gone:
                return self._inline(function, *args, **kwargs)
            if isinstance(exc, WorkerGone):
                raise
            raise WorkerGone(str(exc)) from exc
        self._observed(function, cpu)
        if not done:
            raise cast(BaseException, value)
        return cast(T, value)

    def _inline(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            self._observed(function, time.thread_time() - started)

    def _observed(self, function: Callable[..., Any], cpu_seconds: float) -> None:
        if self._observe is not None:
            self._observe(f"{function.__module__}.{function.__qualname__}", cpu_seconds)

    async def _exchange(
        self, line: asyncio.Queue[_Worker | None], taken: _Worker | None, payload: bytes
    ) -> tuple[bool, Any, float]:
        worker = None
        try:
            worker = await self._started(taken)
            reply = await worker.call(payload)
        except BaseException:
            if worker is not None:
                self._workers.discard(worker)
                await worker.stop()
            line.put_nowait(None)
            raise
        line.put_nowait(worker)
        return reply

    async def warm_up(self) -> None:
        """Start the worker processes now rather than on the first request that needs them."""
        line = self._line()
        taken = [line.get_nowait() for _ in range(line.qsize())]
        results = await asyncio.gather(*(self._started(worker) for worker in taken), return_exceptions=True)
        for result in results:
            line.put_nowait(result if isinstance(result, _Worker) else None)  # a failed start: retried later

    async def aclose(self) -> None:
        """Stop the worker processes."""
        workers, self._workers, self._idle = self._workers, set(), None
        await asyncio.gather(*(worker.stop() for worker in workers))
