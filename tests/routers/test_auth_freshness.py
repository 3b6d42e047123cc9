"""What the hot path may not buy with speed: a credential that ends in one process (logout, ban, erasure)
is refused at once by every other process on the same database, and concurrent spends keep the balance
exact. Two app instances, each with its own container, stand for two server processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.models import ApiKey, CreditAccount, CreditLedgerEntry, RevokedAccessToken, User, UserRole
from app.security import LocalTokenCodec
from app.services import credentials
from app.services.credits import to_millicredits
from tests.conftest import make_settings
from tests.factories import access_token, bearer, make_api_key, make_user
from tests.support.committed import cleanup, committed_user
from tests.support.design import PALETTES, USER_CREDITS, app_client
from tests.support.http import assert_error

Credential = Literal["access_token", "api_key"]


@pytest.fixture
async def other_process(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A second app instance (its own container and caches) on the same database."""
    async with app_client(settings, database) as client:
        yield client


async def credential_of(
    kind: Credential, session: AsyncSession, container: Container, user: User
) -> dict[str, str]:
    if kind == "api_key":
        return await make_api_key(session, user)
    return bearer(container, user)


async def test_an_access_token_logged_out_in_one_process_is_refused_by_the_other(
    client: httpx.AsyncClient, other_process: httpx.AsyncClient, container: Container, user: User
) -> None:
    headers = {"Authorization": f"Bearer {access_token(container, user)}"}
    assert (await other_process.get(USER_CREDITS, headers=headers)).status_code == 200

    assert (await client.post("/api/v1/auth/logout", headers=headers, json={})).status_code == 204

    assert_error(await other_process.get(USER_CREDITS, headers=headers), 401, "invalid_token")
    assert_error(await client.get(USER_CREDITS, headers=headers), 401, "invalid_token")


@pytest.mark.parametrize("kind", ["access_token", "api_key"])
async def test_a_banned_users_credential_is_refused_by_every_process(
    client: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    kind: Credential,
) -> None:
    headers = await credential_of(kind, session, container, user)
    admin = await make_user(session, settings, role=UserRole.admin.value)
    assert (await other_process.get(USER_CREDITS, headers=headers)).status_code == 200

    banned = await client.post(
        f"/api/v1/admin/users/{user.id}/ban", headers=bearer(container, admin), json={}
    )
    assert banned.status_code == 200, banned.text

    assert_error(await other_process.get(USER_CREDITS, headers=headers), 401, "invalid_token")


@pytest.mark.parametrize("kind", ["access_token", "api_key"])
async def test_an_erased_users_credential_is_refused_by_every_process(
    client: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    session: AsyncSession,
    container: Container,
    user: User,
    kind: Credential,
) -> None:
    headers = await credential_of(kind, session, container, user)
    assert (await other_process.get(USER_CREDITS, headers=headers)).status_code == 200

    assert (await client.delete("/api/v1/users/me", headers=headers)).status_code == 204

    assert_error(await other_process.get(USER_CREDITS, headers=headers), 401, "invalid_token")


# What another process's write looks like from here: statements this process's ORM never flushed.
async def end_elsewhere(
    session: AsyncSession, how: str, user: User, container: Container, token: str
) -> None:
    if how == "logout":
        claims = container.tokens.decode(token, "access")
        await session.execute(insert(RevokedAccessToken).values(jti=claims.jti, expires_at=claims.expires_at))
    elif how == "ban":
        await session.execute(update(User).where(User.id == user.id).values(is_active=False))
    else:
        await session.execute(update(User).where(User.id == user.id).values(erased_at=utcnow()))


@pytest.mark.parametrize("how", ["logout", "ban", "erasure"])
async def test_a_credential_ended_by_another_process_is_refused_once_the_cache_window_is_over(
    session: AsyncSession, settings: Settings, database: Database, container: Container, user: User, how: str
) -> None:
    """This process trusts a credential it verified for AUTH_CACHE_SECONDS at most (1 s by default, the
    promise); a revocation it did not write itself is seen once that window is over."""
    window = 0.3
    token = access_token(container, user)
    headers = {"Authorization": f"Bearer {token}"}
    async with app_client(settings.model_copy(update={"auth_cache_seconds": window}), database) as here:
        assert (await here.get(USER_CREDITS, headers=headers)).status_code == 200

        await end_elsewhere(session, how, user, container, token)
        await asyncio.sleep(window)

        assert_error(await here.get(USER_CREDITS, headers=headers), 401, "invalid_token")


