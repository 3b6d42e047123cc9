"""The stack floor of bench.hot_path: what FastAPI + SQLAlchemy async Core + python-jose + a response model
can do for Pixforge's hot path, with nothing else (no dependency chain, no ORM, no middleware). One Core
statement (or one transaction) per request, on the same tables and data as Pixforge.

    FLOOR_DATABASE_URL=postgresql+asyncpg://... SECRET_KEY=... uvicorn bench.floor_stack:app
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query
from jose import JWTError, jwt
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.repositories.images import GalleryJob, GalleryUpload
from app.security import LOCAL_AUDIENCE, LOCAL_ISSUER

SECRET = os.environ["SECRET_KEY"]
engine = create_async_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=20, max_overflow=0, pool_timeout=30)
app = FastAPI()

BALANCE_BY_USER = text("SELECT balance FROM credit_accounts WHERE user_id = :user_id")
BALANCE_BY_KEY = text(
    "SELECT k.secret_hash, c.balance FROM api_keys k JOIN credit_accounts c ON c.user_id = k.user_id "
    "WHERE k.prefix = :prefix AND k.revoked_at IS NULL"
)
SPEND = text(
    "UPDATE credit_accounts SET balance = balance - :n WHERE user_id = :user_id AND balance >= :n "
    "RETURNING id, balance"
)
LEDGER = text(
    "INSERT INTO credit_ledger (id, account_id, amount, reason, reference, idempotency_key, balance_after, "
    "created_at) VALUES (:id, :account_id, :amount, 'job_capture', NULL, :key, :after, now())"
)
# Pixforge's gallery statements: the same columns (what a page item shows), filter and order.
JOB_COLUMNS = ", ".join(GalleryJob.__slots__)
UPLOAD_COLUMNS = ", ".join(GalleryUpload.__slots__)
GALLERY = text(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = :user_id "  # noqa: S608 - our own column names
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)
UPLOADS = text(
    f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE user_id = :user_id AND origin = 'direct' "  # noqa: S608
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)


class CreditsOut(BaseModel):
    credits: float


class SpentOut(BaseModel):
    credits: float
    charged: float


class ItemOut(BaseModel):
    """The columns as read: a job's, or an upload's."""

    id: uuid.UUID
    kind: str
    status: str
    created_at: datetime
    is_favourite: bool
    description: str | None
    input_key: str | None = None
    outputs: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    credits_reserved: int = 0
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    time_taken_ms: int | None = None
    finished_at: datetime | None = None
    storage_key: str | None = None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None


class PageOut(BaseModel):
    items: list[ItemOut]


def user_of(authorization: str) -> uuid.UUID:
    try:
        claims = jwt.decode(
            authorization.removeprefix("Bearer "),
            SECRET,
            algorithms=["HS256"],
            audience=LOCAL_AUDIENCE,
            issuer=LOCAL_ISSUER,
        )
    except JWTError as exc:
        raise HTTPException(401) from exc
    return uuid.UUID(claims["sub"])


@app.get("/credits", response_model=CreditsOut)
async def credits(authorization: Annotated[str, Header()]) -> CreditsOut:
    credential = authorization.removeprefix("Bearer ")
    async with engine.connect() as connection:
        if credential.startswith("pk_"):
            prefix = credential[3:].partition("_")[0]
            row = (await connection.execute(BALANCE_BY_KEY, {"prefix": prefix})).first()
            digest = hashlib.sha256(credential.encode()).hexdigest()
            if row is None or not hmac.compare_digest(row[0], digest):
                raise HTTPException(401)
            balance = row[1]
        else:
            balance = (
                await connection.execute(BALANCE_BY_USER, {"user_id": user_of(authorization)})
            ).scalar()
    return CreditsOut(credits=balance / 1000)


@app.post("/spend", response_model=SpentOut)
async def spend(authorization: Annotated[str, Header()]) -> SpentOut:
    user_id = user_of(authorization)
    async with engine.begin() as connection:
        row = (await connection.execute(SPEND, {"n": 1000, "user_id": user_id})).first()
        if row is None:
            raise HTTPException(402)
        key = uuid.uuid4()
        await connection.execute(
            LEDGER, {"id": key, "account_id": row[0], "amount": -1000, "key": str(key), "after": row[1]}
        )
    return SpentOut(credits=row[1] / 1000, charged=1.0)


@app.get("/images", response_model=PageOut)
async def images(authorization: Annotated[str, Header()], limit: Annotated[int, Query()] = 20) -> PageOut:
    user_id = user_of(authorization)
    async with engine.connect() as connection:
        jobs = (await connection.execute(GALLERY, {"user_id": user_id, "limit": limit + 1})).all()
        uploads = (await connection.execute(UPLOADS, {"user_id": user_id, "limit": limit + 1})).all()
    items = [ItemOut(**row._mapping) for row in jobs]
    items += [ItemOut(**row._mapping, kind="upload", status="COMPLETED") for row in uploads]
    items.sort(key=lambda item: (item.created_at, item.id), reverse=True)
    return PageOut(items=items[:limit])
