"""Routes that exist only in tests, to drive the app's cross-cutting machinery (errors, body limits,
the commit point) through real HTTP requests."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import Field
from sqlalchemy import select, text

from app.dependencies import DatabaseDep, SessionDep
from app.errors import Conflict
from app.models import User
from app.schemas.base import Schema

probe_router = APIRouter(prefix="/probe")
seen_by_background_task: dict[str, bool] = {}
# Requests held open by name until a test sets their event (the admission tests).
held_open: dict[str, asyncio.Event] = {}


class ItemIn(Schema):
    name: str = Field(max_length=10)
    quantity: int = Field(ge=1)


@probe_router.post("/items", status_code=201)
async def create_item(item: ItemIn) -> ItemIn:
    return item


@probe_router.get("/held/{name}")
async def hold_open(name: str) -> dict[str, str]:
    await held_open.setdefault(name, asyncio.Event()).wait()
    return {"released": name}


@probe_router.get("/boom")
async def boom() -> None:
    raise RuntimeError("internal detail: /srv/secret/path password=hunter2")


@probe_router.get("/conflict")
async def conflict() -> None:
    raise Conflict("That name is taken.", extra={"field": "name"})


@probe_router.post("/bytes")
async def count_bytes(request: Request) -> dict[str, int]:
    return {"received": len(await request.body())}


@probe_router.get("/db")
async def use_database(session: SessionDep) -> dict[str, int]:
    return {"one": (await session.execute(text("SELECT 1"))).scalar_one()}


@probe_router.get("/db/sleep")
async def sleep_in_database(session: SessionDep, seconds: float) -> dict[str, bool]:
    """PostgreSQL only: a statement that runs `seconds` (into the statement timeout, if shorter)."""
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": True}


@probe_router.post("/users", status_code=201)
async def create_user(
    email: str, session: SessionDep, database: DatabaseDep, background: BackgroundTasks, fail: bool = False
) -> dict[str, str]:
    user = User(email=email)
    session.add(user)
    await session.flush()
    if fail:
        raise Conflict("Failing after the write on purpose.")

    async def look_for_user(user_id: uuid.UUID) -> None:
        async with database.session_scope() as task_session:
            found = await task_session.scalar(select(User).where(User.id == user_id))
        seen_by_background_task[str(user_id)] = found is not None

    background.add_task(look_for_user, user.id)
    return {"id": str(user.id)}
