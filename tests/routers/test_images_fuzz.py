"""Bad input for the image API: property-based (hypothesis) and hand-written edge cases for uploads,
background removal, vectorizing, generation, the gallery, single items, events, styles, signed files
and Idempotency-Key.

The house rule (DESIGN.md, "What bad input gets"): whatever a client sends, the answer is never a 5xx;
every refusal carries {"error", "detail", "request_id"}; a refused request changes nothing (no credits
reserved or spent, no rows, no stored files, no idempotency claim left behind); one user never sees or
changes another's data.

Known bugs are kept as minimal reproductions marked xfail(strict=True): they fail the suite the day
they are fixed, so the mark can be removed then. Tests whose docstring says "Regression" reproduced a
bug this file found, fixed since in the tree; they now guard the fix.

Hypothesis runs derandomized (the same examples every run, no example database written) so the suite
stays deterministic; set FUZZ_RANDOM=1 (and FUZZ_EXAMPLES=<n>) to hunt with fresh random examples.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.integrations.images.local_background import LocalBackgroundRemover
from app.integrations.images.local_vectorizer import LocalVectorizer
from app.models import (
    CreditAccount,
    CreditLedgerEntry,
    IdempotencyRecord,
    Job,
    JobKind,
    JobStatus,
    Upload,
    User,
)
from app.services.users import create_user
from tests.conftest import make_settings
from tests.fakes.replicate import FakeReplicate
from tests.support.hypothesis_budget import fuzz
from tests.support.images import jpeg, logo_like, pdf_named_png, png_bomb, truncated_png, webp

API = "/api/v1"
UPLOADS = f"{API}/uploads"
CUT_OUT = f"{API}/images/remove-background"
VECTORIZE = f"{API}/images/vectorize"
GENERATE = f"{API}/image/generate"
GALLERY = f"{API}/images"
ERROR_KEYS = frozenset({"error", "detail", "request_id"})
JSON_TYPE = {"Content-Type": "application/json"}


# --- what every answer must look like -----------------------------------------------------------------------


def checked(
    response: httpx.Response, context: object = "", *, expected_5xx: int = 0
) -> dict[str, Any] | None:
    """No 5xx (but the one a test expects, e.g. 503 for an unconfigured provider), and a refusal in the
    house shape. Returns the error body (None when not refused)."""
    request = response.request
    where = f"[{context}] {request.method} {str(request.url)[:200]}"
    status = response.status_code
    assert status < 500 or status == expected_5xx, f"{where} -> {status} {response.text[:500]}"
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), f"{where} -> {response.text[:300]}"
    assert body.keys() >= ERROR_KEYS, f"{where} -> {response.text[:300]}"
    assert isinstance(body["error"], str), f"{where} -> {response.text[:300]}"
    assert body["error"], f"{where} -> {response.text[:300]}"
    assert body["request_id"], f"{where} -> {response.text[:300]}"
    return body


def refused(response: httpx.Response, *statuses: int, context: object = "") -> dict[str, Any]:
    body = checked(response, context, expected_5xx=max((s for s in statuses if s >= 500), default=0))
    assert body is not None, (
        f"[{context}] expected a refusal, got {response.status_code} {response.text[:300]}"
    )
    if statuses:
        assert response.status_code in statuses, f"[{context}] {response.status_code} {response.text[:500]}"
    return body


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused request must leave as it was, for one user."""

    balance: Decimal
    reserved: int
    jobs: int
    uploads: int
    idempotency_keys: int
    ledger_rows: int
    stored_files: int
    items: tuple[tuple[str, bool, str | None], ...]


class World:
    """The app, the test's session and the storage, with the probes the assertions need."""

    def __init__(
        self, client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
    ) -> None:
        self.client = client
        self.session = session
        self.settings = settings
        self.container = container

    def headers(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.container.tokens.issue(user.id, 'access')[0]}"}

    async def balance(self, auth: Mapping[str, str]) -> Decimal:
        response = await self.client.get(f"{API}/users/credits", headers=dict(auth))
        assert response.status_code == 200, response.text
        return Decimal(str(response.json()["credits"]))

    async def _count(self, model: Any, user_id: uuid.UUID) -> int:
        statement = select(func.count()).select_from(model).where(model.user_id == user_id)
        return int(await self.session.scalar(statement) or 0)

    async def snapshot(self, user: User) -> Snapshot:
        user_id = user.id
        items = []
        for model in (Job, Upload):
            rows = await self.session.execute(
                select(model.id, model.is_favourite, model.description).where(model.user_id == user_id)
            )
            items += [(str(row[0]), bool(row[1]), row[2]) for row in rows]
        account = (
            await self.session.execute(
                select(CreditAccount.id, CreditAccount.balance, CreditAccount.reserved).where(
                    CreditAccount.user_id == user_id
                )
            )
        ).one()
        ledger_rows = select(func.count()).select_from(CreditLedgerEntry)
        ledger_rows = ledger_rows.where(CreditLedgerEntry.account_id == account.id)
        root = self.settings.storage_dir / "users" / str(user_id)
        files = sum(1 for path in root.rglob("*") if path.is_file()) if root.exists() else 0
        return Snapshot(
            balance=Decimal(account.balance) / 1000,  # millicredits, read as GET users/credits shows them
            reserved=int(account.reserved),
            jobs=await self._count(Job, user_id),
            uploads=await self._count(Upload, user_id),
            idempotency_keys=await self._count(IdempotencyRecord, user_id),
            ledger_rows=int(await self.session.scalar(ledger_rows) or 0),
            stored_files=files,
            items=tuple(sorted(items)),
        )

    async def upload(self, user: User, data: bytes, name: str = "image.png") -> str:
        response = await self.client.post(
            UPLOADS, headers=self.headers(user), files={"file": (name, data, "application/octet-stream")}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def finished_job(self, user: User) -> str:
        """A completed vectorize job with its SVG stored, made directly (a real trace costs a worker
        process start per test)."""
        job_id = uuid.uuid4()
        key = f"users/{user.id}/jobs/{job_id}/main.svg"
        svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
        await self.container.storage.put(key, svg, "image/svg+xml")
        self.session.add(
            Job(
                id=job_id,
                user_id=user.id,
                kind=JobKind.vectorize.value,
                status=JobStatus.completed.value,
                outputs=[{"key": key, "content_type": "image/svg+xml", "view": "main", "size": len(svg)}],
                options={"mode": "preview"},
                provider="local",
                attempts=1,
                finished_at=utcnow(),
            )
        )
        await self.session.flush()
        return str(job_id)


async def assert_unchanged_after_refusal(
    world: World, user: User, before: Snapshot, response: httpx.Response, context: object = ""
) -> None:
    """A refusal changes nothing; a failed job (answered `job_failed`) keeps its row and ledger pair
    by design, but never costs anything."""
    body = refused(response, context=context)
    after = await world.snapshot(user)
    if body["error"] == "job_failed":
        assert after.balance == before.balance, (context, body)
        assert body.get("credits_charged") == 0, (context, body)
        return
    assert after == before, f"[{context}] {response.status_code} {response.text[:300]}"


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_replicate: FakeReplicate
) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="https://api.example.com",
        replicate_api_token=fake_replicate.api_token,
        replicate_webhook_secret=fake_replicate.webhook_secret,
        replicate_poll_interval_seconds=0.01,
        job_retry_base_seconds=0,
        # Fuzzed generation requests must reach the checks behind the limiter, not all stop at 429.
        rate_limit_generate_per_user="1000/minute",
    )


async def _verified_user(session: AsyncSession, settings: Settings, prefix: str) -> User:
    return await create_user(
        session, settings, email=f"{prefix}-{uuid.uuid4().hex[:10]}@example.com", email_verified_at=utcnow()
    )


@pytest.fixture
async def user(session: AsyncSession, settings: Settings) -> User:
    return await _verified_user(session, settings, "owner")


@pytest.fixture
async def nosy(session: AsyncSession, settings: Settings) -> User:
    return await _verified_user(session, settings, "nosy")


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[LocalBackgroundRemover, LocalVectorizer]]:
    """The real local engines, shared by the module's tests: one u2netp session and one pool of
    vectorizer worker processes instead of a model load and a process start in every test."""
    vectorizer = LocalVectorizer(max_concurrency=2)
    yield LocalBackgroundRemover(max_concurrency=2, png_compress_level=1), vectorizer
    vectorizer.close()


@pytest.fixture
def world(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    engines: tuple[LocalBackgroundRemover, LocalVectorizer],
) -> Iterator[World]:
    own_engines = container.background_remover, container.vectorizer
    container.background_remover, container.vectorizer = engines
    yield World(client, session, settings, container)
    container.background_remover, container.vectorizer = own_engines  # the container closes its own


@pytest.fixture
def auth(world: World, user: User) -> dict[str, str]:
    return world.headers(user)


