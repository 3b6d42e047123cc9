"""Schemathesis against the app's own OpenAPI document, in process: cases are generated from the
document, sent through the test's httpx client (the app runs on the test's event loop and its rolled-back
transaction) and their answers checked against the same document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.dependencies import SESSION_ACCESS_COOKIE

BASE_URL = "http://testserver"
HAIRTRYON_PREFIX = "/compat/hairtryon/"
# The only 5xx a client may get for what it sends: a documented refusal for a feature whose provider this
# server has no account for (webhooks, generation, prompt enhancement, payments in a bare test setup).
ACCEPTED_SERVER_REFUSALS = frozenset({"provider_not_configured"})
# Checks of the answer alone: nothing is sent again.
ANSWER_CHECKS = (content_type_conformance, response_schema_conformance, status_code_conformance)


def load_schema(document: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(document)


def operation_strategy(operation: Any) -> st.SearchStrategy[Any]:
    """Valid and invalid cases of one operation, half each."""
    return st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


@dataclass(frozen=True)
class Credentials:
    """How the fuzzed requests authenticate: a bearer (an access token or an API key) for the API, the
    same access token as the Hair Try-On session cookie (with an allowed Origin) for its compat routes."""

    bearer: str
    access_token: str
    origin: str

    def for_path(self, path: str) -> dict[str, str]:
        if path.startswith(HAIRTRYON_PREFIX):
            return {"Cookie": f"{SESSION_ACCESS_COOKIE}={self.access_token}", "Origin": self.origin}
        return {"Authorization": f"Bearer {self.bearer}"}


def _httpx_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A `requests`-style call (what schemathesis serializes a case to) as httpx keyword arguments."""
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params") or None,
    }
    headers = {
        key: value for key, value in kwargs.get("headers", {}).items() if key != "X-Schemathesis-TestCaseId"
    }
    cookies = kwargs.get("cookies") or {}
    if cookies:
        sent = "; ".join(f"{name}={value}" for name, value in cookies.items())
        headers["Cookie"] = f"{headers['Cookie']}; {sent}" if "Cookie" in headers else sent
    request["headers"] = headers
    if "json" in kwargs:
        request["content"] = json.dumps(kwargs["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    data = kwargs.get("data")
    files = kwargs.get("files")
    if files:
        # (requests sends a number as its text; httpx wants text, bytes or a file)
        request["files"] = [
            (name, (part[0], part[1] if isinstance(part[1], str | bytes) else str(part[1]), *part[2:]))
            for name, part in files
        ]
        if isinstance(data, Mapping):
            request["data"] = data
    elif isinstance(data, Mapping):
        request["data"] = data
    elif isinstance(data, str):
        request["content"] = data.encode("utf-8", "surrogatepass")
    elif data is not None:
        request["content"] = data
    return request


async def send(client: httpx.AsyncClient, case: Any, credentials: Credentials) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=credentials.for_path(case.formatted_path))
    response = await client.request(**_httpx_request(kwargs))
    response.request.read()  # a multipart body is a stream; the checks read what was sent
    return response


def provider_not_configured(response: httpx.Response) -> bool:
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") in ACCEPTED_SERVER_REFUSALS


def validate(case: Any, response: httpx.Response) -> None:
    """No server error (bar a documented provider refusal), and a declared status, content type and
    body: raises schemathesis' FailureGroup with every failed check."""
    checks = list(ANSWER_CHECKS)
    if not provider_not_configured(response):
        checks.append(not_a_server_error)
    case.validate_response(response, checks=checks)
