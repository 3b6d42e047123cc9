"""Accounts under concurrent clients on every database (SQLite is what `make run` serves): sign-ups
verified the moment their email lands, while the outbox is being delivered by the requests before."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.session import Database
from app.models import OutboxEmail, User
from tests.support.accounts import PASSWORD, token_in
from tests.support.committed import cleanup

SIGN_UPS = 8


@pytest.fixture
async def client(committing: tuple[FastAPI, Database]) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = committing
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def _verification_email(engine: AsyncEngine, address: str) -> OutboxEmail:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(OutboxEmail).where(OutboxEmail.recipient == address, OutboxEmail.tag == "verify_email")
            )
        ).one()
    return OutboxEmail(text_body=row.text_body)


async def test_sign_ups_verified_at_once_all_succeed(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    addresses = [f"race-{uuid.uuid4().hex[:10]}@example.com" for _ in range(SIGN_UPS)]

    async def sign_up_and_verify(address: str) -> tuple[int, int, int]:
        registered = await client.post(
            "/api/v1/auth/register", json={"email": address, "password": PASSWORD, "name": "Race"}
        )
        token = token_in(await _verification_email(engine, address))
        verified = await client.post("/api/v1/auth/verify", json={"token": token})
        signed_in = await client.post("/api/v1/auth/login", json={"email": address, "password": PASSWORD})
        return registered.status_code, verified.status_code, signed_in.status_code

    try:
        outcomes = await asyncio.gather(*(sign_up_and_verify(address) for address in addresses))
        assert outcomes == [(201, 200, 200)] * SIGN_UPS
    finally:
        async with engine.begin() as connection:
            user_ids = list(await connection.scalars(select(User.id).where(User.email.in_(addresses))))
            await connection.execute(
                OutboxEmail.__table__.delete().where(OutboxEmail.recipient.in_(addresses))
            )
        await cleanup(engine, user_ids, [])
