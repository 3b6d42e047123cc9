"""Real queue worker processes for the fault tests: `pixforge worker` on a Redis test database, each in
a process group of its own (Dramatiq's parent plus its worker process) so that a test can kill one group
as a crash would, or stop it as an orchestrator does. The vectorize engine is the gated one
(tests/support/gated_engine.py). Logs go to files (a pipe nobody reads would fill up and block)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.server import PIXFORGE, default_environment

# Where the gated engine (tests/support/gated_engine.py, imported by the workers only) keeps its markers.
GATE_DIR_VARIABLE = "PIXFORGE_TEST_GATE_DIR"
GATED_ENGINE_MODULE = "tests.support.gated_engine"
# DB 14: the rest of the suite uses 15 (rate limits), and flushes it.
QUEUE_REDIS_URL = os.environ.get("TEST_QUEUE_REDIS_URL", "redis://127.0.0.1:6379/14")


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(QUEUE_REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@dataclass(frozen=True)
class QueueSetup:
    """What the test process and its workers share: database, files, queue, gate."""

    database_url: str
    data_dir: Path
    gate_dir: Path
    queue_name: str
    lease_seconds: int
    # More settings of the processes' (NAME, value), e.g. a provider's base URL.
    extra_environment: tuple[tuple[str, str], ...] = ()
    # The broker (a test's private Redis instead of the shared test database).
    redis_url: str = QUEUE_REDIS_URL

    def settings_values(self) -> dict[str, object]:
        return {
            "database_url": self.database_url,
            "data_dir": self.data_dir,
            "job_queue": "redis",
            "job_queue_redis_url": self.redis_url,
            "job_queue_name": self.queue_name,
            "job_lease_seconds": self.lease_seconds,
            # A silent worker is presumed dead after 1 s, and every broker call looks for such.
            "job_queue_heartbeat_timeout_seconds": 1,
            "job_queue_maintenance_chance": 1_000_000,
        }

    def environment(self) -> dict[str, str]:
        env = default_environment(self.data_dir)
        env.update({name.upper(): str(value) for name, value in self.settings_values().items()})
        env.update({"ENVIRONMENT": "testing", "LOG_FORMAT": "json", GATE_DIR_VARIABLE: str(self.gate_dir)})
        env.update(dict(self.extra_environment))
        return env

    def open_gate(self) -> None:
        (self.gate_dir / "open").touch()

    def close_gate(self) -> None:
        (self.gate_dir / "open").unlink(missing_ok=True)

    def runs_of(self, job_id: object) -> list[int]:
        """The pids of the processes that started the job, one per run."""
        return [int(path.name.rsplit("-", 1)[1]) for path in self.gate_dir.glob(f"started-{job_id}-*")]

    def run_count(self, job_id: object) -> int:
        """How many times the job was started, by any process."""
        markers = self.gate_dir.glob(f"started-{job_id}-*")
        return sum(path.read_text().count("run") for path in markers)

    def wait_for_runs(self, job_id: object, count: int, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(runs := self.runs_of(job_id)) < count:
            assert time.monotonic() < deadline, f"the job did not start {count} time(s)"
            time.sleep(0.05)
        return runs


@dataclass(frozen=True)
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal_group(self, signum: signal.Signals) -> None:
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until its worker process consumes messages (Dramatiq takes seconds to boot)."""
        deadline = time.monotonic() + timeout
        while "ready for action" not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"the worker did not boot:\n{self.log()}"
            time.sleep(0.05)


@contextmanager
def running_workers(setup: QueueSetup, folder: Path, count: int) -> Iterator[list[WorkerProcess]]:
    """`count` worker groups (one process, one thread each), killed at the end if still running."""
    with ExitStack() as stack:
        workers = []
        for index in range(count):
            log_path = folder / f"worker-{index}.log"
            log = stack.enter_context(log_path.open("wb"))
            process = subprocess.Popen(
                [*PIXFORGE, "worker", "--processes", "1", "--threads", "1", GATED_ENGINE_MODULE],
                env=setup.environment(),
                cwd=folder,  # no .env of the project is read
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            workers.append(WorkerProcess(process, log_path))
        try:
            yield workers
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.signal_group(signal.SIGKILL)
                    worker.wait(timeout=10)
