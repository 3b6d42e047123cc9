"""One signup bonus per identity (OWASP API6, a sensitive business flow): erasing an account and signing
up again with the same address, Google account or Clerk user brings no second bonus."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import SignupBonusClaim, User
from app.services import credits
from app.services import users as users_service
from tests.support.accounts import sign_up
from tests.support.payments import balance

BONUS = 10_000  # millicredits: the default 10 credits


async def _erase(session: AsyncSession, container: Container, user: User) -> None:
    await users_service.erase(session, container, user)
    await session.commit()


async def test_an_address_signed_up_again_after_erasure_gets_no_second_bonus(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await sign_up(client, session, "again@example.com")
    assert await balance(client, first.headers) == BONUS
    assert (await client.delete("/api/v1/users/me", headers=first.headers)).status_code == 204

    second = await sign_up(client, session, "Again@Example.com")
    assert await balance(client, second.headers) == 0
    other = await sign_up(client, session, "someone-else@example.com")
    assert await balance(client, other.headers) == BONUS
    claims = (await session.scalars(select(SignupBonusClaim.identity_hash))).all()
    assert all("@" not in claim and len(claim) == 64 for claim in claims)  # keyed hashes, no address


@pytest.mark.parametrize("provider", ["google", "clerk"])
async def test_an_external_identity_or_its_address_back_after_erasure_gets_no_second_bonus(
    session: AsyncSession, settings: Settings, container: Container, provider: str
) -> None:
    async def arrive(external_id: str, email: str) -> User:
        user = await users_service.find_or_create_external(
            session,
            settings,
            provider=provider,  # type: ignore[arg-type]
            external_id=external_id,
            email=email,
            email_verified=True,
            name=None,
            photo_url=None,
        )
        await session.commit()
        return user

    first = await arrive("ext-1", "first@example.com")
    assert await credits.balance_of(session, first.id) == BONUS
    await _erase(session, container, first)

    same_identity = await arrive("ext-1", "new-address@example.com")
    same_address = await arrive("ext-2", "first@example.com")
    fresh = await arrive("ext-3", "fresh@example.com")
    balances = [await credits.balance_of(session, user.id) for user in (same_identity, same_address, fresh)]
    assert balances == [0, 0, BONUS]
