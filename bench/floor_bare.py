"""The bare floor of bench.hot_path: Starlette + raw asyncpg (+ the same python-jose decode), doing the same
statements as bench.floor_stack. Reported, not targeted.

    FLOOR_DATABASE_URL=postgresql://... SECRET_KEY=... uvicorn bench.floor_bare:app
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from jose import JWTError, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.repositories.images import GalleryJob, GalleryUpload
from app.security import LOCAL_AUDIENCE, LOCAL_ISSUER

SECRET = os.environ["SECRET_KEY"]
pool: Any = None


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["FLOOR_DATABASE_URL"], min_size=20, max_size=20)
    yield
    await pool.close()


def answer(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status, media_type="application/json")


def user_of(request: Request) -> uuid.UUID | None:
    try:
        claims = jwt.decode(
            request.headers["authorization"].removeprefix("Bearer "),
            SECRET,
            algorithms=["HS256"],
            audience=LOCAL_AUDIENCE,
            issuer=LOCAL_ISSUER,
        )
    except (JWTError, KeyError):
        return None
    return uuid.UUID(claims["sub"])


async def credits(request: Request) -> Response:
    credential = request.headers.get("authorization", "").removeprefix("Bearer ")
    async with pool.acquire() as connection:
        if credential.startswith("pk_"):
            row = await connection.fetchrow(
                "SELECT k.secret_hash, c.balance FROM api_keys k"
                " JOIN credit_accounts c ON c.user_id = k.user_id"
                " WHERE k.prefix = $1 AND k.revoked_at IS NULL",
                credential[3:].partition("_")[0],
            )
            if row is None or not hmac.compare_digest(
                row[0], hashlib.sha256(credential.encode()).hexdigest()
            ):
                return answer({"error": "invalid_token"}, 401)
            balance = row[1]
        else:
            user_id = user_of(request)
            if user_id is None:
                return answer({"error": "invalid_token"}, 401)
            balance = await connection.fetchval(
                "SELECT balance FROM credit_accounts WHERE user_id = $1", user_id
            )
    return answer({"credits": balance / 1000})


async def spend(request: Request) -> Response:
    user_id = user_of(request)
    if user_id is None:
        return answer({"error": "invalid_token"}, 401)
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            "UPDATE credit_accounts SET balance = balance - 1000 WHERE user_id = $1 AND balance >= 1000 "
            "RETURNING id, balance",
            user_id,
        )
        if row is None:
            return answer({"error": "insufficient_credits"}, 402)
        key = uuid.uuid4()
        await connection.execute(
            "INSERT INTO credit_ledger (id, account_id, amount, reason, reference, idempotency_key, "
            "balance_after, created_at) VALUES ($1, $2, -1000, 'job_capture', NULL, $3, $4, now())",
            key,
            row[0],
            str(key),
            row[1],
        )
    return answer({"credits": row[1] / 1000, "charged": 1.0})


# Pixforge's gallery statements: the same columns (what a page item shows), filter and order.
JOB_COLUMNS = ", ".join(GalleryJob.__slots__)
UPLOAD_COLUMNS = ", ".join(GalleryUpload.__slots__)


async def images(request: Request) -> Response:
    user_id = user_of(request)
    if user_id is None:
        return answer({"error": "invalid_token"}, 401)
    limit = int(request.query_params.get("limit", "20"))
    async with pool.acquire() as connection:
        jobs = await connection.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = $1 "  # noqa: S608 - our own column names
            "ORDER BY created_at DESC, id DESC LIMIT $2",
            user_id,
            limit + 1,
        )
        uploads = await connection.fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE user_id = $1 AND origin = 'direct' "  # noqa: S608
            "ORDER BY created_at DESC, id DESC LIMIT $2",
            user_id,
            limit + 1,
        )
    # asyncpg hands JSON columns over as text.
    items = [
        {**row, "outputs": json.loads(row["outputs"]), "options": json.loads(row["options"])} for row in jobs
    ]
    items += [{**row, "kind": "upload", "status": "COMPLETED"} for row in uploads]
    items.sort(key=lambda item: (item["created_at"], item["id"]), reverse=True)
    return answer({"items": items[:limit]})


app = Starlette(
    routes=[
        Route("/credits", credits),
        Route("/spend", spend, methods=["POST"]),
        Route("/images", images),
    ],
    lifespan=lifespan,
)
