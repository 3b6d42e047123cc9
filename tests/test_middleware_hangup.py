"""Clients that hang up in the middle of their request (issue #16).

A client that goes away is not a server error: the request is logged as one quiet info line with
status 499 (nginx's "client closed request") and counted as 499, never as a 500 with a traceback; and
nothing it sends can make logging block the event loop (a rich traceback with every frame's locals
used to take ~20 s per hang-up on the default development settings, freezing every other client).

The first test runs a real server process on the default settings (`make run`: SQLite, console logs)
and hangs up with raw sockets; the others drive the app in-process through each way a body is read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from app.logging import configure_logging
from app.middleware import RequestContextMiddleware
from tests.conftest import make_settings
from tests.support.accounts import sign_up
from tests.support.logs import access_log_entries
from tests.support.server import Server, running_server

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=pfboundary"
PNG_PART = (
    b'--pfboundary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\x00\x00"
)


@dataclass(frozen=True)
class Body:
    """The start of a body, in a content type, read by the route in one of the ways bodies are read."""

    path: str
    content_type: str
    start: bytes
    how: str


# Each way the app reads a body a client can hang up on, on routes that need no account.
PUBLIC_BODIES = [
    Body("/api/v1/webhooks/stripe", JSON, b'{"id": "evt_1", "type": "checkout.', "route's request.body()"),
    Body("/api/v1/auth/register", JSON, b'{"email": "jane@example.com", "pass', "FastAPI's JSON body"),
    Body("/api/v1/auth/login", FORM, b"username=jane%40example.com&pass", "route's request.form()"),
    Body("/api/v1/uploads", MULTIPART, PNG_PART, "FastAPI's multipart form"),
]


# --- a real server, raw sockets -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("hangup")) as server:
        yield server


def _start_request(server: Server, body: Body, chunked: bool) -> Any:
    """Sends the headers and the start of the body; the caller hangs up."""
    sock = server.connect()
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 100000"
    head = (
        f"POST {body.path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: {body.content_type}\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    sent = f"{len(body.start):x}\r\n".encode() + body.start + b"\r\n" if chunked else body.start
    sock.sendall(head + sent)
    return sock


class HealthProbe(threading.Thread):
    """GET /healthz in a loop on its own keep-alive connection, recording each latency, until stopped
    or until one takes longer than `limit` (then the event loop is stuck: no need to wait it out)."""

    def __init__(self, base_url: str, limit: float) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=limit)
        self.limit = limit
        self.latencies: list[float] = []
        self.stuck = threading.Event()
        self.stop = threading.Event()

    def once(self) -> float:
        started = time.perf_counter()
        try:
            assert self.client.get("/healthz").status_code == 200
        except httpx.TimeoutException:
            return float("inf")
        return time.perf_counter() - started

    def run(self) -> None:
        while not self.stop.is_set():
            latency = self.once()
            self.latencies.append(latency)
            if latency > self.limit:
                self.stuck.set()
                return
            time.sleep(0.005)


def _access_lines(log: str, paths: set[str]) -> list[dict[str, str]]:
    """The console access log's `key=value` pairs of POST requests to `paths`."""
    lines = []
    for line in log.splitlines():
        if "http.request" not in line:
            continue
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if fields.get("method") == "POST" and fields.get("path") in paths:
            lines.append(fields)
    return lines


def test_clients_hanging_up_mid_body_do_not_stall_others_nor_count_as_errors(server: Server) -> None:
    hang_ups = 20
    paths = {body.path for body in PUBLIC_BODIES}

    warm_up = HealthProbe(server.base_url, limit=30)
    baseline = max(warm_up.once() for _ in range(20))
    warm_up.client.close()
    # Generous, so a busy machine does not fail it; one hang-up used to cost ~20 s.
    limit = max(2.0, 20 * baseline)

    probe = HealthProbe(server.base_url, limit)
    probe.start()
    sockets = [
        _start_request(server, PUBLIC_BODIES[i % len(PUBLIC_BODIES)], chunked=i % 2 == 1)
        for i in range(hang_ups)
    ]
    time.sleep(0.2)  # the server is now waiting for the rest of each body
    for sock in sockets:
        sock.close()

    deadline = time.monotonic() + 60
    while len(_access_lines(server.log(), paths)) < hang_ups and not probe.stuck.is_set():
        assert time.monotonic() < deadline, server.log()[-5000:]
        time.sleep(0.05)
    probe.stop.set()
    probe.join(timeout=limit + 5)
    probe.client.close()

    worst = max(probe.latencies)
    took = "no answer in time" if worst == float("inf") else f"{worst:.3f} s"
    assert worst <= limit, (
        f"GET /healthz: {took} while clients hung up (limit {limit:.3f} s, baseline {baseline:.4f} s)"
    )
    log = server.log()
    hung_up = _access_lines(log, paths)
    assert len(hung_up) == hang_ups
    assert {line["status"] for line in hung_up} == {"499"}, hung_up
    assert "unhandled_error" not in log
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
    assert "status=500" not in log

    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    counted = re.findall(r"^pixforge_http_requests_total\{(.*)\} (\S+)$", metrics, re.MULTILINE)
    by_status: dict[str, float] = {}
    for labels, value in counted:
        status = dict(re.findall(r'(\w+)="([^"]*)"', labels))["status"]
        by_status[status] = by_status.get(status, 0) + float(value)
    assert by_status.get("499") == hang_ups, metrics
    assert "500" not in by_status, metrics


