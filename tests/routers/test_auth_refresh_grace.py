"""Two tabs refreshing with one refresh token at the same moment both stay signed in (the reuse grace
window), on every database, with really committed, concurrent requests; a token presented again after
the window is reuse, and the whole family dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.models import RefreshToken, User
from app.services import auth as auth_service
from tests.support.committed import cleanup, committed_user
from tests.support.http import assert_error

REFRESH = "/api/v1/auth/refresh"
TABS = 3


@pytest.fixture
async def signed_in(
    committing: tuple[FastAPI, Database], settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, User, str]]:
    """A client of the committing app, a committed user and their refresh token (cleaned up after)."""
    app, database = committing
    user = await committed_user(database, settings)
    container = Container.build(settings, database)
    try:
        async with database.session_scope() as session:
            merged = await session.merge(user)
            pair = await auth_service.issue_session(session, container, merged)
    finally:
        await container.aclose()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, user, pair.refresh_token
    finally:
        await cleanup(engine, [user.id], [])


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def test_tabs_refreshing_at_once_all_get_a_working_session(
    signed_in: tuple[httpx.AsyncClient, User, str],
) -> None:
    client, _, token = signed_in

    answers = await asyncio.gather(*(_refresh(client, token) for _ in range(TABS)))

    assert [answer.status_code for answer in answers] == [200] * TABS, [a.text for a in answers]
    new_tokens = {answer.json()["refresh_token"] for answer in answers}
    assert len(new_tokens) == TABS  # a pair of its own for each tab, in the same family
    for answer in answers:
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
    for new_token in new_tokens:
        assert (await _refresh(client, new_token)).status_code == 200


async def test_reuse_after_the_grace_window_kills_the_family(
    signed_in: tuple[httpx.AsyncClient, User, str], engine: AsyncEngine, settings: Settings
) -> None:
    client, user, token = signed_in
    rotated = await _refresh(client, token)
    assert rotated.status_code == 200
    async with engine.begin() as connection:  # the rotation happened longer ago than the window
        await connection.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.used_at.is_not(None))
            .values(used_at=utcnow() - timedelta(seconds=settings.refresh_reuse_grace_seconds + 1))
        )

    assert_error(await _refresh(client, token), 401, "invalid_token")
    assert_error(await _refresh(client, rotated.json()["refresh_token"]), 401, "invalid_token")
