"""A real Pixforge server process, as `make run` starts it: `pixforge migrate` then `pixforge serve`,
default settings (SQLite under a fresh DATA_DIR, development, console logs), on 127.0.0.1 and a free
port. Its log goes to a file (a pipe nobody reads would fill up and block the server)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PIXFORGE = [sys.executable, "-m", "app.cli"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """The server's log so far, colours stripped."""
        return _ANSI.sub("", self.log_path.read_text(encoding="utf-8", errors="replace"))

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def default_environment(data_dir: Path) -> dict[str, str]:
    """This process's environment without any Pixforge setting (a developer's LOG_FORMAT or
    DATABASE_URL must not change what is tested), plus the data folder."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings}
    env["DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def running_server(
    folder: Path, startup_seconds: float = 30, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """`env`: the processes' whole environment instead of the default one (see default_environment)."""
    env = dict(env) if env is not None else default_environment(folder / "data")
    # From the folder, so that no .env file of the project's is read either.
    subprocess.run([*PIXFORGE, "migrate"], env=env, cwd=folder, check=True, capture_output=True, timeout=120)
    server = Server("127.0.0.1", free_port(), folder / "server.log")
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [*PIXFORGE, "serve", "--host", server.host, "--port", str(server.port)],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, server.log()
            assert time.monotonic() < deadline, f"server did not start:\n{server.log()}"
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # an event loop that is stuck does not see SIGTERM
            process.kill()
            process.wait(timeout=10)
