"""Reading what the app logged to stderr (JSON lines, the tests' log format)."""

from __future__ import annotations

import json
from typing import Any


def access_log_entries(stderr: str) -> list[dict[str, Any]]:
    """The access log's lines (`http.request`), parsed, in the order they were written."""
    entries = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"http.request"' in line:
            entry = json.loads(line)
            if entry.get("event") == "http.request":
                entries.append(entry)
    return entries