@pytest.fixture
def nosy_auth(world: World, nosy: User) -> dict[str, str]:
    return world.headers(nosy)


@pytest.fixture
async def own_upload(world: World, user: User) -> str:
    return await world.upload(user, logo_like(32))


@pytest.fixture
async def nosy_upload(world: World, nosy: User) -> str:
    return await world.upload(nosy, logo_like(24))


@pytest.fixture
async def own_job(world: World, user: User) -> str:
    return await world.finished_job(user)


@pytest.fixture
async def style_id(client: httpx.AsyncClient) -> str:
    styles = (await client.get(f"{API}/styles")).json()
    return str(styles[0]["id"])


@pytest.fixture
async def names(
    world: World, user: User, own_upload: str, nosy_upload: str, own_job: str, style_id: str
) -> dict[str, str]:
    """Placeholders the cases use for ids only known at run time."""
    return {
        "own": own_upload,
        "own_webp": await world.upload(user, webp(16, 16), "a.webp"),
        "nosy": nosy_upload,
        "random": str(uuid.uuid4()),
        "job": own_job,
        "style": style_id,
    }


def resolve(value: Any, names: Mapping[str, str]) -> Any:
    """`value` with every placeholder string replaced by its id, through dicts, lists and form tuples."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {key: resolve(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if isinstance(value, tuple) and len(value) == 2 and value[0] is None:  # (None, text): a form field
        return (None, resolve(value[1], names))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):  # (name, part)
        return (value[0], resolve(value[1], names))
    return value


def resolve_bytes(content: bytes, names: Mapping[str, str]) -> bytes:
    for name, value in names.items():
        content = content.replace(f'"{name}"'.encode(), f'"{value}"'.encode())
    return content


# --- strategies ---------------------------------------------------------------------------------------------

# Lone surrogates cannot travel as UTF-8 and NaN/Infinity are not JSON: both have tests of their own.
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
SHORT_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(SHORT_TEXT, children, max_size=4)


JSON_VALUES = st.recursive(JSON_SCALARS, json_containers, max_leaves=12)
UUID_TEXT = st.uuids().map(str)
PLACEHOLDERS = st.sampled_from(["own", "own_webp", "nosy", "random", "job"])


def json_object(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields` (each drawn from its strategy), plus stray keys."""
    known = st.fixed_dictionaries({}, optional=dict(fields))
    stray = st.dictionaries(SHORT_TEXT, JSON_VALUES, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, stray)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


ISO_MOMENTS = st.datetimes(timezones=st.timezones() | st.none()).map(lambda moment: moment.isoformat())
CURSORS = st.one_of(
    st.text(max_size=220),
    st.binary(max_size=120).map(b64),
    st.lists(JSON_SCALARS | ISO_MOMENTS, max_size=3).map(lambda items: b64(json.dumps(items).encode())),
    st.tuples(ISO_MOMENTS | TEXT, UUID_TEXT | TEXT).map(lambda pair: b64(json.dumps(list(pair)).encode())),
)
QUERY_VALUES = st.one_of(
    TEXT,
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.sampled_from(["true", "false", "1", "0", "yes", "off", "", "null", "COMPLETED", "upload", "generate"]),
    CURSORS,
)
FILE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=64).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),
    st.binary(max_size=64).map(lambda tail: b"\xff\xd8\xff" + tail),
    st.binary(max_size=64).map(lambda tail: b"RIFF\x00\x00\x00\x00WEBP" + tail),
    st.sampled_from([truncated_png(), pdf_named_png(), b"GIF89a" + bytes(40), b""]),
)


# --- the gallery --------------------------------------------------------------------------------------------


class TestGalleryQueries:
    @fuzz(25)
    @given(
        params=st.dictionaries(
            st.sampled_from(["limit", "cursor", "kind", "status", "favourite"]) | SHORT_TEXT,
            QUERY_VALUES,
            max_size=5,
        )
    )
    async def test_fuzzed_query_strings_never_fail_and_never_leak(
        self,
        world: World,
        auth: dict[str, str],
        own_upload: str,
        own_job: str,
        nosy_upload: str,
        params: dict[str, str],
    ) -> None:
        response = await world.client.get(GALLERY, headers=auth, params=params)
        if checked(response, params) is None:
            ids = {item["id"] for item in response.json()["items"]}
            assert ids <= {own_upload, own_job}, params
        else:
            assert response.status_code in (400, 422), response.text

    @fuzz(25)
    @given(cursor=CURSORS)
    async def test_fuzzed_cursors_are_200_or_400(
        self, world: World, auth: dict[str, str], own_upload: str, cursor: str
    ) -> None:
        response = await world.client.get(GALLERY, headers=auth, params={"cursor": cursor, "limit": 5})
        body = checked(response, cursor)
        if body is not None:
            assert (response.status_code, body["error"]) in {
                (400, "invalid_cursor"),
                (422, "validation_error"),
            }

    async def test_extreme_but_valid_cursor_moments(
        self, world: World, auth: dict[str, str], own_upload: str, own_job: str
    ) -> None:
        moments = [
            "0001-01-01T00:00:00+00:00",
            "0001-01-01T23:59:59-23:59",
            "0001-01-02T00:00:00+14:00",
            "1000-01-01T00:00:00+00:00",
            "1969-12-31T23:59:59.999999+00:00",
            "2038-01-19T03:14:08+00:00",
            "9999-12-31T23:59:59.999999+00:00",
            "9999-12-31T00:00:00+23:59",
            "2024-02-29T12:00:00.5+05:30",
            "2024-01-01T00:00:00Z",
        ]
        for moment in moments:
            for row_id in (str(uuid.uuid4()), str(uuid.UUID(int=0)), uuid.UUID(own_job).hex):
                cursor = b64(json.dumps([moment, row_id]).encode())
                for extra in ({}, {"kind": "upload"}, {"favourite": "false", "status": "COMPLETED"}):
                    response = await world.client.get(
                        GALLERY, headers=auth, params={"cursor": cursor, **extra}
                    )
                    body = checked(response, (moment, row_id, extra))
                    assert body is None or body["error"] == "invalid_cursor", response.text

    async def test_malformed_cursors(self, world: World, auth: dict[str, str]) -> None:
        cursors = [
            "",
            "=",
            "====",
            "%%%",
            "\u00e9\u00e9",
            b64(b"null"),
            b64(b"[]"),
            b64(b"[1]"),
            b64(b'["a","b","c"]'),
            b64(b'{"created_at": "2024-01-01T00:00:00+00:00", "id": 1}'),
            b64(b'["2024-01-01T00:00:00", "' + str(uuid.UUID(int=1)).encode() + b'"]'),
            b64(b'["2024-01-01T00:00:00+00:00", "not-a-uuid"]'),
            b64(b'["2024-01-01T00:00:00+00:00", 12]'),
            b64(b'["2024-01-01T24:00:00+00:00", "' + str(uuid.UUID(int=1)).encode() + b'"]'),
            b64(b"[1e999, 2]"),
            b64(b'["\xff\xfe", "x"]'),
            b64(b"[" * 60 + b"]" * 60),
            base64.standard_b64encode(b'["2024-01-01T00:00:00+00:00", "' + bytes(36) + b'"]').decode(),
        ]
        for cursor in cursors:
            response = await world.client.get(GALLERY, headers=auth, params={"cursor": cursor})
            if checked(response, cursor) is not None:
                assert response.status_code in (400, 422), response.text

    async def test_hand_written_bad_queries(self, world: World, auth: dict[str, str]) -> None:
        queries = [
            "limit=0",
            "limit=-1",
            "limit=101",
            "limit=1.5",
            "limit=1e2",
            "limit=" + "9" * 5000,
            "limit=",
            "limit=%00",
            "kind=UPLOAD",
            "kind=",
            "status=completed",
            "status=COMPLETED%0A",
            "status=",
            "favourite=2",
            "favourite=",
            "favourite=maybe",
            "cursor=" + "A" * 201,
            "kind=upload&status=FAILED",
            "kind=upload&kind=generate",
            "limit=1&limit=500",
            "%ff=%fe",
        ]
        for query in queries:
            checked(await world.client.get(f"{GALLERY}?{query}", headers=auth), query)


# --- single items: ids, ownership, PATCH, DELETE, events ----------------------------------------------------

