"""A job's completion that meets a transient database error (SQLite busy, a deadlock, a dropped
connection): written again, and if it never can be, the job ends released, never charged later, whatever
the recovery does afterwards. Over HTTP with the real local engines; the failure is injected into the
ledger write that records the capture (or the release)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import CreditLedgerEntry, Job, JobKind, JobStatus, Upload, User
from app.services import images as images_service
from app.services import job_submission, new_movements
from app.services import jobs as jobs_service
from app.tasks import recovery
from tests.conftest import make_settings
from tests.support.images import logo_like

BONUS = 10.0
CUT_OUT = "/api/v1/images/remove-background"
VECTORIZE = "/api/v1/images/vectorize"


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        job_retry_base_seconds=0,
    )


@pytest.fixture(autouse=True)
def _no_write_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(jobs_service.WRITE_RETRIES, "base_delay_seconds", 0)


class _PgDeadlock(Exception):
    sqlstate = "40P01"


def _sqlite_locked() -> Exception:
    return OperationalError("UPDATE credit_accounts ...", {}, sqlite3.OperationalError("database is locked"))


def _mariadb_deadlock() -> Exception:
    return OperationalError(
        "UPDATE credit_accounts ...", {}, Exception(1213, "Deadlock found when trying to get lock")
    )


def _postgres_deadlock() -> Exception:
    return DBAPIError("UPDATE credit_accounts ...", {}, _PgDeadlock("deadlock detected"))


def _connection_dropped() -> Exception:
    return DBAPIError(
        "UPDATE credit_accounts ...", {}, ConnectionResetError("connection lost"), connection_invalidated=True
    )


TRANSIENT_ERRORS = [
    pytest.param(_sqlite_locked, id="sqlite-locked"),
    pytest.param(_mariadb_deadlock, id="mariadb-deadlock"),
    pytest.param(_postgres_deadlock, id="postgres-deadlock"),
    pytest.param(_connection_dropped, id="connection-dropped"),
]

# What a client sends for each kind of waited job, and what it costs.
JOBS = [
    pytest.param(CUT_OUT, {}, 1.0, id="remove-background"),
    pytest.param(VECTORIZE, {"mode": "preview"}, 0.2, id="vectorize-preview"),
]


def failing(
    original: Callable[..., Awaitable[Any]], error: Callable[[], Exception], times: int
) -> Callable[..., Awaitable[Any]]:
    """`original`, raising `error()` on its first `times` calls (a transient failure inside the unit
    of work, which is rolled back and must be written again)."""
    calls = {"count": 0}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] <= times:
            raise error()
        return await original(*args, **kwargs)

    return flaky


async def balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get("/api/v1/users/credits", headers=auth)).json()["credits"])


async def ledger(session: AsyncSession) -> list[str]:
    session.expunge_all()
    return list(
        await session.scalars(select(CreditLedgerEntry.reason).order_by(CreditLedgerEntry.created_at))
    )


async def the_job(session: AsyncSession) -> Job:
    session.expunge_all()
    job = await session.scalar(select(Job))
    assert job is not None
    return job


def stored_job_files(settings: Settings) -> list[str]:
    root = settings.storage_dir
    return [str(path) for path in root.rglob("*") if path.is_file() and "/jobs/" in str(path)]


@pytest.mark.parametrize("error", TRANSIENT_ERRORS)
@pytest.mark.parametrize(("endpoint", "form", "cost"), JOBS)
async def test_a_completion_refused_once_is_written_again_and_charged_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    error: Callable[[], Exception],
    endpoint: str,
    form: dict[str, str],
    cost: float,
) -> None:
    monkeypatch.setattr(new_movements, "capture_held", failing(new_movements.capture_held, error, times=1))
    response = await client.post(endpoint, headers=auth, files={"file": ("a.png", logo_like(48))}, data=form)
    assert response.status_code == 200, response.text
    assert response.json()["credits"] == pytest.approx(BONUS - cost)
    assert await balance(client, auth) == pytest.approx(BONUS - cost)
    assert await ledger(session) == ["signup_bonus", "job_reserve", "job_capture"]
    job = await the_job(session)
    assert job.status == JobStatus.completed.value
    listed = (await client.get(f"/api/v1/images/{job.id}", headers=auth)).json()
    assert len(listed["outputs"]) == 1


@pytest.mark.parametrize(("endpoint", "form", "cost"), JOBS)
async def test_a_completion_never_written_is_a_503_that_charges_nothing_ever(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    container: Container,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    form: dict[str, str],
    cost: float,
) -> None:
    monkeypatch.setattr(
        new_movements, "capture_held", failing(new_movements.capture_held, _sqlite_locked, 99)
    )
    response = await client.post(endpoint, headers=auth, files={"file": ("a.png", logo_like(48))}, data=form)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable"
    assert response.json()["credits_charged"] == 0
    assert response.headers["retry-after"]
    assert await balance(client, auth) == BONUS
    assert await ledger(session) == ["signup_bonus", "job_reserve", "job_release"]
    job = await the_job(session)
    assert job.status == JobStatus.failed.value
    assert stored_job_files(settings) == []  # the result nobody was charged for is not kept

    # Later, with the database well again, the recovery finds nothing to run, and nothing is charged.
    monkeypatch.undo()
    await session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await recovery.recover(container) == []
    assert await balance(client, auth) == BONUS
    assert await ledger(session) == ["signup_bonus", "job_reserve", "job_release"]


@pytest.mark.parametrize(("endpoint", "form", "cost"), JOBS)
async def test_a_job_whose_end_cannot_be_written_at_all_is_released_by_the_recovery_not_run_again(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    form: dict[str, str],
    cost: float,
) -> None:
    """Neither the completion nor the failure can be written: the client is told 503, the job is left
    PROCESSING with its credits held, and the recovery, once the lease expired, releases them instead of
    running the job again for a client that already had its answer."""
    monkeypatch.setattr(
        new_movements, "capture_held", failing(new_movements.capture_held, _sqlite_locked, 99)
    )
    monkeypatch.setattr(
        new_movements, "release_held", failing(new_movements.release_held, _sqlite_locked, 99)
    )
    response = await client.post(endpoint, headers=auth, files={"file": ("a.png", logo_like(48))}, data=form)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable"
    assert (await the_job(session)).status == JobStatus.processing.value
    assert await balance(client, auth) == pytest.approx(BONUS - cost)  # held, not spent

    monkeypatch.undo()
    await session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await recovery.recover(container) == []  # nothing to run again
    job = await the_job(session)
    assert (job.status, job.error_code) == (JobStatus.failed.value, jobs_service.CANCELLED)
    assert await balance(client, auth) == BONUS
    assert await ledger(session) == ["signup_bonus", "job_reserve", "job_release"]


async def test_a_retry_with_the_same_key_after_the_503_runs_again_and_is_charged_once(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {**auth, "Idempotency-Key": "cut-out-1"}
    request: dict[str, Any] = {"files": {"file": ("a.png", logo_like(48))}}
    monkeypatch.setattr(
        new_movements, "capture_held", failing(new_movements.capture_held, _sqlite_locked, 99)
    )
    first = await client.post(CUT_OUT, headers=headers, **request)
    assert first.status_code == 503, first.text
    monkeypatch.undo()
    retried = await client.post(CUT_OUT, headers=headers, **request)
    assert retried.status_code == 200, retried.text
    assert retried.json()["credits"] == BONUS - 1
    again = await client.post(CUT_OUT, headers=headers, **request)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert await balance(client, auth) == BONUS - 1
    assert (await ledger(session)).count("job_capture") == 1


async def test_an_async_jobs_completion_refused_once_is_written_again(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        new_movements, "capture_held", failing(new_movements.capture_held, _postgres_deadlock, 1)
    )
    accepted = await client.post(
        f"{CUT_OUT}?async=true", headers=auth, files={"file": ("a.png", logo_like(48))}
    )
    assert accepted.status_code == 202, accepted.text
    # The ASGI transport runs the background task before returning: it is done by now.
    status = (await client.get(accepted.json()["status_url"], headers=auth)).json()
    assert status["status"] == "COMPLETED"
    assert await balance(client, auth) == BONUS - 1


async def test_a_non_transient_error_is_not_retried(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is not retried (it would fail the same way): the job ends released all the same and the
    client gets the last-resort 500."""
    calls = {"count": 0}

    async def broken(*args: Any, **kwargs: Any) -> Any:
        calls["count"] += 1
        raise ValueError("a bug")

    monkeypatch.setattr(new_movements, "capture_held", broken)
    response = await client.post(CUT_OUT, headers=auth, files={"file": ("a.png", logo_like(48))})
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "internal_error"
    assert calls["count"] == 1
    assert await balance(client, auth) == BONUS
    assert await ledger(session) == ["signup_bonus", "job_reserve", "job_release"]


