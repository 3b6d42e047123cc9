"""JOB_QUEUE=redis: jobs handed to real `pixforge worker` processes survive a worker's crash and an
orderly stop; with the broker down, submits answer 503 and reserve nothing; a job whose message was lost
is sent again by the recovery. The worker-process tests run on one database (what they test is the
processes and the broker; the job's row logic is the same as inline, tested on every database)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.storage import ObjectNotFound
from app.models import Job, JobKind, JobStatus, LedgerReason, User
from app.services import job_submission, jobs
from app.services import users as users_service
from app.tasks import dispatch, recovery, runner
from tests.conftest import DATABASES, make_settings
from tests.factories import bearer
from tests.support.committed import cleanup, committed_movements, committed_user
from tests.support.databases import TestDatabase
from tests.support.http import assert_error
from tests.support.images import photo_like
from tests.support.queue_worker import QUEUE_REDIS_URL, QueueSetup, redis_reachable, running_workers
from tests.support.server import free_port

pytestmark = pytest.mark.xdist_group("job_queue")
needs_redis = pytest.mark.skipif(not redis_reachable(), reason=f"needs Redis at {QUEUE_REDIS_URL}")
# The database the worker-process tests run on: PostgreSQL when configured (production's).
QUEUE_DATABASE = next((db.id for db in DATABASES if db.id == "postgresql"), DATABASES[0].id)
VECTORIZE_FULL = {"mode": "full", "engine": {}}


@pytest.fixture
def queue_setup(test_database: TestDatabase, database_url: str, tmp_path: Path) -> QueueSetup:
    if test_database.id != QUEUE_DATABASE:
        pytest.skip(f"worker processes are tested on {QUEUE_DATABASE}")
    gate = tmp_path / "gate"
    gate.mkdir()
    # The shortest lease the settings allow: a crashed worker's job is taken over this soon.
    return QueueSetup(database_url, tmp_path / "data", gate, f"test-{uuid.uuid4().hex[:12]}", 10)


@pytest.fixture
async def queued(queue_setup: QueueSetup, engine: AsyncEngine) -> AsyncIterator[Container]:
    """The test process's side (it submits, as an API process would), on committing sessions."""
    container = Container.build(make_settings(**queue_setup.settings_values()), Database(engine))
    yield container
    await container.aclose()
    client = redis.Redis.from_url(QUEUE_REDIS_URL)
    keys = list(client.scan_iter(f"pixforge:{queue_setup.queue_name}*"))
    if keys:
        client.delete(*keys)


async def submit_committed(ctx: Container) -> tuple[User, Job, int]:
    """A vectorize job, committed and sent; with the owner's balance before it was reserved."""
    user = await committed_user(ctx.database, ctx.settings)
    balance, _ = await committed_movements(ctx.database.engine, user.id)
    async with ctx.database.session_scope() as session:
        owner = await users_service.require_user(session, user.id)
        job = await job_submission.submit(session, ctx, owner.id, JobKind.vectorize, None, VECTORIZE_FULL)
    assert ctx.job_queue is not None
    await dispatch.QueueDispatcher(ctx.job_queue).send(job.id)
    return user, job, balance


async def ended(ctx: Container, job_id: uuid.UUID, within_seconds: float = 60) -> str | None:
    deadline = time.monotonic() + within_seconds
    while (status := await jobs.status_of(ctx, job_id)) not in (JobStatus.completed, JobStatus.failed):
        if time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)
    return status


@needs_redis
async def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
    queued: Container, queue_setup: QueueSetup, engine: AsyncEngine, tmp_path: Path
) -> None:
    user, job, before = await submit_committed(queued)
    try:
        with running_workers(queue_setup, tmp_path, count=2) as workers:
            [first] = await asyncio.to_thread(queue_setup.wait_for_runs, job.id, 1, 60)
            victim = next(worker for worker in workers if worker.process.pid == os.getpgid(first))
            victim.signal_group(signal.SIGKILL)
            victim.wait(timeout=10)
            queue_setup.open_gate()
            status = await ended(queued, job.id)
            logs = "\n".join(worker.log() for worker in workers)
        assert status == JobStatus.completed, logs
        runs = queue_setup.runs_of(job.id)
        assert len(runs) == 2, runs  # run again, by the surviving worker
        assert first in runs
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        assert len(captures) == 1
        assert balance == before - job.credits_reserved
    finally:
        await cleanup(engine, [user.id], [])


@needs_redis
async def test_a_stopped_worker_finishes_its_job_before_it_exits(
    queued: Container, queue_setup: QueueSetup, engine: AsyncEngine, tmp_path: Path
) -> None:
    user, job, before = await submit_committed(queued)
    try:
        with running_workers(queue_setup, tmp_path, count=1) as [worker]:
            await asyncio.to_thread(queue_setup.wait_for_runs, job.id, 1, 60)
            worker.process.send_signal(signal.SIGTERM)  # as an orchestrator stops it: its main process
            await asyncio.sleep(1)
            assert worker.process.poll() is None, worker.log()  # draining: the job is still in flight
            queue_setup.open_gate()
            exit_code = await asyncio.to_thread(worker.wait, 30)
            log = worker.log()
        assert exit_code == 0, log
        assert await jobs.status_of(queued, job.id) == JobStatus.completed, log
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        assert (len(captures), balance) == (1, before - job.credits_reserved)
    finally:
        await cleanup(engine, [user.id], [])


