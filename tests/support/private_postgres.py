"""A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl in a temp folder, on a free port), for
the fault tests that stop and start the server: the shared cluster other tests use is never touched.
As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root). `available()` says
why it cannot be made here (no binaries, no such user), for a clean skip."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import free_port

RUN_AS = "postgres"


def _bin_dir() -> Path | None:
    """The newest PostgreSQL's binaries: PG_BIN_DIR, else the Debian layout."""
    named = os.environ.get("PG_BIN_DIR")
    candidates = [named] if named else glob.glob("/usr/lib/postgresql/*/bin")
    found = [Path(path) for path in candidates if (Path(path) / "pg_ctl").exists()]
    return max(
        found, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0, default=None
    )


def unavailable_reason() -> str | None:
    """None if a private cluster can be made here, else why not."""
    if _bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or PG_BIN_DIR"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


@dataclass
class PrivatePostgres:
    bin_dir: Path
    data_dir: Path
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB"
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "30",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended (57P01) and the server shuts down cleanly; `immediate`: as a crash."""
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", mode, "-D", str(self.data_dir))

    def ensure_started(self) -> None:
        """Start it if it is stopped (a test that failed mid-outage must not break the next ones)."""
        try:
            self._run("pg_ctl", "status", "-D", str(self.data_dir))
        except subprocess.CalledProcessError:
            self.start()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started cluster (trust authentication, user `postgres`), stopped and deleted at the end."""
    bin_dir = _bin_dir()
    assert bin_dir is not None, unavailable_reason()
    # Not under pytest's tmp_path: that is private to root, and the server runs as another user.
    folder = Path(tempfile.mkdtemp(prefix="pixforge-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, RUN_AS, RUN_AS)
        cluster = PrivatePostgres(bin_dir, folder / "data", free_port(), folder / "server.log")
        cluster._run(
            "initdb",
            "-D",
            str(cluster.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        cluster.start()
        try:
            yield cluster
        finally:
            with suppress(subprocess.CalledProcessError):  # already stopped
                cluster.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