async def test_the_recovery_fails_a_waited_job_and_deletes_what_its_runner_stored(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
) -> None:
    """A waited job whose runner stopped (the process died) after storing its result: once its lease
    expires the recovery releases its credits, deletes the file and does not run it again."""
    uploaded = await client.post("/api/v1/uploads", headers=auth, files={"file": ("a.png", logo_like(32))})
    upload = await session.get_one(Upload, uuid.UUID(uploaded.json()["id"]))
    job = await job_submission.submit(
        session, container, user.id, JobKind.remove_background, upload, {}, claimed=True
    )
    key = images_service.output_key(user.id, job.id, "main", "png")
    await container.storage.put(key, b"\x89PNG a result nobody received", "image/png")
    assert await balance(client, auth) == BONUS - 1

    await session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await recovery.recover(container) == []

    assert stored_job_files(settings) == []
    status = (await client.get(f"/api/v1/images/{job.id}", headers=auth)).json()
    assert (status["status"], status["error_code"]) == ("FAILED", "cancelled")
    assert await balance(client, auth) == BONUS


async def test_a_job_the_recovery_cannot_end_does_not_hold_up_the_others(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    container: Container,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server recovers at start-up: one job whose ending fails (a bug, a broken row) is logged and
    left for the next round, and the jobs after it are still failed and refunded."""
    uploaded = await client.post("/api/v1/uploads", headers=auth, files={"file": ("a.png", logo_like(32))})
    upload = await session.get_one(Upload, uuid.UUID(uploaded.json()["id"]))
    left = [
        await job_submission.submit(
            session, container, user.id, JobKind.remove_background, upload, {}, claimed=True
        )
        for _ in range(2)
    ]
    await session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await balance(client, auth) == BONUS - 2
    original = jobs_service.fail

    async def fail_but_the_first(ctx: Container, job_id: uuid.UUID, *args: Any) -> Job:
        if job_id == left[0].id:
            raise ValueError("a bug")
        return await original(ctx, job_id, *args)

    monkeypatch.setattr(jobs_service, "fail", fail_but_the_first)
    assert await recovery.recover(container) == []
    session.expunge_all()
    statuses = {job.id: job.status for job in (await session.scalars(select(Job))).all()}
    assert statuses == {left[0].id: JobStatus.processing.value, left[1].id: JobStatus.failed.value}
    assert await balance(client, auth) == BONUS - 1
