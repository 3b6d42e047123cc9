"""Edges of the waited-job Idempotency-Key path (app/tasks/waited.py, app/services/idempotency.py)
found in review: a first-time Clerk user's first request, two retries taking over one dead claim, a
retry of a request whose job was cancelled with it or failed for a reason that may pass."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import httpx
import pytest
import respx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.images.base import EngineError
from app.integrations.storage import StorageError
from app.models import IdempotencyRecord, Job, User
from app.repositories.billing import idempotency_key_digest
from app.services import idempotency
from app.services.users import create_user
from tests.conftest import make_settings
from tests.fakes.clerk import FakeClerk
from tests.support.committed import cleanup as cleanup_committed
from tests.support.images import photo_like

CUT_OUT = "/api/v1/images/remove-background"
BONUS = 10.0


@pytest.fixture
def fake_clerk(outside_http: respx.MockRouter) -> FakeClerk:
    return FakeClerk(outside_http)


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_clerk: FakeClerk) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        job_retry_base_seconds=0,
        clerk_issuer=fake_clerk.issuer,
        clerk_jwks_url=fake_clerk.jwks_url,
        clerk_webhook_secret=fake_clerk.svix_secret,
        clerk_authorized_parties=[fake_clerk.authorized_party],
    )


async def test_the_first_waited_cut_out_of_a_new_clerk_user_with_an_idempotency_key(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = "user_" + uuid.uuid4().hex[:24]
    headers = {
        "Authorization": f"Bearer {fake_clerk.session_token(clerk_id)}",
        "Idempotency-Key": "first-ever-request",
    }
    try:
        response = await client.post(
            CUT_OUT, headers=headers, files={"file": ("a.png", photo_like(64, 64), "image/png")}
        )
        status = response.status_code
        detail = response.text
    except Exception as exc:  # noqa: BLE001 - the ASGI transport re-raises what became a 500
        status, detail = 500, repr(exc)
    session.expire_all()
    users = await session.scalar(select(func.count()).select_from(User).where(User.clerk_id == clerk_id))
    assert (status, users) == (200, 1), detail


async def test_the_first_waited_cut_out_of_a_new_clerk_user_without_a_key(
    client: httpx.AsyncClient, fake_clerk: FakeClerk
) -> None:
    clerk_id = "user_" + uuid.uuid4().hex[:24]
    headers = {"Authorization": f"Bearer {fake_clerk.session_token(clerk_id)}"}
    response = await client.post(
        CUT_OUT, headers=headers, files={"file": ("a.png", photo_like(64, 64), "image/png")}
    )
    assert response.status_code == 200, response.text


async def test_of_two_retries_taking_over_one_dead_claim_one_wins(
    engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(engine)
    async with database.session_scope() as s:
        user = await create_user(
            s, settings, email=f"{uuid.uuid4().hex[:10]}@example.com", email_verified_at=utcnow()
        )
    fingerprint = idempotency.fingerprint_fields("POST", CUT_OUT, {"file": b"x"})
    async with database.session_scope() as s:
        s.add(
            IdempotencyRecord(
                user_id=user.id,
                key=idempotency_key_digest("dead"),
                request_fingerprint=fingerprint,
                created_at=utcnow() - timedelta(seconds=settings.job_lease_seconds + 1),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    # Both retries read the dead claim before either writes (widen the window deterministically).
    both_read = asyncio.Barrier(2)
    original = idempotency._find_or_claim

    async def find_then_wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = await original(*args, **kwargs)
        # On SQLite the window cannot open: the second transaction only begins (and reads) once the
        # first has committed, so the first waits here in vain and goes on.
        with contextlib.suppress(TimeoutError, asyncio.BrokenBarrierError):
            await asyncio.wait_for(both_read.wait(), timeout=1)
        return found

    monkeypatch.setattr(idempotency, "_find_or_claim", find_then_wait)
    try:
        outcomes = await asyncio.gather(
            *(
                idempotency.claim_detached(
                    database, user.id, "dead", fingerprint, 3600, settings.job_lease_seconds
                )
                for _ in range(2)
            ),
            return_exceptions=True,
        )
        claimed = [o for o in outcomes if isinstance(o, idempotency.Claimed)]
        assert len(claimed) == 1, outcomes
        assert [type(o).__name__ for o in outcomes if o not in claimed] == ["RequestInProgress"]
    finally:
        await cleanup_committed(engine, [user.id], [])


async def test_a_retry_of_a_request_whose_job_was_cancelled_with_it_runs_again(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    """The server stopped mid-job: the job failed as cancelled and the client never got an answer. Its
    retry must not be told `job_failed` for a day: it runs the request again under the same key."""
    user = await create_user(
        session, settings, email=f"{uuid.uuid4().hex[:10]}@example.com", email_verified_at=utcnow()
    )
    headers = {
        "Authorization": f"Bearer {container.tokens.issue(user.id, 'access')[0]}",
        "Idempotency-Key": "cut-before-shutdown",
    }
    source = {"file": ("a.png", photo_like(64, 64), "image/png")}
    first = await client.post(CUT_OUT, headers=headers, files=source)
    first_id = uuid.UUID(first.json()["image_id"])
    # As `run_now` leaves a job whose request was cancelled (its reservation released).
    await session.execute(
        update(Job).where(Job.id == first_id).values(status="FAILED", error_code="cancelled")
    )
    await session.execute(update(IdempotencyRecord).values(status_code=None))
    retried = await client.post(CUT_OUT, headers=headers, files=source)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["image_id"] != str(first_id)
    again = await client.post(CUT_OUT, headers=headers, files=source)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["image_id"] == retried.json()["image_id"]


def _break_cut_outs(
    container: Container, monkeypatch: pytest.MonkeyPatch, code: str, retryable: bool
) -> None:
    """Every cut-out fails with `code` until the test undoes it: the provider (or the storage) is down,
    or refuses the input."""
    if code == "storage_unavailable":
        store = container.storage.put

        async def put(key: str, data: bytes, content_type: str) -> None:
            if "/jobs/" in key:  # the input is stored, the job's result cannot be
                raise StorageError("disk unreachable")
            await store(key, data, content_type)

        monkeypatch.setattr(container.storage, "put", put)
        return

    async def remove_background(image: bytes) -> bytes:
        raise EngineError(code, "The provider failed.", retryable=retryable)

    monkeypatch.setattr(container.background_remover, "remove_background", remove_background)


@pytest.mark.parametrize(
    ("code", "retryable", "status"),
    [
        pytest.param("provider_timeout", True, 503, id="provider-timeout"),
        pytest.param("provider_unreachable", True, 503, id="provider-unreachable"),
        pytest.param("storage_unavailable", True, 503, id="storage-unavailable"),
    ],
)
async def test_a_retry_after_a_failure_that_may_pass_runs_again(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    retryable: bool,
    status: int,
) -> None:
    """The first answer was a 503 saying to retry: a retry under the same key runs the request again
    (it used to be told the same 503 until the key expired), and is charged once it succeeds."""
    headers = {**auth, "Idempotency-Key": f"after-{code}"}
    source = {"file": ("a.png", photo_like(64, 64), "image/png")}
    _break_cut_outs(container, monkeypatch, code, retryable)
    first = await client.post(CUT_OUT, headers=headers, files=source)
    assert (first.status_code, first.json()["reason"]) == (status, code), first.text
    monkeypatch.undo()  # the outage is over

    retried = await client.post(CUT_OUT, headers=headers, files=source)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["image_id"] != first.json()["job_id"]
    again = await client.post(CUT_OUT, headers=headers, files=source)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true")
    assert again.json() == retried.json()
    assert await _balance(client, auth) == BONUS - 1


@pytest.mark.parametrize(
    ("code", "status"),
    [
        pytest.param("invalid_image", 422, id="input-refused"),
        pytest.param("provider_out_of_credits", 502, id="provider-refused"),
    ],
)
async def test_a_retry_after_a_failure_that_will_not_pass_is_answered_again(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    status: int,
) -> None:
    headers = {**auth, "Idempotency-Key": f"after-{code}"}
    source = {"file": ("a.png", photo_like(64, 64), "image/png")}
    _break_cut_outs(container, monkeypatch, code, retryable=False)
    first = await client.post(CUT_OUT, headers=headers, files=source)
    assert (first.status_code, first.json()["reason"]) == (status, code), first.text
    monkeypatch.undo()  # it would pass now, but the same request is answered the same

    retried = await client.post(CUT_OUT, headers=headers, files=source)
    assert (retried.status_code, retried.json()["job_id"]) == (status, first.json()["job_id"])
    assert await _balance(client, auth) == BONUS


async def _balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get("/api/v1/users/credits", headers=auth)).json()["credits"])