ITEM_PATHS = ("{}/images/{}", "{}/image/status/{}", "{}/images/{}/events")


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestItems:
    @fuzz(20)
    @given(raw=st.one_of(TEXT, UUID_TEXT, st.uuids().map(lambda u: u.hex.upper())))
    async def test_fuzzed_ids_are_refused_and_change_nothing(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, raw: str
    ) -> None:
        before = await world.snapshot(user)
        escaped = quote(raw, safe="")
        for template in ITEM_PATHS:
            checked(await world.client.get(template.format(API, escaped), headers=auth), raw)
        checked(
            await world.client.patch(f"{GALLERY}/{escaped}", headers=auth, json={"is_favourite": True}), raw
        )
        checked(await world.client.delete(f"{GALLERY}/{escaped}", headers=auth), raw)
        assert await world.snapshot(user) == before

    async def test_ids_that_are_not_uuids(self, world: World, user: User, auth: dict[str, str]) -> None:
        before = await world.snapshot(user)
        for raw in (
            "not-a-uuid",
            "null",
            "0",
            "-1",
            "1e9",
            "00000000-0000-0000-0000-00000000000",
            "00000000-0000-0000-0000-0000000000000",
            "g0000000-0000-0000-0000-000000000000",
            "%00",
            "%C0%AE%C0%AE",
            "..%2F..%2Fetc%2Fpasswd",
            "%E2%80%AE",
            "1" * 2000,
            "urn:uuid:" + str(uuid.UUID(int=7)),
            "{" + str(uuid.UUID(int=7)) + "}",
            uuid.UUID(int=7).hex,
        ):
            for template in ITEM_PATHS:
                refused(
                    await world.client.get(template.format(API, raw), headers=auth), 404, 422, context=raw
                )
            refused(await world.client.delete(f"{GALLERY}/{raw}", headers=auth), 404, 422, context=raw)
            patch = await world.client.patch(f"{GALLERY}/{raw}", headers=auth, json={"description": "x"})
            refused(patch, 404, 422, context=raw)
        assert await world.snapshot(user) == before

    async def test_another_users_items_are_404_and_untouched(
        self,
        world: World,
        user: User,
        nosy: User,
        nosy_auth: dict[str, str],
        own_upload: str,
        own_job: str,
    ) -> None:
        before = await world.snapshot(user)
        nosy_before = await world.snapshot(nosy)
        for item in (own_upload, own_job):
            for template in ITEM_PATHS:
                refused(await world.client.get(template.format(API, item), headers=nosy_auth), 404)
            for body in ({"is_favourite": True}, {"description": "mine now"}, {}):
                refused(await world.client.patch(f"{GALLERY}/{item}", headers=nosy_auth, json=body), 404)
            refused(await world.client.delete(f"{GALLERY}/{item}", headers=nosy_auth), 404)
        # Nor through the spending endpoints: another's upload is not found, and costs nothing.
        form = {"upload_id": (None, own_upload)}
        for url, kwargs in (
            (CUT_OUT, {"files": form}),
            (f"{CUT_OUT}?async=true", {"files": form}),
            (VECTORIZE, {"json": {"upload_id": own_upload}}),
            (VECTORIZE, {"files": form}),
        ):
            refused(await world.client.post(url, headers=nosy_auth, **kwargs), 404, context=url)
        listed = (await world.client.get(GALLERY, headers=nosy_auth, params={"limit": 100})).json()["items"]
        assert listed == []
        assert await world.snapshot(user) == before
        assert await world.snapshot(nosy) == nosy_before

    async def test_delete_twice_is_204_then_404(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, own_job: str
    ) -> None:
        outputs = []
        for item in (own_job, own_upload):
            found = (await world.client.get(f"{GALLERY}/{item}", headers=auth)).json()
            outputs.append(urlsplit(found["outputs"][0]["url"]))
            assert (await world.client.delete(f"{GALLERY}/{item}", headers=auth)).status_code == 204
            before = await world.snapshot(user)
            refused(await world.client.delete(f"{GALLERY}/{item}", headers=auth), 404)
            refused(await world.client.get(f"{GALLERY}/{item}", headers=auth), 404)
            refused(await world.client.get(f"{API}/image/status/{item}", headers=auth), 404)
            refused(
                await world.client.patch(f"{GALLERY}/{item}", headers=auth, json={"is_favourite": True}), 404
            )
            refused(await world.client.get(f"{API}/images/{item}/events", headers=auth), 404)
            refused(await world.client.post(VECTORIZE, headers=auth, json={"upload_id": item}), 404)
            assert await world.snapshot(user) == before
        for url in outputs:
            refused(await world.client.get(f"{url.path}?{url.query}"), 404)

    async def test_events_of_a_finished_job_and_of_things_that_are_not_jobs(
        self, world: World, auth: dict[str, str], own_upload: str, own_job: str
    ) -> None:
        response = await world.client.get(f"{API}/images/{own_job}/events", headers=auth)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.text.count("event: status") == 1
        assert '"status":"COMPLETED"' in response.text
        refused(await world.client.get(f"{API}/images/{own_upload}/events", headers=auth), 404)
        refused(await world.client.get(f"{API}/images/{uuid.uuid4()}/events", headers=auth), 404)

    async def test_unauthenticated_requests_are_401_and_change_nothing(
        self, world: World, user: User, own_upload: str, own_job: str
    ) -> None:
        before = await world.snapshot(user)
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", GALLERY, {}),
            ("GET", f"{GALLERY}/{own_job}", {}),
            ("GET", f"{API}/images/{own_job}/events", {}),
            ("PATCH", f"{GALLERY}/{own_job}", {"json": {"is_favourite": True}}),
            ("DELETE", f"{GALLERY}/{own_upload}", {}),
            ("POST", UPLOADS, {"files": {"file": ("a.png", logo_like(16), "image/png")}}),
            ("POST", CUT_OUT, {"files": {"upload_id": (None, own_upload)}}),
            ("POST", f"{CUT_OUT}?async=true", {"files": {"upload_id": (None, own_upload)}}),
            ("POST", VECTORIZE, {"json": {"upload_id": own_upload}}),
            ("POST", GENERATE, {"json": {"style_id": str(uuid.uuid4()), "upload_id": own_upload}}),
        ]
        for headers in (
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer pk_" + "x" * 40},
            {"Authorization": "Bearer " + "a" * 10_000},
            {"Authorization": "Bearer a.b.c", "Idempotency-Key": "k"},
        ):
            for method, url, extra in calls:
                response = await world.client.request(method, url, headers=headers, **extra)
                refused(response, 401, context=(headers.get("Authorization", "")[:20], method, url))
        assert await world.snapshot(user) == before


class TestPatch:
    @fuzz(25)
    @given(
        body=st.one_of(
            json_object(
                {
                    "is_favourite": JSON_VALUES,
                    "description": st.one_of(TEXT, st.text(min_size=490, max_size=520), JSON_VALUES),
                }
            ),
            JSON_VALUES,
        ),
        target=st.sampled_from(["upload", "job"]),
    )
    async def test_fuzzed_bodies(
        self,
        world: World,
        user: User,
        auth: dict[str, str],
        own_upload: str,
        own_job: str,
        body: Any,
        target: str,
    ) -> None:
        url = f"{GALLERY}/{own_upload if target == 'upload' else own_job}"
        before = await world.snapshot(user)
        response = await world.client.patch(url, headers=auth, json=body)
        if checked(response, body) is not None:
            assert response.status_code in (400, 422), response.text
            assert await world.snapshot(user) == before
            return
        assert response.status_code == 200
        item = (await world.client.get(url, headers=auth)).json()
        assert item == {**response.json(), "outputs": item["outputs"]}  # signed URLs are minted anew
        if isinstance(body.get("description"), str):
            assert item["description"] == body["description"]

    async def test_bad_bodies_change_nothing(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, own_job: str
    ) -> None:
        cases = [
            (b"", "application/json"),
            (b"{", "application/json"),
            (b"null", "application/json"),
            (b"[]", "application/json"),
            (b'"x"', "application/json"),
            (b"12", "application/json"),
            (b'{"is_favourite": null}', "application/json"),
            (b'{"is_favourite": 2}', "application/json"),
            (b'{"is_favourite": [true]}', "application/json"),
            (b'{"is_favourite": {"a": 1}}', "application/json"),
            (b'{"description": 5}', "application/json"),
            (b'{"description": ["a"]}', "application/json"),
            (b'{"description": "' + b"x" * 501 + b'"}', "application/json"),
            (b'{"description": "a\\u0000b"}', "application/json"),
            (b'{"description": "\xff\xfe"}', "application/json"),
            (b'{"is_favourite": 1' + b"0" * 5000 + b"}", "application/json"),
            (b'{"description": "x"}', "text/plain"),
            (b"is_favourite=true", "application/x-www-form-urlencoded"),
            (b'{"is_favourite": true}', "application/xml"),
            (b"[" * 5000 + b"]" * 5000, "application/json"),
            (b'{"a": ' * 2000 + b"1" + b"}" * 2000, "application/json"),
        ]
        for item in (own_upload, own_job):
            before = await world.snapshot(user)
            for content, content_type in cases:
                response = await world.client.patch(
                    f"{GALLERY}/{item}", headers={**auth, "Content-Type": content_type}, content=content
                )
                refused(response, 400, 415, 422, context=content[:60])
            assert await world.snapshot(user) == before

    async def test_edge_values_that_are_accepted(
        self, world: World, auth: dict[str, str], own_upload: str, own_job: str
    ) -> None:
        for item in (own_upload, own_job):
            url = f"{GALLERY}/{item}"
            for body, expected in (
                ({"description": "\U0001f600" * 500}, "\U0001f600" * 500),  # 500 four-byte characters
                ({"description": "e\u0301" * 250}, "e\u0301" * 250),
                ({"description": "\u202etxt.exe \t\r\n "}, "\u202etxt.exe \t\r\n "),
                ({"description": None}, None),
                ({"description": ""}, ""),
            ):
                response = await world.client.patch(url, headers=auth, json=body)
                assert response.status_code == 200, response.text
                assert response.json()["description"] == expected
            # Unknown fields are ignored (pydantic's default), not refused: nothing else changes.
            response = await world.client.patch(
                url, headers=auth, json={"id": str(uuid.uuid4()), "credits": 99}
            )
            assert (response.status_code, response.json()["id"], response.json()["credits"]) == (200, item, 0)

    @pytest.mark.parametrize("literal", [b"NaN", b"-Infinity", b"1e400"])
    async def test_non_finite_number_is_422(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, literal: bytes
    ) -> None:
        """Regression: the 422 body echoed the float input, which Starlette's JSONResponse refuses to
        render (allow_nan=False): a 500 (app/errors.py `_jsonable`)."""
        before = await world.snapshot(user)
        response = await world.client.patch(
            f"{GALLERY}/{own_upload}",
            headers={**auth, **JSON_TYPE},
            content=b'{"is_favourite": ' + literal + b"}",
        )
        refused(response, 422)
        assert await world.snapshot(user) == before

    async def test_lone_surrogate_is_422(
        self, world: World, user: User, auth: dict[str, str], own_upload: str
    ) -> None:
        """Regression: a lone UTF-16 surrogate escape in a JSON string was echoed in the 422 body, which
        cannot be encoded as UTF-8: a 500 (app/errors.py `_jsonable`)."""
        before = await world.snapshot(user)
        response = await world.client.patch(
            f"{GALLERY}/{own_upload}", headers={**auth, **JSON_TYPE}, content=b'{"description": "\\ud800"}'
        )
        refused(response, 400, 422)
        assert await world.snapshot(user) == before