@needs_redis
async def test_a_job_waiting_when_a_worker_starts_runs_on_its_first_delivery(
    queued: Container, queue_setup: QueueSetup, engine: AsyncEngine, tmp_path: Path
) -> None:
    """The worker builds its collaborators before its threads take messages: a job queued before it
    started used to fail its first delivery ("collaborators are built when it boots") and wait for a
    retry (found by bench.mixed, whose workers start with a backlog)."""
    user, job, _ = await submit_committed(queued)
    queue_setup.open_gate()
    try:
        with running_workers(queue_setup, tmp_path, count=1) as [worker]:
            status = await ended(queued, job.id)
            log = worker.log()
        assert status == JobStatus.completed, log
        assert "Failed to process message" not in log, log
        assert "Retrying message" not in log, log
    finally:
        await cleanup(engine, [user.id], [])


# --- no worker process needed: on every database -----------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The broker is down: nothing listens on its port."""
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        job_queue="redis",
        job_queue_redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )


@pytest.mark.parametrize("query", ["", "?async=true"], ids=["waited", "async"])
async def test_with_the_broker_down_a_submit_is_503_and_reserves_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, user: User, query: str
) -> None:
    before = (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"]
    response = await client.post(
        f"/api/v1/images/remove-background{query}",
        headers=auth,
        files={"file": ("a.png", photo_like(32, 32), "image/png")},
    )
    body = assert_error(response, 503, "job_queue_unavailable")
    assert body["credits_charged"] == 0
    assert response.headers["Retry-After"]
    assert (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"] == before
    assert await session.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id)) == 0


class _RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def ping(self) -> None:
        return None

    def send(self, job_id: str, delay_seconds: float = 0) -> None:
        self.sent.append(job_id)

    def close(self) -> None:
        return None


async def test_the_recovery_sends_again_a_job_whose_message_was_lost(
    container: Container, session: AsyncSession, user: User
) -> None:
    queue = _RecordingQueue()
    container.job_queue = queue
    job = await job_submission.submit(session, container, user.id, JobKind.vectorize, None, VECTORIZE_FULL)
    await session.flush()  # the recovery reads on the same connection
    stale = utcnow() - timedelta(seconds=container.settings.job_lease_seconds + 1)
    await session.execute(update(Job).where(Job.id == job.id).values(created_at=stale))
    await session.flush()
    await recovery.recover_jobs(container)
    assert queue.sent == [str(job.id)]
    assert await jobs.status_of(container, job.id) == JobStatus.pending  # still the worker's to run


class _InProcessQueue:
    """A broker whose worker is this event loop (`runner.run_delivered`, as a worker process runs it),
    or nobody when `workers` is False."""

    def __init__(self, ctx: Container, *, workers: bool = True) -> None:
        self.ctx = ctx
        self.workers = workers
        self.loop = asyncio.get_running_loop()
        self.runs: list[concurrent.futures.Future[None]] = []

    def ping(self) -> None:
        return None

    def send(self, job_id: str, delay_seconds: float = 0) -> None:
        if self.workers:  # called in a thread, as the real broker is
            run = runner.run_delivered(self.ctx, uuid.UUID(job_id))
            self.runs.append(asyncio.run_coroutine_threadsafe(run, self.loop))

    def close(self) -> None:
        return None


