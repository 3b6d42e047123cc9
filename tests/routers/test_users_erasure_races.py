"""`DELETE /users/me` racing the account's own jobs, over HTTP with real concurrency: every request
commits on a pooled connection of its own (the `committing` app), on each database of the run.

After the erasure answers 204 nothing of the account remains (no job, no upload, no file) and nothing
more is charged: a job either completed before the erasure (and its client got the result) or is charged
nothing; a submission after it is refused."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.storage import Storage
from app.models import (
    AuditAction,
    AuditLog,
    CreditAccount,
    CreditLedgerEntry,
    Job,
    JobKind,
    LedgerReason,
    Upload,
    User,
)
from app.services import images as images_service
from app.services import job_submission
from app.services import uploads as uploads_service
from app.services import users as users_service
from app.services.users import create_user
from tests.conftest import make_settings
from tests.support.committed import cleanup
from tests.support.images import logo_like

BONUS = 10.0
CUT_OUT = "/api/v1/images/remove-background"
ME = "/api/v1/users/me"
# Whatever may answer a cut-out racing the erasure: its result (it completed before), its job lost (it
# ran while the account was erased: charged nothing), the token refused (sent after), the account not
# found (authenticated before, submitted after).
RACING_ANSWERS = {(200, None), (502, "job_lost"), (401, None), (404, None)}
WAIT = 120  # seconds a test waits for an event before it fails instead of hanging


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        job_retry_base_seconds=0,
    )


class GatedStorage:
    """The app's storage, with hooks: `stored` is set once a job's output is written (the write itself
    then waits for `outputs_gate`), `deleting` once a deletion starts (which waits for `delete_gate`)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.stored = asyncio.Event()
        self.outputs_gate = asyncio.Event()
        self.outputs_gate.set()
        self.deleting = asyncio.Event()
        self.delete_gate = asyncio.Event()
        self.delete_gate.set()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self.inner.put(key, data, content_type)
        if "/jobs/" in key:
            self.stored.set()
            await self.outputs_gate.wait()

    async def delete(self, key: str) -> None:
        self.deleting.set()
        await self.delete_gate.wait()
        await self.inner.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Racing:
    """A committed account, a client of the committing app, and what the test needs to look at."""

    def __init__(self, app: FastAPI, container: Container, user: User, storage: GatedStorage) -> None:
        self.container = container
        self.user = user
        self.storage = storage
        self.headers = {"Authorization": f"Bearer {container.tokens.issue(user.id, 'access')[0]}"}
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def cut_out(self, key: str | None = None, **params: Any) -> asyncio.Task[httpx.Response]:
        files = {"file": ("a.png", logo_like(48), "image/png")}
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return asyncio.create_task(self.client.post(CUT_OUT, headers=headers, files=files, params=params))

    def erase(self) -> asyncio.Task[httpx.Response]:
        return asyncio.create_task(self.client.delete(ME, headers=self.headers))


@pytest.fixture
async def racing(
    committing: tuple[FastAPI, Database], engine: AsyncEngine, settings: Settings
) -> AsyncIterator[Racing]:
    app, database = committing
    container: Container = app.state.container
    storage = GatedStorage(container.storage)
    container.storage = storage
    async with database.session_scope() as session:
        user = await create_user(
            session, settings, email=f"race-{uuid.uuid4().hex[:8]}@example.com", email_verified_at=utcnow()
        )
    racing = Racing(app, container, user, storage)
    try:
        yield racing
    finally:
        storage.outputs_gate.set()
        storage.delete_gate.set()
        await racing.client.aclose()
        await _cleanup(engine, user.id)


