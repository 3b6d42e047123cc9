"""A body over MAX_REQUEST_BODY_BYTES is 413 `payload_too_large`, however it is framed (Content-Length
or chunked) and whoever reads it: FastAPI's JSON or form parsing, or a route's own request.body() /
request.form(). Issue #9 (6a): a chunked JSON body used to answer 400 "error parsing the body"."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from tests.conftest import make_settings
from tests.support.accounts import sign_up
from tests.support.server import Server, running_server

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

LIMIT = 64 * 1024
CHUNK = 16 * 1024
BOUNDARY = "pfboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url, max_request_body_bytes=LIMIT)


@dataclass(frozen=True)
class Route:
    path: str
    content_type: str
    start: bytes  # then filler up to past the limit
    signed_in: bool = False


def _json_start(field: str) -> bytes:
    return f'{{"{field}": "'.encode()


ROUTES = [
    pytest.param(Route("/api/v1/auth/register", "application/json", _json_start("name")), id="json-fastapi"),
    pytest.param(Route("/api/v1/auth/login", "application/json", _json_start("email")), id="json-route"),
    pytest.param(
        Route("/api/v1/auth/login", "application/x-www-form-urlencoded", b"username="), id="form-route"
    ),
    pytest.param(Route("/api/v1/webhooks/stripe", "application/json", _json_start("id")), id="raw-webhook"),
    pytest.param(Route("/api/v1/uploads", MULTIPART, FILE_PART, True), id="multipart-fastapi"),
    pytest.param(
        Route("/api/v1/images/remove-background", MULTIPART, FILE_PART, True), id="multipart-fastapi-optional"
    ),
    pytest.param(Route("/api/v1/images/vectorize", MULTIPART, FILE_PART, True), id="multipart-route"),
    pytest.param(
        Route("/api/v1/images/vectorize", "application/json", _json_start("upload_id"), True),
        id="json-route-auth",
    ),
    pytest.param(
        Route("/api/v1/image/generate", "application/json", _json_start("style_id"), True),
        id="json-fastapi-auth",
    ),
]


def _oversize(start: bytes) -> Iterator[bytes]:
    yield start
    sent = len(start)
    while sent <= LIMIT:
        yield b"a" * CHUNK
        sent += CHUNK


async def _chunked(start: bytes) -> AsyncIterator[bytes]:
    for chunk in _oversize(start):
        yield chunk


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "payload_too_large"
    assert str(LIMIT) in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


async def _headers(client: httpx.AsyncClient, session: AsyncSession, route: Route) -> dict[str, str]:
    headers = {"Content-Type": route.content_type, "Idempotency-Key": "too-large-1"}
    if route.signed_in:
        headers.update((await sign_up(client, session, "big@example.com")).headers)
    return headers


@pytest.mark.parametrize("route", ROUTES)
async def test_an_oversize_chunked_body_is_413(
    client: httpx.AsyncClient, session: AsyncSession, route: Route
) -> None:
    response = await client.post(
        route.path, content=_chunked(route.start), headers=await _headers(client, session, route)
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response)


@pytest.mark.parametrize("route", ROUTES)
async def test_an_oversize_declared_body_is_413(
    client: httpx.AsyncClient, session: AsyncSession, route: Route
) -> None:
    content = b"".join(_oversize(route.start))
    response = await client.post(route.path, content=content, headers=await _headers(client, session, route))
    assert int(response.request.headers["content-length"]) > LIMIT
    assert_too_large(response)


async def test_a_chunked_body_within_the_limit_is_read(client: httpx.AsyncClient) -> None:
    async def small() -> AsyncIterator[bytes]:
        yield b'{"email": "someone@example.com", '
        yield b'"password": "not the password"}'

    response = await client.post(
        "/api/v1/auth/login", content=small(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401, response.text


# --- on the wire: a real server (default limit), chunked with raw sockets ----------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits")) as server:
        yield server


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and headers, and the body (by its Content-Length)."""
    sock.settimeout(30)
    received = b""
    while b"\r\n\r\n" not in received:
        more = sock.recv(65536)
        assert more, f"connection closed after {received!r}"
        received += more
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        more = sock.recv(65536)
        assert more, f"connection closed after {received!r}"
        body += more
    return head, body


def _send_chunked_until_answered(
    server: Server, path: str, content_type: str, start: bytes
) -> tuple[bytes, bytes]:
    """Streams chunks past the default limit, stopping as soon as the server answers (it must answer
    before the body ends)."""
    limit = Settings(_env_file=None).max_request_body_bytes  # type: ignore[call-arg]
    chunk = b"a" * (256 * 1024)
    with server.connect(timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for piece in (start, *[chunk] * (limit // len(chunk) + 8)):
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:  # answered and closed while we were still sending
                break
        return _read_answer(sock)


@pytest.mark.parametrize(
    ("path", "content_type", "start"),
    [
        pytest.param("/api/v1/auth/register", "application/json", _json_start("name"), id="json"),
        pytest.param("/api/v1/uploads", MULTIPART, FILE_PART, id="multipart"),
    ],
)
def test_an_oversize_chunked_body_is_413_on_the_wire(
    server: Server, path: str, content_type: str, start: bytes
) -> None:
    head, body = _send_chunked_until_answered(server, path, content_type, start)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert json.loads(body)["error"] == "payload_too_large"
