"""A Redis server of the test's own (`redis-server` on a free port, its files in a temp folder), for the
fault tests that take the job queue's broker down and bring it back: the shared test Redis is never
touched. Every write is on disk before it is answered (append-only file, fsync always), so a server
killed and started again has every message it had acknowledged, as a production broker with
persistence would."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.server import free_port

REDIS_SERVER = shutil.which("redis-server")


def unavailable_reason() -> str | None:
    return None if REDIS_SERVER else "no redis-server binary"


@dataclass
class PrivateRedis:
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def options(self) -> list[str]:
        durable = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        return ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), *durable]

    def start(self, timeout: float = 10) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(REDIS_SERVER), *self.options()],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def ensure_started(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def kill(self) -> None:
        """As a crash: no shutdown, nothing saved but what the append-only file already holds."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder, free_port())
    with ExitStack() as stack:
        stack.callback(server.kill)
        server.start()
        yield server
