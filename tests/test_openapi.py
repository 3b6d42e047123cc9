"""The OpenAPI document, as client generators and fuzzers read it (issue #16).

- It is a valid OpenAPI 3.1 document and every `$ref` in it resolves (login and vectorize, which parse
  their own JSON-or-form bodies, used to point at schemas missing from `components`).
- The account endpoints accept what their documented request schemas allow: bodies built from the
  document (at the schemas' limits) are never refused as invalid (422).
- Next to schemathesis (tests/fuzz/test_schemathesis.py), hand-picked edge cases: no operation answers
  5xx to a body that violates its documented schema (wrong types, missing fields, over-long and huge
  strings, unknown fields, NUL characters, malformed JSON or multipart, the wrong content type), and
  every refusal has the house shape {"error", "detail", "request_id"}. Hand-picked violations for each
  operation and property, then random ones (hypothesis, derandomized as in
  tests/routers/test_images_fuzz.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.schemas.auth import LoginIn
from app.schemas.images import VectorizeIn, VectorizeOptionsIn
from tests.conftest import make_settings
from tests.factories import bearer, make_user
from tests.support.hypothesis_budget import fuzz

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

ERROR_KEYS = frozenset({"error", "detail", "request_id"})
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
HUGE = 200_000
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"pixforge openapi test secret 32b").decode()


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Rate limits would answer 429 long before a fuzzer's hundreds of requests are all read. The webhooks
    # are configured, so that they read (and refuse) what is sent instead of answering 503.
    return make_settings(
        database_url=database_url,
        rate_limits_enabled=False,
        **dict.fromkeys(
            (
                "clerk_webhook_secret",
                "stripe_webhook_secret",
                "razorpay_webhook_secret",
                "dodo_webhook_secret",
                "replicate_webhook_secret",
            ),
            WEBHOOK_SECRET,
        ),
        # (the payment webhooks need their gateway; a refused signature never reaches it)
        stripe_secret_key="sk_test_openapi",
        razorpay_key_id="rzp_test_openapi",
        razorpay_key_secret="openapi",
        dodo_api_key="openapi",
        replicate_api_token="r8_openapi",
    )


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _resolve(document: dict[str, Any], reference: str) -> Any:
    """The node a local JSON-pointer reference names, or None."""
    if not reference.startswith("#/"):
        return None
    node: Any = document
    for part in reference[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _deref(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        resolved = _resolve(document, schema["$ref"])
        assert isinstance(resolved, dict), schema["$ref"]
        schema = resolved
    return schema


# --- the document itself --------------------------------------------------------------------------------


async def test_the_document_is_valid_and_every_reference_resolves(document: dict[str, Any]) -> None:
    validate(document)  # OpenAPI 3.1 structure and JSON Schema keywords
    references = sorted(set(_references(document)))
    assert "#/components/schemas/LoginIn" in references
    assert "#/components/schemas/VectorizeIn" in references
    assert [reference for reference in references if _resolve(document, reference) is None] == []


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


async def test_self_parsed_bodies_are_documented_as_their_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    template = "#/components/schemas/{model}"
    for model in (LoginIn, VectorizeIn, VectorizeOptionsIn):
        documented = {key: value for key, value in schemas[model.__name__].items() if key != "$defs"}
        expected = model.model_json_schema(ref_template=template)
        expected.pop("$defs", None)
        assert documented == expected, model.__name__

    login = _operation(document, "post", "/api/v1/auth/login")["requestBody"]
    assert login["required"] is True
    assert login["content"][JSON_TYPE]["schema"] == {"$ref": "#/components/schemas/LoginIn"}
    fields = schemas["LoginIn"]["properties"]
    for form_type in (FORM_TYPE, MULTIPART_TYPE):
        form = login["content"][form_type]["schema"]
        assert form["required"] == ["username", "password"]
        assert form["properties"]["username"]["maxLength"] == fields["email"]["maxLength"]
        assert form["properties"]["password"] == fields["password"]

    vectorize = _operation(document, "post", "/api/v1/images/vectorize")["requestBody"]["content"]
    assert vectorize[JSON_TYPE]["schema"] == {"$ref": "#/components/schemas/VectorizeIn"}
    multipart = vectorize[MULTIPART_TYPE]
    assert multipart["schema"]["properties"]["options"] == {"$ref": "#/components/schemas/VectorizeOptionsIn"}
    assert multipart["encoding"]["options"]["contentType"] == JSON_TYPE


# --- what the account endpoints document is what they accept --------------------------------------------

LONGEST_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"  # 254 characters


def _valid(document: dict[str, Any], schema: dict[str, Any], longest: bool) -> Any:
    """A value the schema allows: each string at its maximum (or minimum) length."""
    schema = _deref(document, schema)
    if "anyOf" in schema:
        branches = [branch for branch in schema["anyOf"] if branch.get("type") != "null"]
        return _valid(document, branches[0], longest)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        names = properties if longest else schema.get("required", [])
        return {name: _valid(document, properties[name], longest) for name in names}
    if kind == "string":
        if schema.get("format") == "email":
            assert schema["maxLength"] == len(LONGEST_EMAIL)
            return LONGEST_EMAIL if longest else "a@b.co"
        if schema.get("format") == "uuid":
            return str(uuid.uuid4())
        if schema.get("pattern", "^[^\\x00]*$") != "^[^\\x00]*$":
            return schema["examples"][0]  # a value of the documented pattern (a code's six digits)
        return "p" * (schema.get("maxLength", 64) if longest else max(schema.get("minLength", 0), 1))
    raise AssertionError(f"no valid value for {schema}")


AUTH_WITH_BODIES = [
    "/api/v1/auth/register",
    "/api/v1/auth/verify",
    "/api/v1/auth/resend-verification",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/auth/password/forgot",
    "/api/v1/auth/password/reset",
    "/api/v1/auth/password/reset/check",
    "/api/v1/auth/code/request",
    "/api/v1/auth/code/verify",
    "/api/v1/auth/code/check",
]


@pytest.mark.parametrize("longest", [True, False], ids=["longest", "shortest"])
@pytest.mark.parametrize("path", AUTH_WITH_BODIES)
async def test_account_bodies_built_from_the_document_are_not_refused_as_invalid(
    client: httpx.AsyncClient, document: dict[str, Any], path: str, longest: bool
) -> None:
    content = _operation(document, "post", path)["requestBody"]["content"]
    for content_type, media in content.items():
        body = _valid(document, media["schema"], longest)
        if content_type == JSON_TYPE:
            response = await client.post(path, json=body)
        elif content_type == FORM_TYPE:
            response = await client.post(path, data=body)
        else:
            response = await client.post(path, files={name: (None, value) for name, value in body.items()})
        assert response.status_code not in (400, 422) or response.json()["error"] not in (
            "validation_error",
            "bad_request",
        ), f"{content_type} {body!r:.200} -> {response.status_code} {response.text[:500]}"
        assert response.status_code < 500, response.text


async def test_account_bodies_refuse_what_the_document_does_not_allow(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """The other direction: unknown fields (additionalProperties: false) and NUL characters (the
    documented pattern) are refused."""
    for path in AUTH_WITH_BODIES:
        schema = _deref(
            document, _operation(document, "post", path)["requestBody"]["content"][JSON_TYPE]["schema"]
        )
        schema = _deref(document, next(b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"))
        assert schema["additionalProperties"] is False, path
        body = _valid(document, schema, longest=False)
        unknown = await client.post(path, json={**body, "remember_me": True})
        assert unknown.status_code == 422, (path, unknown.text)
        for name, prop in schema["properties"].items():
            branches = [_deref(document, b) for b in prop.get("anyOf", [prop])]
            if any(b.get("pattern") == "^[^\\x00]*$" for b in branches):
                nul = await client.post(path, json={**body, name: "a\x00b"})
                assert nul.status_code == 422, (path, name, nul.text)


# --- no 5xx for a body that violates its documented schema ---------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # path parameters filled in
    content_type: str
    schema: dict[str, Any]
    required: bool
    encoding: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path} ({self.content_type})"


def _operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for template, operations in document["paths"].items():
        path = template
        for parameter in operations.get("parameters", []):
            path = path.replace(f"{{{parameter['name']}}}", str(uuid.uuid4()))
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "requestBody" not in operation:
                continue
            concrete = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    concrete = concrete.replace(f"{{{parameter['name']}}}", str(uuid.uuid4()))
            body = operation["requestBody"]
            for content_type, media in body["content"].items():
                found.append(
                    Operation(
                        method,
                        concrete,
                        content_type,
                        _deref(document, media["schema"]),
                        bool(body.get("required")),
                        media.get("encoding", {}),
                    )
                )
    return found


def _object_schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The object branch of an optional body (`anyOf: [X, null]`)."""
    for branch in schema.get("anyOf", [schema]):
        branch = _deref(document, branch)
        if branch.get("type") == "object":
            return branch
    return schema