# --- uploads ------------------------------------------------------------------------------------------------


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestUploads:
    @fuzz(20)
    @given(
        data=FILE_BYTES,
        name=TEXT,
        content_type=st.sampled_from(
            ["image/png", "image/jpeg", "application/pdf", "", "text/html; charset=x"]
        ),
    )
    async def test_fuzzed_files_are_refused_cleanly(
        self, world: World, user: User, auth: dict[str, str], data: bytes, name: str, content_type: str
    ) -> None:
        before = await world.snapshot(user)
        response = await world.client.post(UPLOADS, headers=auth, files={"file": (name, data, content_type)})
        if checked(response, data[:20]) is None:
            assert response.status_code == 201
            return
        assert response.status_code in (400, 413, 415, 422), response.text
        assert await world.snapshot(user) == before

    async def test_hand_written_bad_uploads(self, world: World, user: User, auth: dict[str, str]) -> None:
        multipart = "multipart/form-data; boundary=b"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("no-body", {}),
            ("json", {"json": {"file": "iVBORw0KGgo="}}),
            ("urlencoded-field", {"data": {"file": "not a file"}}),
            ("multipart-text-field", {"files": {"file": (None, "not a file")}}),
            ("wrong-field-name", {"files": {"image": ("a.png", logo_like(16), "image/png")}}),
            ("no-boundary", {"content": b"--b\r\n", "headers": {"Content-Type": "multipart/form-data"}}),
            (
                "empty-boundary",
                {"content": b"xx", "headers": {"Content-Type": "multipart/form-data; boundary="}},
            ),
            (
                "garbage-multipart",
                {"content": b"--b\r\ngarbage\r\n\r\n", "headers": {"Content-Type": multipart}},
            ),
            (
                "part-without-name",
                {
                    "content": b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
                    "headers": {"Content-Type": multipart},
                },
            ),
            (
                "non-utf8-filename-unknown-charset",
                {
                    "content": b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xff.png"\r\n'
                    b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--b--\r\n",
                    "headers": {"Content-Type": multipart + "; charset=not-a-charset"},
                },
            ),
            ("raw-png-body", {"content": logo_like(16), "headers": {"Content-Type": "image/png"}}),
            ("empty-file", {"files": {"file": ("a.png", b"", "image/png")}}),
            ("truncated-webp", {"files": {"file": ("a.webp", webp(8, 8)[:30], "image/webp")}}),
            ("truncated-png", {"files": {"file": ("a.png", truncated_png(), "image/png")}}),
            ("pdf", {"files": {"file": ("a.png", pdf_named_png(), "image/png")}}),
            ("png-bomb", {"files": {"file": ("a.png", png_bomb(20000, 20000), "image/png")}}),
            (
                "two-bad-files",
                {
                    "files": [
                        ("file", ("a.png", b"junk", "image/png")),
                        ("file", ("b.png", b"junk2", "image/png")),
                    ]
                },
            ),
        ]
        before = await world.snapshot(user)
        for label, request_kwargs in cases:
            kwargs = dict(request_kwargs)
            headers = {**auth, **kwargs.pop("headers", {})}
            response = await world.client.post(UPLOADS, headers=headers, **kwargs)
            refused(response, 400, 413, 415, 422, context=label)
        assert await world.snapshot(user) == before

    async def test_multipart_limits_on_every_multipart_endpoint(
        self, world: World, user: User, auth: dict[str, str], own_upload: str
    ) -> None:
        """Starlette's parser limits (1000 fields, 1000 files, 1 MB per field, header sizes) answer 400
        with the house body on all three multipart endpoints, and nothing is spent."""
        upload_id = ("upload_id", (None, own_upload))
        cases: list[tuple[str, list[tuple[str, Any]] | bytes]] = [
            ("1500-fields", [(f"f{index}", (None, "x")) for index in range(1500)] + [upload_id]),
            ("1100-files", [(f"f{index}", ("a.txt", b"x", "text/plain")) for index in range(1100)]),
            ("2-MB-field", [("options", (None, "{" + " " * (2 * 1024 * 1024) + "}")), upload_id]),
            ("100-kB-field-name", [("x" * 100_000, (None, "x")), upload_id]),
            (
                "100-kB-part-header",
                b'--b\r\nContent-Disposition: form-data; name="upload_id"\r\nX-Pad: '
                + b"a" * 100_000
                + b"\r\n\r\n"
                + own_upload.encode()
                + b"\r\n--b--\r\n",
            ),
            ("gzip-encoded", b"\x1f\x8b\x08\x00garbage"),
        ]
        before = await world.snapshot(user)
        for label, parts in cases:
            for url in (UPLOADS, CUT_OUT, f"{CUT_OUT}?async=true", VECTORIZE):
                if isinstance(parts, bytes):
                    headers = {**auth, "Content-Type": "multipart/form-data; boundary=b"}
                    if label == "gzip-encoded":
                        headers["Content-Encoding"] = "gzip"
                    response = await world.client.post(url, headers=headers, content=parts)
                else:
                    response = await world.client.post(url, headers=auth, files=parts)
                refused(response, 400, 413, 422, context=(label, url))
        assert await world.snapshot(user) == before

    async def test_odd_but_valid_images_are_accepted(self, world: World, auth: dict[str, str]) -> None:
        def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
            out = io.BytesIO()
            image.save(out, image_format, **options)
            return out.getvalue()

        for label, data in (
            ("1x1", encode(Image.new("RGB", (1, 1), "red"), "PNG")),
            ("1-bit", encode(Image.new("1", (9, 3), 1), "PNG")),
            ("grey+alpha", encode(Image.new("LA", (4, 4), (3, 4)), "PNG")),
            ("cmyk-jpeg", encode(Image.new("CMYK", (8, 8), (1, 2, 3, 4)), "JPEG")),
            ("grey-progressive-rotated-jpeg", jpeg(32, 24, mode="L", progressive=True, orientation=8)),
            ("lossless-webp", webp(16, 16, lossless=True)),
        ):
            response = await world.client.post(
                UPLOADS, headers=auth, files={"file": ("x.gif", data, "text/plain")}
            )
            assert response.status_code == 201, (label, response.text)

    async def test_a_jpeg_with_an_mpf_segment_is_accepted(self, world: World, auth: dict[str, str]) -> None:
        """Regression: a JPEG carrying an MPF (multi-picture) segment, as phone cameras write, is opened
        by Pillow as format 'MPO' and was refused 415 (app/services/uploads.py `clean_image`)."""
        with Image.open(io.BytesIO(jpeg(64, 48))) as first:
            primary = first.copy()
        out = io.BytesIO()
        primary.save(out, "MPO", save_all=True, append_images=[primary.resize((32, 24))])
        data = out.getvalue()
        assert data.startswith(b"\xff\xd8\xff")
        response = await world.client.post(
            UPLOADS, headers=auth, files={"file": ("phone.jpg", data, "image/jpeg")}
        )
        assert response.status_code == 201, response.text
        assert response.json()["content_type"] == "image/jpeg"