async def waited_cut_out(app: FastAPI, container: Container, user: User) -> httpx.Response:
    """A synchronous background removal, as a client sends it."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(
            "/api/v1/images/remove-background",
            headers=bearer(container, user),
            files={"file": ("a.png", photo_like(32, 32), "image/png")},
        )


@pytest.mark.parametrize("workers", [True, False], ids=["run", "nobody-runs-it"])
async def test_a_waited_cut_out_is_answered_from_the_queue_or_cancelled_uncharged(
    committing: tuple[FastAPI, Database], settings: Settings, engine: AsyncEngine, workers: bool
) -> None:
    app, database = committing
    container: Container = app.state.container
    container.job_queue = _InProcessQueue(container, workers=workers)
    # Long enough for the local model's first run; nobody runs it otherwise, so the wait ends soon.
    wait = 60 if workers else 0.3
    container.settings = container.settings.model_copy(update={"job_wait_timeout_seconds": wait})
    user = await committed_user(database, settings)
    before, _ = await committed_movements(engine, user.id)
    try:
        response = await waited_cut_out(app, container, user)
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        async with database.session_scope() as session:
            [job] = (await session.scalars(select(Job).where(Job.user_id == user.id))).all()
        if workers:
            assert response.status_code == 200, response.text
            assert base64.b64decode(response.json()["image_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
            assert (len(captures), balance) == (1, before - job.credits_reserved)
        else:
            assert_error(response, 503, "job_timeout")
            assert (captures, balance) == ([], before)
            assert (job.status, job.error_code) == (JobStatus.failed, jobs.CANCELLED)
    finally:
        await cleanup(engine, [user.id], [])


async def test_a_waited_cut_out_outlives_a_database_that_stops_answering_its_polls(
    committing: tuple[FastAPI, Database],
    settings: Settings,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 503 on the first poll the database refuses could not cancel the job (the database is down), and
    the worker would charge it once the database is back: the waiter keeps polling until its deadline."""
    app, database = committing
    container: Container = app.state.container
    container.job_queue = _InProcessQueue(container)
    container.settings = container.settings.model_copy(update={"job_wait_timeout_seconds": 60})
    polls = {"refused": 0}
    status_of = jobs.status_of

    async def refused_three_times(ctx: Container, job_id: uuid.UUID) -> str | None:
        if polls["refused"] < 3:
            polls["refused"] += 1
            raise ConnectionRefusedError("the database is restarting")
        return await status_of(ctx, job_id)

    monkeypatch.setattr(jobs, "status_of", refused_three_times)
    user = await committed_user(database, settings)
    before, _ = await committed_movements(engine, user.id)
    try:
        response = await waited_cut_out(app, container, user)
        assert response.status_code == 200, response.text
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        async with database.session_scope() as session:
            [job] = (await session.scalars(select(Job).where(Job.user_id == user.id))).all()
        assert polls["refused"] == 3
        assert (len(captures), balance) == (1, before - job.credits_reserved)
    finally:
        await cleanup(engine, [user.id], [])


async def waited_job_past_its_wait(ctx: Container, user: User) -> tuple[Job, int]:
    """A queued job its client waited for, submitted (committed) with a wait that is over by now; with
    the owner's balance before it was reserved."""
    ctx.settings = ctx.settings.model_copy(update={"job_wait_timeout_seconds": 0.2})
    balance, _ = await committed_movements(ctx.database.engine, user.id)
    async with ctx.database.session_scope() as session:
        owner = await users_service.require_user(session, user.id)
        job = await job_submission.submit(
            session, ctx, owner.id, JobKind.vectorize, None, VECTORIZE_FULL, waited=True
        )
    await asyncio.sleep(0.3)
    return job, balance


async def test_a_waited_job_delivered_after_its_client_stopped_waiting_is_not_run_nor_charged(
    committing: tuple[FastAPI, Database], settings: Settings, engine: AsyncEngine
) -> None:
    app, database = committing
    container: Container = app.state.container
    user = await committed_user(database, settings)
    try:
        job, before = await waited_job_past_its_wait(container, user)

        await runner.run_delivered(container, job.id)

        async with database.session_scope() as session:
            ended_job = await session.get(Job, job.id)
        assert ended_job is not None
        assert (ended_job.status, ended_job.error_code, ended_job.outputs) == (
            JobStatus.failed,
            jobs.CANCELLED,
            [],
        )
        assert ended_job.time_taken_ms is None  # the engine never ran
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        assert (captures, balance) == ([], before)
    finally:
        await cleanup(engine, [user.id], [])


async def test_a_waited_job_finished_after_its_client_stopped_waiting_is_not_charged(
    committing: tuple[FastAPI, Database], settings: Settings, engine: AsyncEngine
) -> None:
    """The worker took it in time, but the result came after the wait: the client was answered without
    it (a timeout, or an outage's 503 that could not cancel it), so it is released, its files deleted."""
    app, database = committing
    container: Container = app.state.container
    user = await committed_user(database, settings)
    try:
        async with database.session_scope() as session:
            owner = await users_service.require_user(session, user.id)
            job = await job_submission.submit(
                session, container, owner.id, JobKind.vectorize, None, VECTORIZE_FULL, waited=True
            )
        claim = await jobs.claim(container, job.id)
        assert claim is not None
        assert not claim.abandoned
        before, _ = await committed_movements(engine, user.id)
        async with database.session_scope() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    options={**job.options, jobs.WAIT_UNTIL: (utcnow() - timedelta(seconds=1)).isoformat()}
                )
            )
        key = f"users/{user.id}/jobs/{job.id}/late.svg"
        await container.storage.put(key, b"<svg/>", "image/svg+xml")
        stored = [{"key": key, "content_type": "image/svg+xml", "view": "main", "size": 6}]

        ended_job = await jobs.complete(container, job.id, [], stored, 1, time.perf_counter())

        assert isinstance(ended_job, Job)
        assert (ended_job.status, ended_job.error_code) == (JobStatus.failed, jobs.CANCELLED)
        balance, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        assert captures == []
        assert balance == before + job.credits_reserved
        with pytest.raises(ObjectNotFound):
            await container.storage.get(key)
    finally:
        await cleanup(engine, [user.id], [])
