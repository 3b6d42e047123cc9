"""Outside services that misbehave at the TCP level, for tests whose code under test runs in another
process (a respx mock cannot reach it): an HTTP server that accepts and reads a request, then never
answers until told to, and answers a fixed response once switched. A closed port is
`tests.support.server.free_port()`: nothing listens on it."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SwitchableHttpServer:
    """`hang()`: every request is read and left unanswered (the connection stays open) until `answer()`,
    `close()`, or the client gives up; `answer()`: every request gets `response` (a whole HTTP/1.1
    response, `Connection: close`). Counts the requests it received."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests = 0
        self._answering = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                connection: socket.socket = self.request
                connection.settimeout(10)
                try:
                    _read_request(connection)
                except OSError:
                    return
                with outer._lock:
                    outer.requests += 1
                while not outer._answering.wait(0.05):
                    if outer._closed.is_set():
                        return
                try:
                    connection.sendall(outer.response)
                except OSError:
                    return  # the client gave up (its timeout): nothing to answer

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hang(self) -> None:
        self._answering.clear()

    def answer(self) -> None:
        self._answering.set()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()


def _read_request(connection: socket.socket) -> None:
    """Read one request: its head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the request head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the request body")
        body += chunk


def http_response(
    status: str, content_type: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextmanager
def switchable_http_server(response: bytes, *, hanging: bool = True) -> Iterator[SwitchableHttpServer]:
    server = SwitchableHttpServer(response)
    if not hanging:
        server.answer()
    server.start()
    try:
        yield server
    finally:
        server.close()
