"""Replaying POSTs sent with an Idempotency-Key (see services/idempotency)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.session import release_connection
from app.errors import AppError
from app.models import Job, User
from app.schemas.base import Schema
from app.services import idempotency, jobs


async def idempotent_response(
    request: Request,
    session: AsyncSession,
    user: User,
    ttl_seconds: int,
    status_code: int,
    produce: Callable[[], Awaitable[Schema]],
    fields: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """`fields`: the parsed request, for bodies whose bytes vary between retries (multipart)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return JSONResponse((await produce()).model_dump(mode="json"), status_code=status_code)
    fingerprint = (
        idempotency.fingerprint_fields(request.method, request.url.path, fields)
        if fields is not None
        else idempotency.fingerprint(request.method, request.url.path, await request.body())
    )
    claimed = await idempotency.begin(session, user, key, fingerprint, ttl_seconds)
    if isinstance(claimed, idempotency.Replay):
        return JSONResponse(
            claimed.body, status_code=claimed.status_code, headers={"Idempotent-Replayed": "true"}
        )
    body = (await produce()).model_dump(mode="json")
    await idempotency.complete(claimed, status_code, body, session)
    return JSONResponse(body, status_code=status_code)


async def idempotent_job_response(
    request: Request,
    session: AsyncSession,
    container: Container,
    user: User,
    fields: Mapping[str, Any],
    job: jobs.JobRequest,
    shape: Callable[[jobs.FinishedJob], Awaitable[Schema]],
) -> Response:
    """A job the client waits for, made at most once per Idempotency-Key. The first request links its
    job to the key; a retry is answered from that job (its stored output, the balance the first answer
    gave), or told to wait while it runs. A request refused before making a job frees the key.

    The job runs in units of work of its own: the request's session (which only read the user) gives
    its connection back first, so clients queued for an engine hold no connection the jobs need."""
    await release_connection(session)
    key = request.headers.get("idempotency-key")
    if key is None:
        return _json(await shape(await jobs.run_now(container, user.id, job)))
    settings = container.settings
    claim = await idempotency.claim_detached(
        container.database,
        user.id,
        key,
        idempotency.fingerprint_fields(request.method, request.url.path, fields),
        settings.idempotency_key_ttl_seconds,
        settings.job_lease_seconds,
    )
    if isinstance(claim, idempotency.Earlier):
        replay = await _replay(container, user, claim, shape)
        if replay is not None:
            return replay
        claim = await idempotency.take_over_detached(container.database, claim)
    record_id = claim.record_id

    async def link(session: AsyncSession, made: Job) -> None:
        await idempotency.link_job(session, record_id, made.id)

    try:
        finished = await jobs.run_now(container, user.id, job, on_submitted=link)
    except AppError as exc:
        if isinstance(exc, jobs.JobFailed):  # the job exists, failed: a retry is answered from it
            await idempotency.finish_detached(container.database, record_id, exc.status_code, {})
        else:
            await asyncio.shield(idempotency.release_detached(container.database, record_id))
        raise
    except BaseException:
        await asyncio.shield(idempotency.release_detached(container.database, record_id))
        raise
    await idempotency.finish_detached(
        container.database, record_id, 200, {"credits_millis": finished.balance}
    )
    return _json(await shape(finished))


async def _replay(
    container: Container,
    user: User,
    earlier: idempotency.Earlier,
    shape: Callable[[jobs.FinishedJob], Awaitable[Schema]],
) -> Response | None:
    """The first request's answer, rebuilt from its job; None when that job was cancelled with its
    request (the client never got an answer: the retry runs it again)."""
    assert earlier.job_id is not None
    try:
        finished = await jobs.result_of(container, user.id, earlier.job_id)
    except jobs.JobFailed as failure:
        if failure.reason == jobs.CANCELLED:
            return None
        raise
    if "credits_millis" in earlier.body:
        finished = replace(finished, balance=int(earlier.body["credits_millis"]))
    return _json(await shape(finished), headers={"Idempotent-Replayed": "true"})


def _json(body: Schema, headers: Mapping[str, str] | None = None) -> Response:
    # Serialised by pydantic-core in one pass: these answers carry a whole image (megabytes of base64 or
    # SVG), which the json module would take twice as long to encode.
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