# --- background removal -------------------------------------------------------------------------------------


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestRemoveBackground:
    @fuzz(20)
    @given(
        upload_id=st.none() | PLACEHOLDERS | TEXT,
        run_async=st.none() | st.sampled_from(["true", "false", "1", "0", "", "maybe", "TRUE"]),
        data=st.none() | FILE_BYTES,
    )
    async def test_fuzzed_forms(
        self,
        world: World,
        user: User,
        auth: dict[str, str],
        names: dict[str, str],
        upload_id: str | None,
        run_async: str | None,
        data: bytes | None,
    ) -> None:
        chosen = resolve(upload_id, names)
        files: dict[str, Any] = {"padding": (None, "x")}  # always multipart, even without a field
        if chosen is not None:
            files["upload_id"] = (None, chosen)
        if data is not None:
            files["file"] = ("a.png", data, "image/png")
        params = {"async": run_async} if run_async is not None else {}
        before = await world.snapshot(user)
        response = await world.client.post(CUT_OUT, headers=auth, params=params, files=files)
        if checked(response, (upload_id, run_async, data)) is not None:
            await assert_unchanged_after_refusal(world, user, before, response, (upload_id, data))
            return
        # Only the owner's own uploads (PNG, WEBP) can have got this far: one credit, for one finished job.
        assert chosen in (names["own"], names["own_webp"]), response.text
        assert data is None, response.text
        assert response.status_code in (200, 202)
        assert await world.balance(auth) == before.balance - 1

    async def test_hand_written_refusals(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str]
    ) -> None:
        multipart = "multipart/form-data; boundary=b"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("nothing", {}),
            ("json-body", {"json": {"upload_id": "own"}}),
            ("file-as-text", {"data": {"file": "not a file"}}),
            ("upload-id-as-file", {"files": {"upload_id": ("id.txt", b"x", "text/plain")}}),
            ("non-utf8-upload-id", {"files": {"upload_id": (None, b"\xff\xfe")}}),
            ("empty-upload-id", {"files": {"upload_id": (None, "")}}),
            ("another-users-upload", {"files": {"upload_id": (None, "nosy")}}),
            ("a-job-id-not-an-upload", {"files": {"upload_id": (None, "job")}}),
            ("unknown-upload", {"files": {"upload_id": (None, "random")}}),
            ("empty-file", {"files": {"file": ("a.png", b"", "image/png")}}),
            ("truncated", {"files": {"file": ("a.png", truncated_png(), "image/png")}}),
            ("pdf", {"files": {"file": ("a.pdf", pdf_named_png(), "image/png")}}),
            (
                "two-files",
                {
                    "files": [
                        ("file", ("a.png", b"junk", "image/png")),
                        ("file", ("b.png", b"more", "image/png")),
                    ]
                },
            ),
            (
                "bad-file-and-good-upload-id",
                {"files": {"file": ("a.png", b"junk", "image/png"), "upload_id": (None, "own")}},
            ),
            ("no-boundary", {"content": b"xx", "headers": {"Content-Type": "multipart/form-data"}}),
            (
                "unknown-charset",
                {
                    "content": b'--b\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
                    b"\xff\r\n--b--\r\n",
                    "headers": {"Content-Type": multipart + "; charset=no-such-charset"},
                },
            ),
            ("raw-png-body", {"content": logo_like(16), "headers": {"Content-Type": "image/png"}}),
        ]
        for query in ("", "?async=true"):
            for label, request_kwargs in cases:
                kwargs = resolve(dict(request_kwargs), names)
                headers = {**auth, **kwargs.pop("headers", {})}
                before = await world.snapshot(user)
                response = await world.client.post(f"{CUT_OUT}{query}", headers=headers, **kwargs)
                refused(response, 400, 404, 415, 422, context=(label, query))
                await assert_unchanged_after_refusal(world, user, before, response, (label, query))
        response = await world.client.post(
            f"{CUT_OUT}?async=banana", headers=auth, data={"upload_id": names["own"]}
        )
        assert refused(response, 422)["error"] == "validation_error"


# --- vectorizing --------------------------------------------------------------------------------------------

VECTOR_OPTIONS = json_object(
    {
        "colormode": st.sampled_from(["color", "binary", "COLOR", ""]) | JSON_VALUES,
        "color_precision": st.integers(min_value=-2, max_value=10) | JSON_VALUES,
        "filter_speckle": st.integers(min_value=-2, max_value=130) | JSON_VALUES,
        "layer_difference": st.integers(min_value=-2, max_value=260) | JSON_VALUES,
        "mode": st.sampled_from(["spline", "polygon", "none", "None"]) | JSON_VALUES,
    }
)


