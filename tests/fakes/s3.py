"""moto's S3 server over real HTTP, with the one part of S3's contract moto leaves out: presigned URLs.

moto serves any request whose URL carries ``X-Amz-Signature`` without checking the signature or the
expiry. ``PresignedS3Server`` puts a check in front of it that does what S3 does for a presigned
(query-string SigV4) request:

* ``X-Amz-Date`` + ``X-Amz-Expires`` in the past → 403 ``AccessDenied`` "Request has expired";
* a signature that is not the SigV4 one of the method, path, query, signed headers (``host``, and
  ``content-type`` for a presigned PUT made with a ContentType) and ``UNSIGNED-PAYLOAD`` under the
  server's secret key → 403 ``SignatureDoesNotMatch``.

SDK requests (``Authorization`` header) and anonymous ones go to moto untouched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

ACCESS_KEY_ID = "AKIAFAKES3TESTKEY000"
SECRET_ACCESS_KEY = "fake-s3-secret-for-tests-only-0123456789"
REGION = "us-east-1"

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _error(start_response: Callable[..., Any], code: str, message: str) -> list[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _header(environ: dict[str, Any], name: str) -> str:
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    return " ".join(str(environ.get(key, "")).split())


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class PresignedUrlCheck:
    """WSGI middleware: S3's expiry and SigV4 signature check for presigned URLs."""

    def __init__(self, app: Wsgi, secret_access_key: str) -> None:
        self.app = app
        self.secret = secret_access_key

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        params = dict(query)
        if "X-Amz-Signature" not in params:
            return self.app(environ, start_response)
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if datetime.now(UTC) > signed_at + timedelta(seconds=int(params["X-Amz-Expires"])):
            return _error(start_response, "AccessDenied", "Request has expired")
        if params["X-Amz-Signature"] != self.signature(environ, query, params):
            return _error(start_response, "SignatureDoesNotMatch", "The request signature does not match")
        return self.app(environ, start_response)

    def signature(self, environ: dict[str, Any], query: list[tuple[str, str]], params: dict[str, str]) -> str:
        signed_headers = params["X-Amz-SignedHeaders"].split(";")
        canonical_query = "&".join(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
            for name, value in sorted(query)
            if name != "X-Amz-Signature"
        )
        canonical_request = "\n".join(
            [
                environ["REQUEST_METHOD"],
                environ["RAW_URI"].split("?", 1)[0],
                canonical_query,
                "".join(f"{name}:{_header(environ, name)}\n" for name in signed_headers),
                ";".join(signed_headers),
                "UNSIGNED-PAYLOAD",
            ]
        )
        _, date, region, service, terminator = params["X-Amz-Credential"].split("/")
        scope = f"{date}/{region}/{service}/{terminator}"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                params["X-Amz-Date"],
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + self.secret).encode()
        for part in (date, region, service, terminator):
            key = _hmac(key, part)
        return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class PresignedS3Server(ThreadedMotoServer):
    """``ThreadedMotoServer`` on 127.0.0.1 and a free port, behind ``PresignedUrlCheck``."""

    def __init__(self, secret_access_key: str = SECRET_ACCESS_KEY) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._secret = secret_access_key

    def _server_entry(self) -> None:
        app = PresignedUrlCheck(DomainDispatcherApplication(create_backend_app), self._secret)
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forgets every bucket and object (moto's state is per process, not per server)."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()
