"""Shared bench plumbing: a throw-away PostgreSQL database, a real server process, a load loop."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.models import LedgerReason, User
from app.services import credits as credits_service
from app.services import users as users_service
from tests.support.databases import TestDatabase, fresh_database, migrate

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def bench_database() -> Iterator[str]:
    with fresh_database(TestDatabase("postgresql", ADMIN_URL)) as url:
        migrate(url)
        yield url


@dataclass(frozen=True)
class RunningServer:
    base: str
    pid: int

    def peak_rss_mib(self) -> float:
        """The server process's high-water resident memory (VmHWM)."""
        return _peak_rss_mib(self.pid)

    def workers_peak_rss_mib(self) -> list[float]:
        """Each of its worker processes' high-water resident memory (background removal, palettes)."""
        return [_peak_rss_mib(child) for child in _descendants(self.pid)]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _descendants(pid: int) -> list[int]:
    """A process's living descendants, children of every thread included (a process manager may start
    its workers from any of its threads)."""
    try:
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except (FileNotFoundError, ProcessLookupError):
        return []
    return children + [grandchild for child in children for grandchild in _descendants(child)]


@contextmanager
def server_process(
    name: str, command: list[str], env: dict[str, str], port: int, start_seconds: float = 30
) -> Iterator[RunningServer]:
    """A server process on `port`, yielded once `/healthz` answers; stopped (killed if it will not drain
    within 30 s) and its log's tail printed afterwards."""
    # The server's log goes to a file: a pipe nobody reads would fill up and block the server mid-run.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(  # noqa: S603 - our own servers
            command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_seconds
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(log.read().decode(errors="replace") or f"{name} died") from None
                    time.sleep(0.1)
            yield RunningServer(base, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)  # a server that was overloaded drains its queue first
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace").strip()
            if tail:
                print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)


@contextmanager
def api_server(env: dict[str, str]) -> Iterator[RunningServer]:
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    quiet = {"LOG_LEVEL": "WARNING", "RATE_LIMITS_ENABLED": "false", **env}
    with server_process("server", command, quiet, port) as running:
        yield running


@contextmanager
def background_load(url: str, headers: list[str], connections: int) -> Iterator[None]:
    """`connections` keep-alive clients asking `url` over and over until the block ends: wrk when it is
    installed, else bench.loadgen in a process of its own."""
    seconds = 3600
    wrk = shutil.which("wrk")
    if wrk:
        command = [wrk, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", url]
        for header in headers:
            command += ["-H", header]
    else:
        command = [sys.executable, "-m", "bench.loadgen", url, "--connections", str(connections)]
        command += ["--seconds", str(seconds)]
        for header in headers:
            command += ["--header", header]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        time.sleep(1)  # connected and at full rate before the measurement starts
        yield
    finally:
        process.terminate()
        process.wait()


def answered(base: str, method: str, route: str) -> int:
    """The 2xx answers the server at `base` gave to `method` `route` (its template) so far, from its
    /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    labels = rf'method="{method}",route="{re.escape(route)}",status="2\d\d"'
    pattern = rf"^pixforge_http_requests_total{{{labels}}} (\S+)$"
    return sum(int(float(found.group(1))) for found in re.finditer(pattern, text, re.M))


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def row(self, baseline: Result | None) -> str:
        p50 = statistics.median(self.latencies) * 1000
        p95 = statistics.quantiles(self.latencies, n=20)[18] * 1000 if len(self.latencies) > 20 else p50
        ratio = f"{self.rate / baseline.rate:6.3f}" if baseline else "  1.000"
        return f"{self.name:<28} {self.requests:>6} {self.rate:>10.1f} {p50:>9.1f} {p95:>9.1f} {ratio:>8}"


HEADER = f"{'scenario':<28} {'reqs':>6} {'req/s':>10} {'p50 ms':>9} {'p95 ms':>9} {'vs base':>8}"


async def load(name: str, total: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Result:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, total, time.perf_counter() - started, latencies)


def unique_email() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}@example.com"


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its living descendants used so far, from /proc."""
    return _cpu_seconds(pid) + sum(_cpu_seconds(child) for child in _descendants(pid))


async def rich_user(session: AsyncSession, settings: Settings, prefix: str) -> User:
    """A verified user whose balance no bench run can exhaust."""
    user = await users_service.create_user(
        session, settings, email=f"{prefix}-{uuid.uuid4().hex[:10]}@example.com", email_verified_at=utcnow()
    )
    await credits_service.grant(
        session, user.id, 10**12, LedgerReason.admin_adjustment, f"bench:{uuid.uuid4()}"
    )
    return user
