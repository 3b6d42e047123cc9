"""Driving the local account flows through HTTP, the way a client would."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.models import OutboxEmail, RefreshToken

PASSWORD = "correct horse battery"


@dataclass
class SignedIn:
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def last_email_to(session: AsyncSession, address: str, tag: str) -> OutboxEmail:
    session.expunge_all()
    email = await session.scalar(
        select(OutboxEmail)
        .where(OutboxEmail.recipient == address, OutboxEmail.tag == tag)
        .order_by(OutboxEmail.created_at.desc())
        .limit(1)
    )
    assert email is not None, f"no {tag} email to {address}"
    return email


def token_in(email: OutboxEmail) -> str:
    match = re.search(r"token=([A-Za-z0-9_\-]+)", email.text_body)
    assert match, email.text_body
    return match.group(1)


def code_in(email: OutboxEmail) -> str:
    """The 6-digit code of a sign-in or sign-up email."""
    match = re.search(r"^(\d{6})$", email.text_body, re.MULTILINE)
    assert match, email.text_body
    return match.group(1)


async def past_refresh_grace(session: AsyncSession, settings: Settings) -> None:
    """Every refresh token rotated so far was rotated longer ago than the reuse grace window: presenting
    one again is reuse, not two tabs refreshing at once."""
    long_ago = utcnow() - timedelta(seconds=settings.refresh_reuse_grace_seconds + 1)
    await session.execute(
        update(RefreshToken).where(RefreshToken.used_at.is_not(None)).values(used_at=long_ago)
    )
    await session.flush()


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password, "name": "Jane"}
    )


async def sign_up(
    client: httpx.AsyncClient, session: AsyncSession, email: str, password: str = PASSWORD
) -> SignedIn:
    response = await register(client, email, password)
    assert response.status_code == 201, response.text
    normalized = response.json()["email"]
    token = token_in(await last_email_to(session, normalized, "verify_email"))
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200
    return await sign_in(client, normalized, password)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> SignedIn:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return SignedIn(email, body["access_token"], body["refresh_token"])