async def test_an_api_key_revoked_by_another_process_is_refused_once_the_cache_window_is_over(
    session: AsyncSession, settings: Settings, database: Database, user: User
) -> None:
    window = 0.3
    headers = await make_api_key(session, user)
    async with app_client(settings.model_copy(update={"auth_cache_seconds": window}), database) as here:
        assert (await here.get(USER_CREDITS, headers=headers)).status_code == 200

        await session.execute(update(ApiKey).where(ApiKey.user_id == user.id).values(revoked_at=utcnow()))
        await asyncio.sleep(window)

        assert_error(await here.get(USER_CREDITS, headers=headers), 401, "invalid_token")


def test_the_cache_window_cannot_be_set_past_one_second() -> None:
    with pytest.raises(ValidationError):
        make_settings(auth_cache_seconds=1.5)


async def test_concurrent_spends_across_processes_leave_the_balance_exact(
    committing: tuple[FastAPI, Database], settings: Settings, engine: AsyncEngine
) -> None:
    """More palettes asked for at once, from two processes, than the balance covers: exactly as many as
    it covers are answered 200 (the rest 402), and the balance is the ledger's sum."""
    app, database = committing
    user = await committed_user(database, settings)
    price = to_millicredits(settings.palette_cost_credits)
    bonus = to_millicredits(settings.signup_bonus_credits)
    affordable = bonus // price
    headers = {
        "Authorization": f"Bearer {LocalTokenCodec.from_settings(settings).issue(user.id, 'access')[0]}"
    }
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as one,
            app_client(settings, database) as two,
        ):
            answers = await asyncio.gather(
                *(
                    (one, two)[n % 2].post(PALETTES, headers=headers, json={"base_color": "#3366ff"})
                    for n in range(affordable + 2)
                )
            )
            assert sorted(answer.status_code for answer in answers) == [200] * affordable + [402] * 2
            credits = await two.get(USER_CREDITS, headers=headers)
        assert to_millicredits(Decimal(str(credits.json()["credits"]))) == bonus - affordable * price
        async with engine.connect() as connection:
            stored = await connection.scalar(
                select(CreditAccount.balance).where(CreditAccount.user_id == user.id)
            )
            ledger = await connection.scalar(
                select(func.sum(CreditLedgerEntry.amount))
                .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
                .where(CreditAccount.user_id == user.id)
            )
        assert stored == ledger == bonus - affordable * price
    finally:
        await cleanup(engine, [user.id], [])


async def test_requests_that_carry_one_unverified_credential_at_once_verify_it_once(
    client: httpx.AsyncClient, container: Container, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a credential's cache entry runs out under load, the requests carrying it wait for one
    verification instead of each querying the database."""
    verified = 0
    authenticate = credentials.authenticate

    async def counting(*args: object, **kwargs: object) -> credentials.Principal:
        nonlocal verified
        verified += 1
        await asyncio.sleep(0.05)  # long enough for the others to arrive meanwhile
        return await authenticate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(credentials, "authenticate", counting)
    headers = bearer(container, user)
    answers = await asyncio.gather(*(client.get(USER_CREDITS, headers=headers) for _ in range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8
    assert verified == 1

    refused = await asyncio.gather(
        *(client.get(USER_CREDITS, headers={"Authorization": "Bearer not-a-token"}) for _ in range(4))
    )
    assert [answer.status_code for answer in refused] == [401] * 4
    assert verified == 5  # a failed verification is not shared: each request tries, one at a time


async def test_a_busy_credential_is_verified_again_by_one_request_before_its_entry_runs_out(
    settings: Settings, database: Database, container: Container, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past half its window, one request verifies the credential again while the others still use the
    entry: a crowd carrying one credential never finds it expired all at once."""
    verified = 0
    authenticate = credentials.authenticate

    async def counting(*args: object, **kwargs: object) -> credentials.Principal:
        nonlocal verified
        verified += 1
        return await authenticate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(credentials, "authenticate", counting)
    headers = bearer(container, user)
    async with app_client(settings.model_copy(update={"auth_cache_seconds": 0.4}), database) as here:
        assert (await here.get(USER_CREDITS, headers=headers)).status_code == 200
        assert (await here.get(USER_CREDITS, headers=headers)).status_code == 200
        assert verified == 1
        await asyncio.sleep(0.25)  # past half the window, not past the window
        answers = await asyncio.gather(*(here.get(USER_CREDITS, headers=headers) for _ in range(4)))
        assert [answer.status_code for answer in answers] == [200] * 4
        assert verified == 2
