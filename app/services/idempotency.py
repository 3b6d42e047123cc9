"""Idempotency-Key for POSTs that create payments or spend credits: a retry with the same key and body
gets the first response back and creates nothing; the same key with another body is a 409."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.session import Database
from app.errors import BadRequest, Conflict
from app.models import IdempotencyRecord
from app.repositories.billing import IdempotencyRepository
from app.services import users as users_service


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used with a different request."


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"
    default_detail = "Idempotency-Key must be 1 to 255 printable characters."


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def fingerprint_fields(method: str, path: str, fields: Mapping[str, Any]) -> str:
    """The fingerprint of a request given by its parsed fields (a multipart body's bytes differ with
    every boundary): files are taken by their SHA-256, everything else as JSON."""
    canonical = {
        name: {"sha256": hashlib.sha256(value).hexdigest()} if isinstance(value, bytes) else value
        for name, value in fields.items()
    }
    return fingerprint(method, path, json.dumps(canonical, sort_keys=True, default=str).encode())


class RequestInProgress(Conflict):
    code = "request_in_progress"
    default_detail = "A request with this Idempotency-Key is still in progress; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


async def _find_or_claim(
    session: AsyncSession, user_id: uuid.UUID, key: str, request_fingerprint: str, ttl_seconds: int
) -> tuple[IdempotencyRecord, bool]:
    """The record under (user, key) and whether this request just claimed it.

    The claim is an insert on a unique (user, key): a concurrent request with the same key waits for the
    first one's transaction, then finds its record."""
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidIdempotencyKey()
    repository = IdempotencyRepository(session)
    now = utcnow()
    existing = await repository.find(user_id, key)
    if existing is not None and existing.expires_at <= now:
        await session.delete(existing)
        await session.flush()
        existing = None
    claimed = False
    if existing is None:
        claimed = await repository.claim(
            {
                "user_id": user_id,
                "key": key,
                "request_fingerprint": request_fingerprint,
                "expires_at": now + timedelta(seconds=ttl_seconds),
            }
        )
        existing = await repository.find(user_id, key)
        assert existing is not None
    if not claimed and existing.request_fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    return existing, claimed


async def answered(session: AsyncSession, user_id: uuid.UUID, key: str) -> bool:
    """Whether a first request under this key has answered already (a retry will be given that answer):
    for a request with costly preparations to do before it claims the key, which a retry must skip."""
    record = await IdempotencyRepository(session).find(user_id, key)
    return record is not None and record.status_code is not None and record.expires_at > utcnow()


async def begin(
    session: AsyncSession, user_id: uuid.UUID, key: str, request_fingerprint: str, ttl_seconds: int
) -> IdempotencyRecord | Replay:
    """Claim the key for this request in the caller's transaction (so a failed request leaves no claim),
    or return the response already stored under it.

    The user's row is locked first, as erasure and every submission lock it: the record's insert would
    otherwise hold a shared lock on that row (InnoDB's foreign key check) that the submission then asks
    to upgrade, a deadlock with an erasure waiting in between."""
    await users_service.lock_open(session, user_id)
    record, claimed = await _find_or_claim(session, user_id, key, request_fingerprint, ttl_seconds)
    if claimed:
        return record
    if record.status_code is None:
        raise RequestInProgress()
    return Replay(record.status_code, record.response_body)


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any
    replayed: bool  # the response stored under the key by the first request


async def once(
    session: AsyncSession,
    user_id: uuid.UUID,
    key: str,
    request_fingerprint: str,
    ttl_seconds: int,
    status_code: int,
    produce: Callable[[], Awaitable[Any]],
) -> Answer:
    """`produce` (the answer's JSON body) run at most once per key, in the caller's transaction: the
    answer is stored with what the request did, or neither is."""
    claimed = await begin(session, user_id, key, request_fingerprint, ttl_seconds)
    if isinstance(claimed, Replay):
        return Answer(claimed.status_code, claimed.body, replayed=True)
    body = await produce()
    await complete(claimed, status_code, body, session)
    return Answer(status_code, body, replayed=False)


# --- claims that outlive the request's transaction ------------------------------------------------------
# A request that commits work of its own before it answers (a job run while the client waits) cannot
# hold its claim in the request's transaction: the claim is committed first, linked to the job in the
# job's own transaction, and the answer is rebuilt from the job on every retry.


@dataclass(frozen=True)
class Claimed:
    record_id: uuid.UUID


@dataclass(frozen=True)
class Earlier:
    """A first request with this key exists: `job_id` once it made a job, `body` once it answered."""

    record_id: uuid.UUID
    created_at: datetime
    job_id: uuid.UUID | None
    body: dict[str, Any]


async def claim_detached(
    database: Database,
    user_id: uuid.UUID,
    key: str,
    request_fingerprint: str,
    ttl_seconds: int,
    stale_after_seconds: int,
) -> Claimed | Earlier:
    """Claim in a transaction of its own. A claim that never got to make its job within
    `stale_after_seconds` belonged to a request that died: it is taken over."""
    async with database.session_scope() as session:
        record, claimed = await _find_or_claim(session, user_id, key, request_fingerprint, ttl_seconds)
        body = dict(record.response_body or {})
        job_id = uuid.UUID(body["job_id"]) if "job_id" in body else None
        if claimed:
            return Claimed(record.id)
        earlier = Earlier(record.id, record.created_at, job_id, body)
    if job_id is None and earlier.created_at <= utcnow() - timedelta(seconds=stale_after_seconds):
        return await take_over_detached(database, earlier)
    if job_id is None:
        raise RequestInProgress()
    return earlier


async def take_over_detached(database: Database, earlier: Earlier) -> Claimed:
    """Run the request again under the same key: its first run died before answering (no job made in
    time, or its job was cancelled with the request). One of several concurrent retries wins; the
    others are told the request is in progress."""
    async with database.session_scope() as session:
        if not await IdempotencyRepository(session).take_over(
            earlier.record_id, earlier.created_at, utcnow()
        ):
            raise RequestInProgress()
    return Claimed(earlier.record_id)


async def link_job(session: AsyncSession, record_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """In the job's own transaction: from now on a retry is answered from this job."""
    record = await IdempotencyRepository(session).get(record_id)
    if record is not None:
        record.response_body = {"job_id": str(job_id)}
        await session.flush()


async def finish_detached(
    database: Database, record_id: uuid.UUID, status_code: int, body: dict[str, Any]
) -> None:
    async with database.session_scope() as session:
        record = await IdempotencyRepository(session).get(record_id)
        if record is not None:
            record.status_code = status_code
            record.response_body = {**(record.response_body or {}), **body}


async def release_detached(database: Database, record_id: uuid.UUID) -> None:
    """The request was refused before it made anything (402, a bad file): a retry may try again."""
    async with database.session_scope() as session:
        record = await IdempotencyRepository(session).get(record_id)
        if record is not None and not (record.response_body or {}).get("job_id"):
            await session.delete(record)


async def complete(record: IdempotencyRecord, status_code: int, body: Any, session: AsyncSession) -> None:
    record.status_code = status_code
    record.response_body = body
    await session.flush()
