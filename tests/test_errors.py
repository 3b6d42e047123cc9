"""Every error, whoever raises it, answers {"error", "detail", "request_id"} with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.support.logs import access_log_entries
from tests.support.probe_routes import probe_router


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    app.include_router(probe_router)
    return app


def assert_error_body(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail", "request_id"}
    assert body["error"] == error
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    body = assert_error_body(await client.get("/api/v1/nope"), 404, "not_found")
    assert body["detail"] == "No resource at this path."


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")
    assert_error_body(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/users/me", {"GET", "PATCH", "DELETE"}),
        ("/api/v1/images/00000000-0000-0000-0000-000000000000", {"GET", "PATCH", "DELETE"}),
        ("/api/v1/design-systems/00000000-0000-0000-0000-000000000000/featured", {"PUT", "DELETE"}),
    ],
)
async def test_405_allows_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    """Not only the methods of the first route that matched: a path's are often split over routes."""
    response = await client.request("TRACE", path)
    assert_error_body(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == methods


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/probe/items", content=b'{"name": "a",', headers={"content-type": "application/json"}
    )
    assert_error_body(response, 400, "bad_request")


async def test_invalid_fields_are_422_in_fastapi_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/probe/items", json={"name": "far too long a name", "quantity": 0})
    body = assert_error_body(response, 422, "validation_error")
    assert isinstance(body["detail"], list)
    locations = sorted(tuple(error["loc"]) for error in body["detail"])
    assert locations == [("body", "name"), ("body", "quantity")]
    assert all({"type", "msg"} <= set(error) for error in body["detail"])


async def test_nul_characters_are_422_not_500(client: httpx.AsyncClient) -> None:
    # PostgreSQL cannot store NUL: refused at the schema, before it can become a database error.
    response = await client.post("/probe/items", json={"name": "a\u0000b", "quantity": 1})
    body = assert_error_body(response, 422, "validation_error")
    assert "NUL" in str(body["detail"])


async def test_domain_error_carries_its_extra_fields(client: httpx.AsyncClient) -> None:
    body = assert_error_body(await client.get("/probe/conflict"), 409, "conflict")
    assert body["detail"] == "That name is taken."
    assert body["field"] == "name"


async def test_unhandled_exception_is_500_without_internals_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.get("/probe/boom", headers={"X-Request-ID": "trace-me-42"})
    body = assert_error_body(response, 500, "internal_error")
    assert body["request_id"] == "trace-me-42"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    logged = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    failure = next(entry for entry in logged if entry["event"] == "request.unhandled_error")
    assert failure["request_id"] == "trace-me-42"
    assert failure["path"] == "/probe/boom"


async def test_oversize_body_is_413_from_content_length(client: httpx.AsyncClient) -> None:
    limit = client._transport.app.state.settings.max_request_body_bytes  # type: ignore[attr-defined]
    response = await client.post("/probe/bytes", content=b"x" * (limit + 1))
    assert_error_body(response, 413, "payload_too_large")


async def test_oversize_chunked_body_is_413_while_streaming(client: httpx.AsyncClient) -> None:
    limit = client._transport.app.state.settings.max_request_body_bytes  # type: ignore[attr-defined]
    chunk = b"x" * 65536
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent <= limit:
            sent += len(chunk)
            yield chunk

    response = await client.post("/probe/bytes", content=stream())
    assert "content-length" not in response.request.headers
    assert_error_body(response, 413, "payload_too_large")


async def test_body_within_the_limit_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/probe/bytes", content=b"x" * 1000)
    assert response.json() == {"received": 1000}


class TestRequestId:
    async def test_a_well_formed_id_is_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123"

    @pytest.mark.parametrize("offered", ["", "has space", "x" * 129, "inject\u2028line"])
    async def test_a_malformed_id_is_replaced(self, client: httpx.AsyncClient, offered: str) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": offered.encode("utf-8")})
        issued = response.headers["x-request-id"]
        assert issued != offered
        assert len(issued) == 32

    async def test_access_log_line_has_method_path_status_duration_and_id(
        self, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
    ) -> None:
        capsys.readouterr()
        await client.get("/api/v1/missing", headers={"X-Request-ID": "log-me"})
        [entry] = access_log_entries(capsys.readouterr().err)
        assert (entry["method"], entry["path"], entry["status"], entry["request_id"]) == (
            "GET",
            "/api/v1/missing",
            404,
            "log-me",
        )
        assert entry["logger"] == "app.access"
        assert entry["duration_ms"] >= 0


class TestBrowserHeaders:
    async def test_security_headers_on_every_response(self, client: httpx.AsyncClient) -> None:
        for response in (await client.get("/healthz"), await client.get("/nope")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert "default-src 'none'" in response.headers["content-security-policy"]

    async def test_docs_page_is_not_blocked_by_the_api_csp(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/docs")
        assert response.status_code == 200
        assert "content-security-policy" not in response.headers

    async def test_allowed_origin_gets_credentialed_cors(self, client: httpx.AsyncClient) -> None:
        response = await client.options(
            "/healthz",
            headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET"},
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert response.headers["access-control-allow-credentials"] == "true"

    async def test_unknown_origin_gets_no_cors(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers

    async def test_a_500_still_carries_cors_for_the_browser(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/probe/boom", headers={"Origin": "http://localhost:5173"})
        assert response.status_code == 500
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_openapi_schema_builds(app: FastAPI) -> None:
    schema = app.openapi()
    assert "/readyz" in schema["paths"]
    json.dumps(schema)