# --- in-process: every way a body is read, with and without an account ---------------------------------


def _scope(path: str, content_type: str, headers: dict[str, str]) -> Scope:
    raw_headers = [(b"host", b"testserver"), (b"content-type", content_type.encode())]
    raw_headers += [(b"content-length", b"100000")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _hang_up(app: Any, scope: Scope, start: bytes) -> list[Message]:
    """The client sends `start`, then is gone: every later receive says so, as a server's does."""
    arriving: list[Message] = [{"type": "http.request", "body": start, "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, dict[str, Any]]]:
    return [(record.levelno, record.msg) for record in caplog.records if isinstance(record.msg, dict)]


def _statuses_counted(metrics: str, route: str) -> set[str]:
    pattern = rf'^pixforge_http_requests_total\{{method="POST",route="{re.escape(route)}",status="(\d+)"\}}'
    return set(re.findall(pattern, metrics, re.MULTILINE))


ACCOUNT_BODIES = [
    Body("/api/v1/uploads", MULTIPART, PNG_PART, "FastAPI's multipart form"),
    Body("/api/v1/images/remove-background", MULTIPART, PNG_PART, "FastAPI's multipart form"),
    Body("/api/v1/images/vectorize", MULTIPART, PNG_PART, "route's request.form()"),
    Body("/api/v1/images/vectorize", JSON, b'{"mode": "preview", "upl', "route's request.body()"),
    Body("/api/v1/image/generate", JSON, b'{"style_id": "', "FastAPI's JSON body"),
]
IN_PROCESS = [
    *[pytest.param(body, False, id=f"{body.path}-{body.how}") for body in PUBLIC_BODIES],
    pytest.param(
        Body("/api/v1/auth/login", JSON, b'{"email": "jane@exa', "route's request.body()"),
        False,
        id="/api/v1/auth/login-route's request.body()",
    ),
    *[pytest.param(body, True, id=f"{body.path}-{body.how}-signed-in") for body in ACCOUNT_BODIES],
]


@pytest.mark.parametrize(("body", "signed_in"), IN_PROCESS)
async def test_a_hang_up_is_499_whichever_way_the_body_is_read(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    body: Body,
    signed_in: bool,
) -> None:
    headers = (await sign_up(client, session, "hangup@example.com")).headers if signed_in else {}
    headers["Idempotency-Key"] = "hang-up-1"
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        await _hang_up(app, _scope(body.path, body.content_type, headers), body.start)

    logged = _logged(caplog)
    assert [entry for level, entry in logged if level >= logging.WARNING] == []
    access = access_log_entries(capsys.readouterr().err)
    assert [(entry["path"], entry["status"]) for entry in access] == [(body.path, 499)]
    metrics = (await client.get("/metrics")).text
    assert _statuses_counted(metrics, body.path) == {"499"}
    assert 'status="500"' not in metrics


# --- the middleware on its own: after the answer started, and a real failure ---------------------------


async def _call(app: Any, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestContextMiddleware(app)(_scope("/stream", JSON, {}), receive, send)
    return sent


async def _gone() -> Message:
    return {"type": "http.disconnect"}


@pytest.fixture
def json_logs() -> None:
    """The tests' JSON log lines, configured before the test runs (pytest's log capture is attached then)."""
    configure_logging(make_settings())


@pytest.mark.usefixtures("json_logs")
async def test_a_hang_up_while_streaming_the_answer_is_no_error(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Starlette's StreamingResponse raises ClientDisconnect when the server (ASGI 2.4) cannot write."""

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise ClientDisconnect()

    with caplog.at_level(logging.INFO):
        await _call(streaming, _gone)
    logged = _logged(caplog)
    assert [entry for level, entry in logged if level >= logging.WARNING] == []
    assert [entry["status"] for entry in access_log_entries(capsys.readouterr().err)] == [200]


@pytest.mark.usefixtures("json_logs")
async def test_a_real_failure_after_the_client_left_is_still_a_logged_500(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("a bug of ours")

    with caplog.at_level(logging.INFO):
        sent = await _call(broken, _gone)
    assert sent[0]["status"] == 500
    logged = _logged(caplog)
    assert [entry["event"] for level, entry in logged if level >= logging.ERROR] == [
        "request.unhandled_error"
    ]
    assert [entry["status"] for entry in access_log_entries(capsys.readouterr().err)] == [500]


def test_the_server_fixture_runs_on_default_settings(server: Server) -> None:
    """What the hang-up test relies on: development settings, console (not JSON) logs, SQLite."""
    ready = httpx.get(f"{server.base_url}/readyz", timeout=10).json()
    assert ready["checks"] == {"database": "ok", "webhooks": "ok"}
    log = server.log()
    assert "environment=development" in log
    assert '"event"' not in log
    assert (Path(server.log_path).parent / "data" / "pixforge.db").is_file()