def _branches(document: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [_deref(document, branch) for branch in schema.get("anyOf", [schema])]


def _wrong_type(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON value no branch of the schema accepts."""
    kinds = {branch.get("type") for branch in _branches(document, schema)}
    if "object" in kinds or "array" in kinds:
        return 12345 if "integer" not in kinds and "number" not in kinds else True
    return {"not": ["this", 1]}


def _minimal(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Every required property with some value of its type (so that one change violates one thing)."""
    values = {}
    for name in schema.get("required", []):
        branch = _branches(document, schema["properties"][name])[0]
        kind = branch.get("type")
        if "enum" in branch:
            values[name] = branch["enum"][0]
        elif kind == "string":
            values[name] = (
                str(uuid.uuid4())
                if branch.get("format") == "uuid"
                else "x" * max(branch.get("minLength", 1), 1)
            )
        elif kind in ("integer", "number"):
            values[name] = max(branch.get("minimum", 1), 1)
        elif kind == "boolean":
            values[name] = False
        elif kind == "array":
            values[name] = []
        else:
            values[name] = {}
    return values


@dataclass(frozen=True)
class Violation:
    label: str
    request: dict[str, Any]  # httpx keyword arguments


def _json_violations(document: dict[str, Any], operation: Operation) -> Iterator[Violation]:
    schema = _object_schema(document, operation.schema)
    headers = {"Content-Type": JSON_TYPE}
    for raw in (b"[]", b'"text"', b"42", b"true", b'{"unfinished": ', b"\xff\xfe not utf-8"):
        yield Violation(f"body {raw[:12]!r}", {"content": raw, "headers": headers})
    if operation.required:
        yield Violation("empty body", {"content": b"", "headers": headers})
    minimal = _minimal(document, schema)
    if schema.get("required"):
        yield Violation("missing required fields", {"json": {}})
        yield Violation(
            "wrong content type",
            {"content": json.dumps(minimal).encode() + b"\x00", "headers": {"Content-Type": "text/plain"}},
        )
    for name, prop in schema.get("properties", {}).items():
        yield Violation(f"{name}: wrong type", {"json": {**minimal, name: _wrong_type(document, prop)}})
        for branch in _branches(document, prop):
            if branch.get("type") == "string":
                yield Violation(f"{name}: NUL", {"json": {**minimal, name: "a\x00b"}})
                if "maxLength" in branch:
                    yield Violation(
                        f"{name}: one too long", {"json": {**minimal, name: "x" * (branch["maxLength"] + 1)}}
                    )
                    yield Violation(f"{name}: huge", {"json": {**minimal, name: "é" * HUGE}})
                if "enum" in branch or branch.get("format") in ("uuid", "email", "uri"):
                    yield Violation(
                        f"{name}: not its format", {"json": {**minimal, name: "not valid at all"}}
                    )
            elif branch.get("type") in ("integer", "number"):
                if "maximum" in branch:
                    yield Violation(f"{name}: huge number", {"json": {**minimal, name: 10**400}})
                yield Violation(f"{name}: number as huge text", {"json": {**minimal, name: "9" * 5000}})
    if schema.get("additionalProperties") is False:
        yield Violation("unknown huge field", {"json": {**minimal, "unknown": "x" * HUGE}})


def _form_violations(document: dict[str, Any], operation: Operation) -> Iterator[Violation]:
    schema = operation.schema
    multipart = operation.content_type == MULTIPART_TYPE
    yield Violation(
        "JSON sent as the form", {"content": b'{"a": 1}', "headers": {"Content-Type": operation.content_type}}
    )
    if multipart:
        yield Violation(
            "broken multipart",
            {
                "content": b"--b\r\nno headers here",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
        )
    if schema.get("required"):
        yield Violation(
            "missing required fields",
            {"data": {"unrelated": "x"}} if not multipart else {"files": {"unrelated": (None, "x")}},
        )
    for name, prop in schema.get("properties", {}).items():
        for branch in _branches(document, prop):
            wrong: list[tuple[str, str]] = [("NUL", "a\x00b"), ("huge", "é" * HUGE)]
            if branch.get("format") == "binary" or "contentMediaType" in branch:
                wrong.append(("text instead of a file", "not a file"))
            if branch.get("format") == "uuid":
                wrong.append(("not a uuid", "not-a-uuid"))
            if "enum" in branch:
                wrong.append(("not one of its values", "bogus"))
            if branch.get("type") == "object" or "properties" in branch:
                wrong += [
                    ("not JSON", "{not json"),
                    ("JSON of the wrong shape", "[1, 2]"),
                    ("wrong field types", '{"colormode": 7}'),
                ]
            if "maxLength" in branch:
                wrong.append(("one too long", "x" * (branch["maxLength"] + 1)))
            for label, value in wrong:
                if multipart:
                    yield Violation(f"{name}: {label}", {"files": {name: (None, value)}})
                else:
                    yield Violation(f"{name}: {label}", {"data": {name: value}})
    if multipart:
        yield Violation(
            "a file where a field belongs",
            {
                "files": {
                    name: ("x.bin", b"\x00\x01") for name in schema.get("properties", {}) if name != "file"
                }
                or {"x": ("x.bin", b"\x00")}
            },
        )


def _violations(document: dict[str, Any], operation: Operation) -> Iterator[Violation]:
    if operation.content_type == JSON_TYPE:
        yield from _json_violations(document, operation)
    else:
        yield from _form_violations(document, operation)


def checked(response: httpx.Response, context: object) -> None:
    """No 5xx, and a refusal in the house shape."""
    request = response.request
    where = f"[{context}] {request.method} {str(request.url)[:200]}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict), f"{where} -> {response.text[:300]}"
        assert body.keys() >= ERROR_KEYS, f"{where} -> {response.text[:300]}"
        assert body["error"], f"{where} -> {response.text[:300]}"
        assert body["request_id"] == response.headers["x-request-id"], where


@pytest.fixture
async def admin_headers(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    """Authorization for every operation: an admin may call them all (the body is read, validated)."""
    return bearer(container, await make_user(session, settings, role="admin"))


async def test_no_operation_answers_5xx_to_a_body_that_violates_its_schema(
    client: httpx.AsyncClient, document: dict[str, Any], admin_headers: dict[str, str]
) -> None:
    operations = _operations(document)
    assert len({(operation.method, operation.path) for operation in operations}) >= 20
    tried = 0
    for operation in operations:
        for violation in _violations(document, operation):
            request = dict(violation.request)
            request["headers"] = {**admin_headers, **request.get("headers", {})}
            response = await client.request(operation.method, operation.path, **request)
            checked(response, f"{operation}: {violation.label}")
            tried += 1
    # Still signed in: no violation was taken as a valid logout.
    assert (await client.get("/api/v1/users/me", headers=admin_headers)).status_code == 200
    assert tried > 200


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)


@fuzz(max_examples=60)
@given(
    pick=st.integers(min_value=0, max_value=10_000),
    value=_JSON.filter(lambda value: not isinstance(value, dict)),
    junk=st.lists(_JSON, min_size=1, max_size=3),
)
async def test_random_bodies_that_cannot_be_valid_never_answer_5xx(
    client: httpx.AsyncClient,
    document: dict[str, Any],
    admin_headers: dict[str, str],
    pick: int,
    value: Any,
    junk: list[Any],
) -> None:
    """Every documented request body is an object, so a random non-object can never be valid; nor can
    an object whose required fields all hold a list of random values."""
    operations = [operation for operation in _operations(document) if operation.content_type == JSON_TYPE]
    operation = operations[pick % len(operations)]
    response = await client.request(operation.method, operation.path, json=value, headers=admin_headers)
    checked(response, f"{operation}: {value!r:.100}")
    schema = _object_schema(document, operation.schema)
    if schema.get("required"):
        body = dict.fromkeys(schema["required"], junk)
        response = await client.request(operation.method, operation.path, json=body, headers=admin_headers)
        checked(response, f"{operation}: {body!r:.100}")