async def _cleanup(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    await cleanup(engine, [user_id], [])


def answer(response: httpx.Response) -> tuple[int, str | None]:
    reason = response.json().get("reason") if response.status_code == 502 else None
    return response.status_code, reason


async def what_remains(engine: AsyncEngine, settings: Settings, user_id: uuid.UUID) -> dict[str, Any]:
    """What the database and the storage still hold of the account, as one comparable dict."""
    account = select(CreditAccount.id).where(CreditAccount.user_id == user_id).scalar_subquery()
    async with engine.connect() as connection:
        jobs = await connection.scalar(select(func.count()).select_from(Job).where(Job.user_id == user_id))
        uploads = await connection.scalar(
            select(func.count()).select_from(Upload).where(Upload.user_id == user_id)
        )
        balance, reserved = (
            await connection.execute(
                select(CreditAccount.balance, CreditAccount.reserved).where(CreditAccount.user_id == user_id)
            )
        ).one()
        reasons = list(
            await connection.scalars(
                select(CreditLedgerEntry.reason).where(CreditLedgerEntry.account_id == account)
            )
        )
        ledger_sum = await connection.scalar(
            select(func.coalesce(func.sum(CreditLedgerEntry.amount), 0)).where(
                CreditLedgerEntry.account_id == account
            )
        )
    folder = Path(settings.storage_dir) / "users" / str(user_id)
    files = sorted(str(path) for path in folder.rglob("*") if path.is_file()) if folder.exists() else []
    return {
        "jobs": jobs,
        "uploads": uploads,
        "files": files,
        "balance": balance,
        "reserved": reserved,
        "ledger_sum": ledger_sum,
        "reserves": reasons.count(LedgerReason.job_reserve.value),
        "captures": reasons.count(LedgerReason.job_capture.value),
        "releases": reasons.count(LedgerReason.job_release.value),
    }


async def test_erasure_while_jobs_run_charges_nothing_and_deletes_their_outputs(
    racing: Racing, engine: AsyncEngine, settings: Settings
) -> None:
    """Three cut-outs; the first to store its result holds there (the file is on disk, the job not yet
    completed) while the account is erased. Every job in flight is lost and charged nothing, and the
    results they wrote are deleted with them."""
    racing.storage.outputs_gate.clear()
    cut_outs = [racing.cut_out() for _ in range(3)]
    await asyncio.wait_for(racing.storage.stored.wait(), WAIT)

    erased = await asyncio.wait_for(racing.erase(), WAIT)
    assert erased.status_code == 204, erased.text
    racing.storage.outputs_gate.set()
    answers = [answer(response) for response in await asyncio.wait_for(asyncio.gather(*cut_outs), WAIT)]

    assert (502, "job_lost") in answers
    assert set(answers) <= {(502, "job_lost"), (401, None), (404, None)}, answers
    remains = await what_remains(engine, settings, racing.user.id)
    assert remains == {
        "jobs": 0,
        "uploads": 0,
        "files": [],
        "balance": 10_000,
        "reserved": 0,
        "ledger_sum": 10_000,
        "reserves": remains["reserves"],
        "captures": 0,
        "releases": remains["reserves"],
    }
    assert remains["reserves"] >= 1
    after = await racing.client.post(
        CUT_OUT, headers=racing.headers, files={"file": ("a.png", logo_like(48), "image/png")}
    )
    assert after.status_code == 401, after.text


@pytest.mark.parametrize("run_async", [False, True], ids=["waited", "async"])
async def test_erasure_racing_eight_cut_outs_leaves_nothing_and_charges_only_what_was_delivered(
    racing: Racing, engine: AsyncEngine, settings: Settings, run_async: bool
) -> None:
    """The report's case: eight cut-outs, the erasure sent as soon as the first job is submitted."""
    params = {"async": "true"} if run_async else {}
    cut_outs = [racing.cut_out(**params) for _ in range(8)]
    await asyncio.wait_for(_first_job_submitted(engine, racing.user.id), WAIT)
    erased = await asyncio.wait_for(racing.erase(), WAIT)
    responses = await asyncio.wait_for(asyncio.gather(*cut_outs), WAIT)

    assert erased.status_code == 204, erased.text
    answers = [answer(response) for response in responses]
    accepted = {(202, None)} if run_async else {(200, None), (502, "job_lost")}
    assert set(answers) <= accepted | {(401, None), (404, None)}, answers
    delivered = answers.count((200, None))
    remains = await what_remains(engine, settings, racing.user.id)
    spent = 1000 * remains["captures"]
    assert remains == {
        "jobs": 0,
        "uploads": 0,
        "files": [],
        "balance": 10_000 - spent,
        "reserved": 0,
        "ledger_sum": 10_000 - spent,
        "reserves": remains["captures"] + remains["releases"],
        "captures": remains["captures"],
        "releases": remains["releases"],
    }
    if not run_async:
        assert remains["captures"] == delivered  # nobody charged for a result they did not get
    else:
        assert remains["captures"] <= answers.count((202, None))
    after = await racing.client.post(
        CUT_OUT, headers=racing.headers, files={"file": ("a.png", logo_like(48), "image/png")}
    )
    assert after.status_code == 401, after.text


async def _first_job_submitted(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    while True:
        async with engine.connect() as connection:
            if await connection.scalar(select(func.count()).select_from(Job).where(Job.user_id == user_id)):
                return
        await asyncio.sleep(0.01)


async def test_a_cut_out_sent_while_the_account_is_being_erased_is_refused_and_leaves_nothing(
    racing: Racing, engine: AsyncEngine, settings: Settings
) -> None:
    """The erasure holds (deleting the account's upload) while a cut-out arrives: the cut-out waits for
    it and is refused, whichever of authentication or submission it had reached."""
    uploaded = await racing.client.post(
        "/api/v1/uploads", headers=racing.headers, files={"file": ("a.png", logo_like(48), "image/png")}
    )
    assert uploaded.status_code == 201, uploaded.text
    racing.storage.delete_gate.clear()
    erasing = racing.erase()
    await asyncio.wait_for(racing.storage.deleting.wait(), WAIT)
    cut_out = racing.cut_out()
    await asyncio.sleep(0.2)  # give the cut-out time to reach the account's lock (no assert rests on it)
    racing.storage.delete_gate.set()

    erased = await asyncio.wait_for(erasing, WAIT)
    refused = await asyncio.wait_for(cut_out, WAIT)
    assert erased.status_code == 204, erased.text
    assert answer(refused) in {(401, None), (404, None)}, refused.text
    remains = await what_remains(engine, settings, racing.user.id)
    assert (remains["jobs"], remains["uploads"], remains["files"], remains["reserves"]) == (0, 0, [], 0)
    assert (remains["balance"], remains["reserved"]) == (10_000, 0)


async def test_an_async_cut_out_with_a_key_racing_the_erasure_is_no_deadlock(
    racing: Racing, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut-out has claimed its Idempotency-Key and not yet stored its input when the erasure comes.
    On MariaDB the key's insert used to hold a shared lock on the account's row (its foreign key) that
    the submission then upgraded while the erasure waited for it: a deadlock, one of them answered 503.
    The account's row is locked before the key is claimed: the erasure waits, then erases it all."""
    loop = asyncio.get_running_loop()
    reached, gate = asyncio.Event(), threading.Event()
    clean_image = uploads_service.clean_image

    def held(*args: Any, **kwargs: Any) -> Any:  # runs in a worker thread: its blocking wait is fine
        loop.call_soon_threadsafe(reached.set)
        gate.wait(WAIT)
        return clean_image(*args, **kwargs)

    monkeypatch.setattr(uploads_service, "clean_image", held)
    try:
        cut_out = racing.cut_out(key="racing-the-erasure", **{"async": "true"})
        await asyncio.wait_for(reached.wait(), WAIT)
        erasing = racing.erase()
        await asyncio.wait_for(_someone_waits_for_a_lock(engine), WAIT)
    finally:
        gate.set()
    erased, submitted = await asyncio.wait_for(asyncio.gather(erasing, cut_out), WAIT)

    assert erased.status_code == 204, erased.text
    assert submitted.status_code == 202, submitted.text
    remains = await what_remains(engine, settings, racing.user.id)
    assert (remains["jobs"], remains["uploads"], remains["files"], remains["reserved"]) == (0, 0, [], 0)
    assert remains["balance"] == remains["ledger_sum"] == 10_000 - 1000 * remains["captures"]


async def _someone_waits_for_a_lock(engine: AsyncEngine) -> None:
    """Until a session of this test's database waits for a row lock (the erasure, for the account's row;
    on MariaDB, whose lock tables do not always list such a waiter, a locking read still running, which
    here can only be waiting). SQLite queues writers in its busy handler, where nothing shows: a moment's
    pause instead."""
    queries = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        "mysql": "SELECT count(*) FROM information_schema.processlist"
        " WHERE db = DATABASE() AND command = 'Query' AND info LIKE 'SELECT %FOR UPDATE'",
    }
    query = queries.get(engine.dialect.name)
    if query is None:
        await asyncio.sleep(0.2)
        return
    while True:
        async with engine.connect() as connection:
            if await connection.scalar(text(query)):
                return
        await asyncio.sleep(0.01)


# --- without concurrency: what an unfinished job's runner left behind -------------------------------


async def test_erasure_deletes_what_a_stopped_runner_stored_and_releases_its_credits(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    user = await create_user(session, settings, email="stopped@example.com", email_verified_at=utcnow())
    headers = {"Authorization": f"Bearer {container.tokens.issue(user.id, 'access')[0]}"}
    uploaded = await client.post("/api/v1/uploads", headers=headers, files={"file": ("a.png", logo_like(32))})
    upload = await session.get_one(Upload, uuid.UUID(uploaded.json()["id"]))
    job = await job_submission.submit(
        session, container, user.id, JobKind.remove_background, upload, {}, claimed=True
    )
    key = images_service.output_key(user.id, job.id, "main", "png")
    await container.storage.put(key, b"\x89PNG result of a runner that stopped", "image/png")
    assert (settings.storage_dir / key).exists()

    assert (await client.delete(ME, headers=headers)).status_code == 204

    assert not (settings.storage_dir / key).exists()
    session.expunge_all()
    assert await session.scalar(select(func.count()).select_from(Job)) == 0
    account = await session.scalar(select(CreditAccount).where(CreditAccount.user_id == user.id))
    assert account is not None
    assert (account.balance, account.reserved) == (10_000, 0)


async def test_an_erasure_chosen_as_a_deadlock_victim_is_run_again(
    racing: Racing, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InnoDB may end the erasure to break a deadlock with a job completing meanwhile (error 1213): the
    client is answered 204 all the same, and nothing of the first attempt is left half done."""
    erase = users_service.erase
    attempts = 0

    async def deadlocked_once(session: AsyncSession, ctx: Container, user: User) -> None:
        nonlocal attempts
        attempts += 1
        await erase(session, ctx, user)
        if attempts == 1:
            raise OperationalError("SELECT ... FOR UPDATE", {}, Exception(1213, "Deadlock found"))

    monkeypatch.setattr(users_service, "erase", deadlocked_once)
    assert (await racing.erase()).status_code == 204
    assert attempts == 2
    async with AsyncSession(engine) as session:
        user = await session.get_one(User, racing.user.id)
        assert (user.email, user.is_active) == (None, False)
        deleted = select(func.count()).where(AuditLog.subject_id == user.id)
        assert await session.scalar(deleted.where(AuditLog.action == AuditAction.account_deleted.value)) == 1
    assert (await racing.client.get("/api/v1/users/me", headers=racing.headers)).status_code == 401
