"""A job's capture and a new submission of the same account, interleaved on real connections: the
submission holds the account's row (as every submission and the erasure take it first) while the capture
moves the balance and then writes its usage record, whose foreign key reads that row. Neither may
deadlock the other (PostgreSQL answered 40P01 to whichever detected it, a 500 for a request)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import Container
from app.db.session import Database
from app.models import JobKind, JobStatus, LedgerReason
from app.services import job_submission, jobs
from app.services import users as users_service
from app.services.engines import JobOutput
from tests.conftest import make_settings
from tests.support.committed import cleanup, committed_movements, committed_user

VECTORIZE_FULL = {"mode": "full", "engine": {}}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


@pytest.fixture
async def ctx(engine: AsyncEngine, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    """Collaborators on committing sessions: each unit of work has a connection of its own."""
    container = Container.build(make_settings(database_url=database_url, data_dir=tmp_path), Database(engine))
    yield container
    await container.aclose()


# MySQL/MariaDB: a foreign-key check takes a shared lock that FOR UPDATE blocks, and SQL has no weaker
# exclusive row lock there, so InnoDB may pick one as a deadlock victim (error 1213: an OperationalError,
# retried by the job's writes, answered 503 to a request). SQLite runs one writer at a time.
@pytest.mark.postgres_only
async def test_a_submission_holding_the_account_does_not_deadlock_a_capture(
    ctx: Container, engine: AsyncEngine
) -> None:
    user = await committed_user(ctx.database, ctx.settings)
    try:
        async with ctx.database.session_scope() as session:
            owner = await users_service.require_user(session, user.id)
            running = await job_submission.submit(
                session, ctx, owner.id, JobKind.vectorize, None, VECTORIZE_FULL
            )
        assert await jobs.claim(ctx, running.id) is not None
        stored = [{"key": "k.svg", "content_type": "image/svg+xml", "view": "main", "size": len(SVG)}]
        async with ctx.database.session_scope() as session:
            # If there is a deadlock, this transaction is the one that finds it (and fails).
            await session.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
            owner = await users_service.lock_open(session, user.id)
            capture = asyncio.create_task(
                jobs.complete(
                    ctx, running.id, [JobOutput(SVG, "image/svg+xml", "svg")], stored, 1, time.perf_counter()
                )
            )
            await asyncio.sleep(0.5)  # the capture runs as far as the lock lets it
            second = await job_submission.submit(
                session, ctx, owner.id, JobKind.vectorize, None, VECTORIZE_FULL
            )
        finished = await asyncio.wait_for(capture, timeout=30)
        assert isinstance(finished, jobs.FinishedJob)
        assert finished.job.status == JobStatus.completed.value
        assert await jobs.status_of(ctx, second.id) == JobStatus.pending
        _, captures = await committed_movements(engine, user.id, LedgerReason.job_capture)
        assert len(captures) == 1
    finally:
        await cleanup(engine, [user.id], [])