def cost_of(mode: Any) -> Decimal:
    return Decimal("0.2") if mode == "preview" else Decimal(1)


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestVectorize:
    @fuzz(20)
    @given(
        body=st.one_of(
            json_object(
                {
                    "upload_id": PLACEHOLDERS | TEXT | JSON_VALUES,
                    "mode": st.sampled_from(["preview", "full", "PREVIEW", ""]) | JSON_VALUES,
                    "options": VECTOR_OPTIONS | JSON_VALUES,
                }
            ),
            JSON_VALUES,
        )
    )
    async def test_fuzzed_json_bodies(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str], body: Any
    ) -> None:
        if isinstance(body, dict) and isinstance(body.get("upload_id"), str):
            body = {**body, "upload_id": names.get(body["upload_id"], body["upload_id"])}
        before = await world.snapshot(user)
        response = await world.client.post(VECTORIZE, headers=auth, json=body)
        if checked(response, body) is not None:
            await assert_unchanged_after_refusal(world, user, before, response, body)
            return
        assert body["upload_id"] == names["own"], body
        assert await world.balance(auth) == before.balance - cost_of(body.get("mode", "full"))

    @fuzz(20)
    @given(
        fields=st.dictionaries(
            st.sampled_from(["mode", "options", "upload_id"]) | SHORT_TEXT,
            st.one_of(
                TEXT,
                PLACEHOLDERS,
                st.sampled_from(["preview", "full"]),
                VECTOR_OPTIONS.map(json.dumps),
                JSON_VALUES.map(json.dumps),
            ),
            max_size=4,
        ),
        data=st.none() | FILE_BYTES | st.just(logo_like(16)),
    )
    async def test_fuzzed_multipart_forms(
        self,
        world: World,
        user: User,
        auth: dict[str, str],
        names: dict[str, str],
        fields: dict[str, str],
        data: bytes | None,
    ) -> None:
        if "upload_id" in fields:
            fields = {**fields, "upload_id": names.get(fields["upload_id"], fields["upload_id"])}
        parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields.items()]
        if data is not None:
            parts.append(("file", ("a.png", data, "image/png")))
        parts.append(("padding", (None, "x")))  # always multipart, even without a file
        before = await world.snapshot(user)
        response = await world.client.post(VECTORIZE, headers=auth, files=parts)
        if checked(response, (fields, data)) is not None:
            await assert_unchanged_after_refusal(world, user, before, response, (fields, data))
            return
        assert data == logo_like(16) or (data is None and fields.get("upload_id") == names["own"]), fields
        assert await world.balance(auth) == before.balance - cost_of(fields.get("mode") or "full")

    async def test_hand_written_bodies(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str]
    ) -> None:
        form = "application/x-www-form-urlencoded"
        cases: list[tuple[bytes, str | None]] = [
            (b"", "application/json"),
            (b"", None),
            (b"{", "application/json"),
            (b"{}", "application/json"),
            (b"{}", "text/plain"),
            (b"upload_id=x", form),
            (b'{"upload_id": "own"}', "multipart/form-data"),
            (b"--b\r\ngarbage\r\n\r\n", "multipart/form-data; boundary=b"),
            (b'{"upload_id": "\xff\xfe"}', "application/json"),
            (b'{"upload_id": "\\ud800"}', "application/json"),
            (
                b'{"upload_id": "own", "options": {"color_precision": 1' + b"0" * 5000 + b"}}",
                "application/json",
            ),
            (
                b'{"upload_id": "own", "options": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}",
                "application/json",
            ),
            (b'{"upload_id": "own", "options": ' + b"[" * 100_000 + b"}", "application/json"),
            (b'{"upload_id": "own", "options": null}', "application/json"),
            (b'{"upload_id": "own", "options": "{}"}', "application/json"),
            (b'{"upload_id": "own", "mode": null}', "application/json"),
            (
                b'{"upload_id": "own", "mode": "preview", "options": {"color_precision": 0}}',
                "application/json",
            ),
            (b'{"upload_id": "own", "options": {"layer_difference": 256}}', "application/json"),
            (b'{"upload_id": "own", "options": {"filter_speckle": -1}}', "application/json"),
            (b'{"upload_id": "own", "options": {"color_precision": 2.5}}', "application/json"),
            (b'{"upload_id": "own", "options": {"colormode": "a\\u0000"}}', "application/json"),
            (b'{"upload_id": "own_webp"}', "application/json"),
            (b'{"upload_id": "nosy"}', "application/json"),
            (b'{"upload_id": "job"}', "application/json"),
            (b'{"upload_id": "random"}', "application/json"),
            (b'{"upload_id": null}', "application/json"),
            (b"[]", "application/json"),
            (b'"own"', "application/json"),
        ]
        for content, content_type in cases:
            sent = resolve_bytes(content, names)
            headers = dict(auth) if content_type is None else {**auth, "Content-Type": content_type}
            before = await world.snapshot(user)
            response = await world.client.post(VECTORIZE, headers=headers, content=sent)
            refused(response, 400, 404, 415, 422, context=(content[:80], content_type))
            await assert_unchanged_after_refusal(world, user, before, response, content[:80])

    async def test_hand_written_multipart(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str]
    ) -> None:
        good_file = ("file", ("a.png", logo_like(16), "image/png"))
        cases: list[tuple[str, list[tuple[str, Any]]]] = [
            ("options-not-json", [("options", (None, "{")), ("upload_id", (None, "own"))]),
            ("options-a-list", [("options", (None, "[]")), ("upload_id", (None, "own"))]),
            ("options-a-string", [("options", (None, '"x"')), ("upload_id", (None, "own"))]),
            ("options-out-of-range", [("options", (None, '{"color_precision": 99}')), good_file]),
            ("options-deeply-nested", [("options", (None, "[" * 100_000)), good_file]),
            ("options-as-file", [("options", ("o.json", b"{}", "application/json")), good_file]),
            ("mode-as-file", [("mode", ("m.txt", b"preview", "text/plain")), good_file]),
            ("mode-latin1", [("mode", (None, "\xff")), good_file]),
            ("mode-not-utf8", [("mode", (None, b"\xff\xfe")), good_file]),
            ("mode-nul", [("mode", (None, "preview\x00")), good_file]),
            ("upload-id-as-file", [("upload_id", ("u.txt", b"x", "text/plain"))]),
            ("another-users-upload", [("upload_id", (None, "nosy"))]),
            ("a-job-not-an-upload", [("upload_id", (None, "job"))]),
            ("a-webp-upload", [("upload_id", (None, "own_webp"))]),
            ("empty-upload-id", [("upload_id", (None, ""))]),
            ("no-file-no-upload-id", [("mode", (None, "preview"))]),
            ("file-as-text", [("file", (None, "not a file"))]),
            ("empty-file", [("file", ("a.png", b"", "image/png"))]),
            ("webp-file", [("file", ("a.webp", webp(16, 16), "image/webp"))]),
            ("two-files-last-bad", [good_file, ("file", ("b.png", b"junk", "image/png"))]),
            ("good-file-bad-mode", [good_file, ("mode", (None, "huge"))]),
        ]
        for label, parts in cases:
            resolved = [*resolve(parts, names), ("padding", (None, "x"))]
            before = await world.snapshot(user)
            response = await world.client.post(VECTORIZE, headers=auth, files=resolved)
            refused(response, 400, 404, 413, 415, 422, context=label)
            await assert_unchanged_after_refusal(world, user, before, response, label)

    @pytest.mark.parametrize("content_type", ["Multipart/Form-Data", "MULTIPART/FORM-DATA"])
    async def test_multipart_media_type_is_case_insensitive(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, content_type: str
    ) -> None:
        body = (
            b'--bnd\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
            + own_upload.encode()
            + b'\r\n--bnd\r\nContent-Disposition: form-data; name="mode"\r\n\r\npreview\r\n--bnd--\r\n'
        )
        headers = {**auth, "Content-Type": f"{content_type}; boundary=bnd"}
        before = await world.balance(auth)
        response = await world.client.post(VECTORIZE, headers=headers, content=body)
        assert response.status_code == 200, response.text
        assert await world.balance(auth) == before - Decimal("0.2")

    @pytest.mark.parametrize("transport", ["json", "multipart"])
    async def test_non_finite_option_is_422(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, transport: str
    ) -> None:
        """Regression: NaN/Infinity in the options (pydantic's JSON parser accepts them) were echoed in
        the 422 body, which cannot be rendered as JSON: a 500."""
        before = await world.snapshot(user)
        if transport == "json":
            body = b'{"upload_id": "' + own_upload.encode() + b'", "options": {"color_precision": NaN}}'
            response = await world.client.post(VECTORIZE, headers={**auth, **JSON_TYPE}, content=body)
        else:
            form = {"upload_id": (None, own_upload), "options": (None, '{"filter_speckle": Infinity}')}
            response = await world.client.post(VECTORIZE, headers=auth, files=form)
        refused(response, 400, 422)
        assert await world.snapshot(user) == before


# --- generation ---------------------------------------------------------------------------------------------

