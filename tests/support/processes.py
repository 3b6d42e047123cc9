"""The worker processes a test's process has started."""

from __future__ import annotations

import os
from pathlib import Path


def spawned_children() -> set[int]:
    """This process's children started by multiprocessing's `spawn` (compute and engine workers), not
    multiprocessing's resource tracker, which outlives them."""
    me = os.getpid()
    pids = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    return {int(pid) for pid in pids if b"spawn_main" in _command_line(pid)}


def _command_line(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # ended between the two reads
        return b""
