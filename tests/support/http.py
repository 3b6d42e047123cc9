"""What a client checks in an answer: the error body, a Prometheus sample."""

from __future__ import annotations

import re

import httpx


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    """The answer is `status` with the error body `{"error", "detail", "request_id"}` naming `error`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["detail"]
    assert body["request_id"]
    return dict(body)


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None when it is absent."""
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
        if all(found.get(key) == expected for key, expected in labels.items()):
            return float(value)
    return None