IMAGE_URLS = st.sampled_from(
    [
        "https://images.example.com/me.png",
        "http://images.example.com/me.png",
        "file:///etc/passwd",
        "https://",
        "https://" + "a" * 2100 + ".com/",
        "https://[::1]/x",
        "https://user:pw@example.com:8443/a?b=c#d",
        "https://xn--/a",
    ]
)


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestGenerate:
    @fuzz(20)
    @given(
        body=st.one_of(
            json_object(
                {
                    "style_id": st.sampled_from(["style", "random"]) | UUID_TEXT | JSON_VALUES,
                    "upload_id": PLACEHOLDERS | JSON_VALUES,
                    "image_input_url": IMAGE_URLS | TEXT | JSON_VALUES,
                    "views": st.lists(
                        st.sampled_from(["front", "left", "right", "back", "top", "FRONT", ""]), max_size=6
                    )
                    | JSON_VALUES,
                }
            ),
            JSON_VALUES,
        )
    )
    async def test_fuzzed_bodies(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str], body: Any
    ) -> None:
        if isinstance(body, dict):
            body = {
                key: resolve(value, names) if isinstance(value, str) else value for key, value in body.items()
            }
        before = await world.snapshot(user)
        response = await world.client.post(GENERATE, headers=auth, json=body)
        if checked(response, body) is not None:
            await assert_unchanged_after_refusal(world, user, before, response, body)
            return
        assert response.status_code == 202
        assert body["style_id"] == names["style"]
        job = (await world.client.get(f"{GALLERY}/{response.json()['image_id']}", headers=auth)).json()
        assert job["status"] == "COMPLETED", job
        spent = Decimal(len(set(body.get("views", ["front"]))))
        assert Decimal(str(job["credits"])) == spent
        assert await world.balance(auth) == before.balance - spent

    async def test_hand_written_refusals(
        self, world: World, user: User, auth: dict[str, str], names: dict[str, str]
    ) -> None:
        cases: list[Any] = [
            {"style_id": "style"},
            {"style_id": "style", "upload_id": "nosy"},
            {"style_id": "style", "upload_id": "job"},
            {"style_id": "style", "upload_id": "random"},
            {"style_id": "random", "upload_id": "own"},
            {"style_id": "style", "upload_id": "own", "views": []},
            {"style_id": "style", "upload_id": "own", "views": ["front"] * 5},
            {"style_id": "style", "upload_id": "own", "views": "front"},
            {"style_id": "style", "upload_id": "own", "views": None},
            {"style_id": "style", "upload_id": "own", "views": [["front"]]},
            {"style_id": "style", "image_input_url": "http://example.com/a.png"},
            {"style_id": "style", "image_input_url": "https://example.com/\x00.png"},
            {"style_id": "style", "image_input_url": ""},
            {"style_id": "style", "image_input_url": 42},
            {"style_id": None, "upload_id": "own"},
            {"style_id": 12, "upload_id": "own"},
            {"style_id": ["style"], "upload_id": "own"},
            {"upload_id": "own"},
            [],
            None,
            "style",
        ]
        for body in cases:
            before = await world.snapshot(user)
            response = await world.client.post(GENERATE, headers=auth, json=resolve(body, names))
            refused(response, 400, 404, 422, context=body)
            await assert_unchanged_after_refusal(world, user, before, response, body)
        for content, content_type in (
            (b"", "application/json"),
            (b"{", "application/json"),
            (b'{"style_id": "' + names["style"].encode() + b'", "upload_id": "\xff"}', "application/json"),
            (b'{"views": [' + b"1" * 5000 + b"]}", "application/json"),
            (b"[" * 10_000, "application/json"),
            (b"style_id=x", "application/x-www-form-urlencoded"),
            (b'{"style_id": "x"}', "text/plain"),
        ):
            before = await world.snapshot(user)
            response = await world.client.post(
                GENERATE, headers={**auth, "Content-Type": content_type}, content=content
            )
            refused(response, 400, 415, 422, context=content[:40])
            assert await world.snapshot(user) == before

    async def test_without_replicate_it_is_503_and_free(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        world.container.replicate = None
        before = await world.snapshot(user)
        response = await world.client.post(
            GENERATE, headers=auth, json={"style_id": style_id, "upload_id": own_upload}
        )
        assert refused(response, 503)["error"] == "provider_not_configured"
        assert await world.snapshot(user) == before

    @pytest.mark.parametrize("value", [b"NaN", b"Infinity", b'"\\udc80"', b'["\\ud83d"]'])
    async def test_unrenderable_input_is_422(
        self, world: World, user: User, auth: dict[str, str], value: bytes
    ) -> None:
        """Regression: NaN or a lone surrogate escape was echoed in the 422 body, which cannot be
        rendered (allow_nan=False / not UTF-8 encodable): a 500."""
        before = await world.snapshot(user)
        response = await world.client.post(
            GENERATE, headers={**auth, **JSON_TYPE}, content=b'{"style_id": ' + value + b"}"
        )
        refused(response, 400, 422)
        assert await world.snapshot(user) == before


# --- refusals for credits and rate: nothing reserved, nothing kept ------------------------------------------


class TestRefusedSpending:
    async def test_insufficient_credits_is_402_everywhere_and_frees_the_key(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        priced = world.container.settings
        eleven = Decimal(11)
        world.container.settings = priced.model_copy(
            update={
                "remove_background_cost_credits": eleven,
                "vectorize_preview_cost_credits": eleven,
                "vectorize_full_cost_credits": eleven,
                "generate_cost_credits": eleven,
            }
        )
        inline = ("file", ("a.png", logo_like(16), "image/png"))
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("cut-out inline", CUT_OUT, {"files": [inline]}),
            ("cut-out upload", CUT_OUT, {"files": {"upload_id": (None, own_upload)}}),
            ("async cut-out inline", f"{CUT_OUT}?async=true", {"files": [inline]}),
            ("vectorize inline", VECTORIZE, {"files": [inline, ("mode", (None, "preview"))]}),
            ("vectorize upload", VECTORIZE, {"json": {"upload_id": own_upload}}),
            ("generate", GENERATE, {"json": {"style_id": style_id, "upload_id": own_upload}}),
        ]
        before = await world.snapshot(user)
        for label, url, kwargs in cases:
            for headers in (auth, {**auth, "Idempotency-Key": f"poor {label}"}):
                response = await world.client.post(url, headers=headers, **kwargs)
                body = refused(response, 402, context=label)
                assert (body["error"], body["available"]) == ("insufficient_credits", 10.0), body
                assert await world.snapshot(user) == before, label  # no reservation, no file, no claim
        world.container.settings = priced  # as if the user had bought credits meanwhile
        for label, url, kwargs in (cases[0], cases[2], cases[5]):
            response = await world.client.post(
                url, headers={**auth, "Idempotency-Key": f"poor {label}"}, **kwargs
            )
            assert response.status_code in (200, 202), (label, response.text)
            assert "idempotent-replayed" not in response.headers

    async def test_a_rate_limited_generation_is_429_with_retry_after_and_free(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        world.container.settings = world.container.settings.model_copy(
            update={"rate_limit_generate_per_user": "1/minute"}
        )
        refused(await world.client.post(GENERATE, headers=auth, json={"style_id": str(uuid.uuid4())}), 404)
        before = await world.snapshot(user)
        for headers in (auth, {**auth, "Idempotency-Key": "limited"}):
            response = await world.client.post(
                GENERATE, headers=headers, json={"style_id": style_id, "upload_id": own_upload}
            )
            assert refused(response, 429)["error"] == "rate_limited"
            assert int(response.headers["retry-after"]) >= 1
        assert await world.snapshot(user) == before


# --- styles and signed files --------------------------------------------------------------------------------


@pytest.mark.any_database
async def test_styles_ignore_junk_and_need_no_account(client: httpx.AsyncClient) -> None:
    for query in ("", "?limit=abc", "?%ff=%fe", "?" + "a=b&" * 200):
        for headers in ({}, {"Authorization": "Bearer junk"}):
            response = await client.get(f"{API}/styles{query}", headers=headers)
            assert response.status_code == 200, response.text
            assert isinstance(response.json(), list)


@pytest.mark.any_database  # refused before any query reaches the database: one database is enough
class TestSignedFiles:
    @fuzz(25)
    @given(key=TEXT, expires=QUERY_VALUES, signature=TEXT)
    async def test_fuzzed_links_are_404_or_422(
        self, world: World, own_upload: str, key: str, expires: str, signature: str
    ) -> None:
        response = await world.client.get(
            f"{API}/files/{quote(key, safe='/')}", params={"expires": expires, "signature": signature}
        )
        refused(response, 404, 422, context=(key, expires, signature))

    async def test_tampered_links(self, world: World, auth: dict[str, str], own_upload: str) -> None:
        item = (await world.client.get(f"{GALLERY}/{own_upload}", headers=auth)).json()
        url = urlsplit(item["outputs"][0]["url"])
        assert (await world.client.get(f"{url.path}?{url.query}")).status_code == 200
        expires = url.query.split("expires=")[1].split("&")[0]
        signature = url.query.split("signature=")[1].split("&")[0]
        good = f"expires={expires}&signature={signature}"
        for path, query in (
            (url.path, f"expires={int(expires) + 1}&signature={signature}"),
            (url.path, f"expires={expires}&signature={signature.upper()}"),
            (url.path, f"expires={expires}&signature={signature[:-1]}"),
            (url.path, f"expires={expires}&signature={signature}%00"),
            (url.path, f"expires={expires}.5&signature={signature}"),
            (url.path, f"expires=-{expires}&signature={signature}"),
            (url.path, f"expires={'9' * 4000}&signature={signature}"),
            (url.path, f"expires={'9' * 5000}&signature={signature}"),
            (url.path, f"expires={expires}&signature={'a' * 129}"),
            (url.path, f"expires={expires}&signature=%C3%A9"),
            (url.path, f"signature={signature}"),
            (url.path, f"expires={expires}"),
            (url.path + "/", good),
            (url.path.replace("/uploads/", "/uploads/%2e%2e/uploads/"), good),
            (url.path.replace("/users/", "/users%2F..%2F"), good),
            (url.path.replace(".png", ".PNG"), good),
            (f"{API}/files/", good),
            (f"{API}/files/%2e%2e/%2e%2e/etc/passwd", good),
        ):
            refused(await world.client.get(f"{path}?{query}"), 404, 422, context=(path, query[:60]))


# --- Idempotency-Key ----------------------------------------------------------------------------------------

KEY_BYTES = st.one_of(
    st.binary(max_size=300).filter(lambda key: b"\r" not in key and b"\n" not in key),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=260).map(lambda text: text.encode()),
    st.integers(min_value=250, max_value=260).map(lambda n: b"k" * n),
)


def same_answer(replay: httpx.Response, first: httpx.Response) -> bool:
    """A replay is the first answer, but for the signed URL, which is minted anew (a later expiry)."""
    return {**replay.json(), "url": None} == {**first.json(), "url": None}


def raw_headers(auth: Mapping[str, str], key: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", auth["Authorization"].encode()), (b"idempotency-key", key)]


class TestIdempotencyKeys:
    @fuzz(25)
    @given(key=KEY_BYTES, endpoint=st.sampled_from(["generate", "vectorize", "cut-out", "cut-out-async"]))
    async def test_fuzzed_keys_on_refused_requests_leave_no_claim(
        self,
        world: World,
        user: User,
        auth: dict[str, str],
        nosy_upload: str,
        style_id: str,
        key: bytes,
        endpoint: str,
    ) -> None:
        """Whatever the key, a request refused for its content (another user's upload) is answered 400
        (bad key) or 404, and leaves nothing behind: no claim, no job, no credits."""
        headers = raw_headers(auth, key)
        before = await world.snapshot(user)
        if endpoint == "generate":
            body = {"style_id": style_id, "upload_id": nosy_upload}
            response = await world.client.post(GENERATE, headers=headers, json=body)
        elif endpoint == "vectorize":
            response = await world.client.post(VECTORIZE, headers=headers, json={"upload_id": nosy_upload})
        else:
            query = "?async=true" if endpoint == "cut-out-async" else ""
            form = {"upload_id": (None, nosy_upload)}
            response = await world.client.post(f"{CUT_OUT}{query}", headers=headers, files=form)
        body = refused(response, 400, 404, context=key)
        decoded = key.decode("latin-1")
        valid = 0 < len(decoded) <= 255 and decoded.isprintable()
        assert body["error"] == ("not_found" if valid else "invalid_idempotency_key"), (key, body)
        assert await world.snapshot(user) == before

    async def test_key_edges_on_a_successful_request(
        self, world: World, user: User, auth: dict[str, str], own_upload: str
    ) -> None:
        body = {"upload_id": own_upload, "mode": "preview"}
        for key, accepted in (
            (b"", False),
            (b"k" * 255, True),
            (b"k" * 256, False),
            (b"k" * 300, False),
            (b" ", True),
            (b"a\tb", False),
            (b"a\x00b", False),
            (b"a\x1fb", False),
            (b"a\x7fb", False),
            (b"\x85", False),
            (b"\xa0", False),
            (b"\xff", True),
            # Header values are read as latin-1: UTF-8 "é" (C3 A9) is two printable characters, but "☃"
            # and emoji hold bytes 0x80-0x9F, C1 controls, so they are refused as not printable.
            ("caf\u00e9".encode(), True),
            (("\u00e9" * 127).encode() + b"k", True),  # 255 latin-1 characters
            (("\u00e9" * 128).encode(), False),  # 256
            ("\u2603".encode(), False),
            ("\U0001f600".encode(), False),
        ):
            before = await world.snapshot(user)
            first = await world.client.post(VECTORIZE, headers=raw_headers(auth, key), json=body)
            if not accepted:
                assert refused(first, 400, context=key)["error"] == "invalid_idempotency_key"
                assert await world.snapshot(user) == before, key
                continue
            assert first.status_code == 200, (key, first.text)
            again = await world.client.post(VECTORIZE, headers=raw_headers(auth, key), json=body)
            assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true"), key
            assert same_answer(again, first), key
            assert await world.balance(auth) == before.balance - Decimal("0.2"), key

    async def test_one_key_across_endpoints_and_bodies(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        headers = {**auth, "Idempotency-Key": "shared-key"}
        body = {"upload_id": own_upload, "mode": "preview"}
        first = await world.client.post(VECTORIZE, headers=headers, json=body)
        assert first.status_code == 200, first.text
        before = await world.snapshot(user)
        form = {"upload_id": (None, own_upload)}
        for label, url, kwargs in (
            ("other mode", VECTORIZE, {"json": {**body, "mode": "full"}}),
            ("other options", VECTORIZE, {"json": {**body, "options": {"colormode": "binary"}}}),
            ("as multipart", VECTORIZE, {"files": {**form, "mode": (None, "full")}}),
            ("cut-out", CUT_OUT, {"files": form}),
            ("async cut-out", f"{CUT_OUT}?async=true", {"files": form}),
            ("generate", GENERATE, {"json": {"style_id": style_id, "upload_id": own_upload}}),
        ):
            response = await world.client.post(url, headers=headers, **kwargs)
            assert refused(response, 409, context=label)["error"] == "idempotency_key_reused"
        assert await world.snapshot(user) == before
        # The same request again is still the first answer, even sent as multipart.
        for kwargs in ({"json": body}, {"files": {**form, "mode": (None, "preview")}}):
            replay = await world.client.post(VECTORIZE, headers=headers, **kwargs)
            assert replay.status_code == 200, replay.text
            assert same_answer(replay, first)
        assert await world.snapshot(user) == before

    async def test_a_retry_after_its_result_was_deleted_spends_nothing(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        vectorize = {"upload_id": own_upload, "mode": "preview"}
        generate = {"style_id": style_id, "upload_id": own_upload}
        for url, body in ((VECTORIZE, vectorize), (CUT_OUT, None), (GENERATE, generate)):
            headers = {**auth, "Idempotency-Key": f"deleted {url}"}
            kwargs: dict[str, Any] = {"json": body} if body else {"files": {"upload_id": (None, own_upload)}}
            first = await world.client.post(url, headers=headers, **kwargs)
            assert first.status_code in (200, 202), first.text
            image_id = first.json()["image_id"]
            assert (await world.client.delete(f"{GALLERY}/{image_id}", headers=auth)).status_code == 204
            before = await world.snapshot(user)
            again = await world.client.post(url, headers=headers, **kwargs)
            if checked(again, url) is not None:
                assert again.status_code in (404, 409, 410), again.text
            assert await world.snapshot(user) == before, url

    async def test_a_generate_key_replays_and_refuses_another_body(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, style_id: str
    ) -> None:
        headers = {**auth, "Idempotency-Key": "gen-1"}
        body = {"style_id": style_id, "upload_id": own_upload, "views": ["front", "left"]}
        first = await world.client.post(GENERATE, headers=headers, json=body)
        assert first.status_code == 202, first.text
        before = await world.snapshot(user)
        # Same JSON, other spacing and key order: the same request.
        again = await world.client.post(
            GENERATE,
            headers={**headers, **JSON_TYPE},
            content=json.dumps(dict(reversed(list(body.items()))), indent=2).encode(),
        )
        assert (again.status_code, again.json(), again.headers.get("idempotent-replayed")) == (
            202,
            first.json(),
            "true",
        )
        other = await world.client.post(GENERATE, headers=headers, json={**body, "views": ["back"]})
        assert refused(other, 409)["error"] == "idempotency_key_reused"
        assert await world.snapshot(user) == before

    async def test_a_refused_request_frees_its_key(
        self, world: World, user: User, auth: dict[str, str], own_upload: str, nosy_upload: str, style_id: str
    ) -> None:
        cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (
                VECTORIZE,
                {"json": {"upload_id": nosy_upload}},
                {"json": {"upload_id": own_upload, "mode": "preview"}},
            ),
            (
                CUT_OUT,
                {"files": {"file": ("a.png", b"junk", "image/png")}},
                {"files": {"upload_id": (None, own_upload)}},
            ),
            (
                f"{CUT_OUT}?async=true",
                {"files": {"upload_id": (None, nosy_upload)}},
                {"files": {"upload_id": (None, own_upload)}},
            ),
            (
                GENERATE,
                {"json": {"style_id": style_id, "upload_id": nosy_upload}},
                {"json": {"style_id": style_id, "upload_id": own_upload}},
            ),
        ]
        for index, (url, refused_kwargs, good_kwargs) in enumerate(cases):
            headers = {**auth, "Idempotency-Key": f"retry-{index}"}
            before = await world.snapshot(user)
            refused(await world.client.post(url, headers=headers, **refused_kwargs), 404, 415, context=url)
            assert await world.snapshot(user) == before, url
            response = await world.client.post(url, headers=headers, **good_kwargs)
            assert response.status_code in (200, 202), response.text
            assert "idempotent-replayed" not in response.headers

    async def test_another_user_with_the_same_key_gets_nothing_of_the_first(
        self,
        world: World,
        user: User,
        nosy: User,
        auth: dict[str, str],
        nosy_auth: dict[str, str],
        own_upload: str,
        nosy_upload: str,
    ) -> None:
        body = {"upload_id": own_upload, "mode": "preview"}
        first = await world.client.post(VECTORIZE, headers={**auth, "Idempotency-Key": "same"}, json=body)
        assert first.status_code == 200, first.text
        owner_before = await world.snapshot(user)
        nosy_before = await world.snapshot(nosy)
        # The same bytes from the other user: not a replay of the owner's answer, a 404 for them.
        stolen = await world.client.post(
            VECTORIZE, headers={**nosy_auth, "Idempotency-Key": "same"}, json=body
        )
        assert refused(stolen, 404)["error"] == "not_found"
        assert await world.snapshot(nosy) == nosy_before
        own = await world.client.post(
            VECTORIZE,
            headers={**nosy_auth, "Idempotency-Key": "same"},
            json={"upload_id": nosy_upload, "mode": "preview"},
        )
        assert own.status_code == 200, own.text
        assert "idempotent-replayed" not in own.headers
        assert own.json()["image_id"] != first.json()["image_id"]
        assert await world.snapshot(user) == owner_before

    async def test_keys_differing_only_in_case_accents_or_trailing_space_are_distinct(
        self, world: World, auth: dict[str, str], own_upload: str
    ) -> None:
        """Regression (MariaDB): idempotency_keys.key compared under the database's case- and
        accent-insensitive PAD SPACE collation, so 'abc', 'ABC', 'abc ' and 'ab\\xe7' were one key and a
        distinct request was refused 409 idempotency_key_reused."""
        first = await world.client.post(
            VECTORIZE, headers=raw_headers(auth, b"abc"), json={"upload_id": own_upload, "mode": "preview"}
        )
        assert first.status_code == 200, first.text
        for key in (b"ABC", b"abc ", b"ab\xe7"):
            other = await world.client.post(
                VECTORIZE, headers=raw_headers(auth, key), json={"upload_id": own_upload, "mode": "full"}
            )
            assert other.status_code == 200, (key, other.text)
            assert "idempotent-replayed" not in other.headers
