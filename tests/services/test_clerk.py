"""Clerk end to end: session JWTs verified against the (fake) instance's JWKS, users mirrored on first use,
and Svix-signed webhooks (idempotent, out-of-order safe, erasure-proof). The FakeClerk answers on the
`outside_http` respx router, which the app's container HTTP client goes through."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from svix.webhooks import Webhook

import app.integrations.clerk as clerk_integration
from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.clerk import InvalidClerkToken
from app.models import CreditAccount, CreditLedgerEntry, LedgerReason, User, WebhookEvent
from app.services import users as users_service
from tests.conftest import make_settings
from tests.fakes.clerk import FakeClerk

ME = "/api/v1/users/me"
CREDITS = "/api/v1/users/credits"
CREATE_UPDATE = "/api/v1/users/createupdateuser"
WEBHOOK = "/api/v1/webhooks/clerk"
WEBHOOK_ALIAS = "/api/v1/webhooks/clerkwebhook"
INVALID_TOKEN_BODY = {"error": "invalid_token", "detail": "The token is invalid or expired."}


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def fake_clerk(outside_http: respx.MockRouter) -> FakeClerk:
    return FakeClerk(outside_http)


@pytest.fixture
def clerk_overrides() -> dict[str, object]:
    """Per-test setting overrides: `@pytest.mark.parametrize("clerk_overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    outside_http: respx.MockRouter,
    fake_clerk: FakeClerk,
    clerk_overrides: dict[str, object],
) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "clerk_issuer": fake_clerk.issuer,
        "clerk_jwks_url": fake_clerk.jwks_url,
        "clerk_webhook_secret": fake_clerk.svix_secret,
        "clerk_authorized_parties": [fake_clerk.authorized_party],
    }
    values.update(clerk_overrides)
    return make_settings(**values)


def new_clerk_id() -> str:
    return "user_" + uuid.uuid4().hex[:24]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def now_ms() -> int:
    return int(time.time() * 1000)


async def users_by_clerk_id(session: AsyncSession, clerk_id: str) -> list[User]:
    session.expire_all()
    return list((await session.scalars(select(User).where(User.clerk_id == clerk_id))).all())


async def one_user(session: AsyncSession, clerk_id: str) -> User:
    rows = await users_by_clerk_id(session, clerk_id)
    assert len(rows) == 1, rows
    return rows[0]


async def bonus_rows(session: AsyncSession, user_id: uuid.UUID) -> list[CreditLedgerEntry]:
    statement = (
        select(CreditLedgerEntry)
        .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
        .where(CreditAccount.user_id == user_id, CreditLedgerEntry.reason == LedgerReason.signup_bonus.value)
    )
    return list((await session.scalars(statement)).all())


async def webhook_events(session: AsyncSession, event_id: str) -> list[WebhookEvent]:
    session.expire_all()
    statement = select(WebhookEvent).where(
        WebhookEvent.provider == "clerk", WebhookEvent.event_id == event_id
    )
    return list((await session.scalars(statement)).all())


async def deliver(
    client: httpx.AsyncClient,
    fake: FakeClerk,
    event_type: str,
    data: dict[str, Any],
    *,
    path: str = WEBHOOK,
    msg_id: str | None = None,
) -> httpx.Response:
    body, headers = fake.signed_webhook(event_type, data, msg_id=msg_id)
    return await client.post(path, content=body, headers=headers | {"content-type": "application/json"})


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body.get("request_id")
    return {key: value for key, value in body.items() if key != "request_id"}


# --- session tokens --------------------------------------------------------------------------------


async def test_clerk_session_token_creates_the_user_on_first_use_with_the_signup_bonus(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    assert await users_by_clerk_id(session, clerk_id) == []

    me = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))

    assert me.status_code == 200, me.text
    user = await one_user(session, clerk_id)
    assert me.json()["id"] == str(user.id)
    assert me.json()["plan"] == "free"
    assert user.plan == "free"
    assert user.is_active
    assert user.erased_at is None
    assert len(await bonus_rows(session, user.id)) == 1

    credits = await client.get(CREDITS, headers=bearer(fake_clerk.session_token(clerk_id)))
    assert credits.status_code == 200, credits.text
    assert credits.json() == {"credits": 10.0, "plan": "free"}

    # A second (and third) request: same row, no second bonus.
    again = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))
    assert again.status_code == 200
    assert again.json()["id"] == str(user.id)
    assert len(await users_by_clerk_id(session, clerk_id)) == 1
    assert len(await bonus_rows(session, user.id)) == 1
    credits = await client.get(CREDITS, headers=bearer(fake_clerk.session_token(clerk_id)))
    assert credits.json() == {"credits": 10.0, "plan": "free"}


async def test_jwks_is_fetched_once_and_cached(client: httpx.AsyncClient, fake_clerk: FakeClerk) -> None:
    clerk_id = new_clerk_id()
    assert fake_clerk.jwks_requests == 0

    for _ in range(3):
        response = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))
        assert response.status_code == 200, response.text

    assert fake_clerk.jwks_requests == 1
    assert fake_clerk.backend_jwks_requests == 0


@pytest.mark.parametrize("clerk_overrides", [{"clerk_jwks_min_refresh_seconds": 0}])
async def test_key_rotation_refetches_the_jwks_on_an_unknown_kid(
    client: httpx.AsyncClient, fake_clerk: FakeClerk
) -> None:
    clerk_id = new_clerk_id()
    old_token = fake_clerk.session_token(clerk_id)
    assert (await client.get(ME, headers=bearer(old_token))).status_code == 200
    assert fake_clerk.jwks_requests == 1

    fake_clerk.rotate_key()
    new_token = fake_clerk.session_token(clerk_id)

    response = await client.get(ME, headers=bearer(new_token))
    assert response.status_code == 200, response.text
    assert fake_clerk.jwks_requests == 2
    # The new key is cached now.
    assert (await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))).status_code == 200
    assert fake_clerk.jwks_requests == 2
    # The old key was retired by Clerk: its tokens no longer verify.
    assert (await client.get(ME, headers=bearer(old_token))).status_code == 401


class FakeMonotonic:
    """Stands in for the `time` module inside app.integrations.clerk (only `monotonic()` is used)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


async def test_unknown_kids_refetch_at_most_once_per_min_refresh_interval(
    client: httpx.AsyncClient,
    fake_clerk: FakeClerk,
    container: Container,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.clerk_jwks_min_refresh_seconds == 30
    clock = FakeMonotonic()
    monkeypatch.setattr(clerk_integration, "time", clock)
    clerk_id = new_clerk_id()
    good = fake_clerk.session_token(clerk_id)
    assert (await client.get(ME, headers=bearer(good))).status_code == 200
    assert fake_clerk.jwks_requests == 1

    # Within the interval: a burst of forged kids never reaches Clerk.
    clock.now += 10
    for index in range(5):
        forged = fake_clerk.session_token(clerk_id, kid=f"ins_forged_{index}")
        response = await client.get(ME, headers=bearer(forged))
        assert response.status_code == 401
        assert without_request_id(response) == INVALID_TOKEN_BODY
    assert fake_clerk.jwks_requests == 1

    # Past the interval: one refetch for the whole burst.
    clock.now += 25
    for index in range(5):
        forged = fake_clerk.session_token(clerk_id, kid=f"ins_forged_b{index}")
        assert (await client.get(ME, headers=bearer(forged))).status_code == 401
    assert fake_clerk.jwks_requests == 2

    # Concurrent unknown kids after the next interval: still a single fetch (the lock serializes them).
    clock.now += 31
    assert container.clerk is not None
    forged_tokens = [fake_clerk.session_token(clerk_id, kid=f"ins_forged_c{index}") for index in range(10)]
    results = await asyncio.gather(
        *(container.clerk.verify(token) for token in forged_tokens), return_exceptions=True
    )
    assert all(isinstance(result, InvalidClerkToken) for result in results), results
    assert fake_clerk.jwks_requests == 3

    # The genuine key is still cached.
    assert (await client.get(ME, headers=bearer(good))).status_code == 200
    assert fake_clerk.jwks_requests == 3


async def test_a_cold_burst_of_unknown_kids_fetches_the_jwks_once(
    fake_clerk: FakeClerk, container: Container
) -> None:
    assert container.clerk is not None
    tokens = [fake_clerk.session_token(new_clerk_id(), kid=f"ins_cold_{index}") for index in range(8)]

    results = await asyncio.gather(
        *(container.clerk.verify(token) for token in tokens), return_exceptions=True
    )

    assert all(isinstance(result, InvalidClerkToken) for result in results), results
    assert fake_clerk.jwks_requests == 1


async def test_jwks_outage_on_a_cold_start_answers_503_and_creates_nothing(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, outside_http: respx.MockRouter, session: AsyncSession
) -> None:
    outside_http.get(fake_clerk.jwks_url).mock(return_value=httpx.Response(503))
    clerk_id = new_clerk_id()

    response = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    assert await users_by_clerk_id(session, clerk_id) == []


async def test_a_jwks_outage_keeps_answering_503_not_401_while_no_key_was_ever_fetched(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, outside_http: respx.MockRouter, session: AsyncSession
) -> None:
    """Regression: with nothing cached and the refetch throttled, the verifier used to call every token
    "unknown kid" (401) instead of admitting it cannot judge it (503)."""
    outside_http.get(fake_clerk.jwks_url).mock(return_value=httpx.Response(503))
    clerk_id = new_clerk_id()
    first = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))
    assert first.status_code == 503

    # Clerk is still down a moment later: the same valid token must not be reported as invalid
    # (a 401 tells the frontend to sign the user out).
    second = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))

    assert second.status_code == 503, second.text
    assert await users_by_clerk_id(session, clerk_id) == []


ATTACKS: dict[str, Any] = {
    "expired": lambda fake, sub: fake.session_token(sub, expires_in=-60),
    "not_yet_valid": lambda fake, sub: fake.session_token(sub, not_before_offset=60),
    "unknown_key": lambda fake, sub: fake.token_signed_by_unknown_key(sub),
    "alg_none": lambda fake, sub: fake.none_alg_token(sub),
    "hs256_with_public_key": lambda fake, sub: fake.hs256_token_signed_with_public_key(sub),
    "wrong_issuer": lambda fake, sub: fake.session_token(sub, issuer="https://evil.clerk.accounts.dev"),
    "wrong_azp": lambda fake, sub: fake.session_token(sub, azp="https://evil.example"),
    "missing_azp": lambda fake, sub: fake.session_token(sub, azp=None),
    "not_a_clerk_user_id": lambda fake, sub: fake.session_token("org_" + sub.removeprefix("user_")),
    "malformed_abc": lambda fake, sub: "abc",
    "malformed_a_b_c": lambda fake, sub: "a.b.c",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_bad_session_tokens_answer_the_same_401(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession, attack: str
) -> None:
    clerk_id = new_clerk_id()
    # A valid request first, so the JWKS is loaded and every refusal below is the verifier's.
    reference = fake_clerk.session_token(new_clerk_id())
    assert (await client.get(ME, headers=bearer(reference))).status_code == 200

    token = ATTACKS[attack](fake_clerk, clerk_id)
    response = await client.get(ME, headers=bearer(token))

    assert response.status_code == 401, response.text
    assert without_request_id(response) == INVALID_TOKEN_BODY
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert await users_by_clerk_id(session, clerk_id) == []
    credits = await client.get(CREDITS, headers=bearer(token))
    assert credits.status_code == 401
    assert without_request_id(credits) == INVALID_TOKEN_BODY


@pytest.mark.parametrize(
    "token_options",
    [
        pytest.param({"expires_in": -2}, id="expired_within_skew"),
        pytest.param({"not_before_offset": 2}, id="nbf_within_skew"),
    ],
)
async def test_a_token_within_the_clock_skew_still_passes(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession, token_options: dict[str, int]
) -> None:
    clerk_id = new_clerk_id()
    token = fake_clerk.session_token(clerk_id, **token_options)

    response = await client.get(ME, headers=bearer(token))

    assert response.status_code == 200, response.text
    assert len(await users_by_clerk_id(session, clerk_id)) == 1


@pytest.mark.parametrize("clerk_overrides", [{"clerk_authorized_parties": []}])
async def test_azp_is_not_checked_when_no_parties_are_configured(
    client: httpx.AsyncClient, fake_clerk: FakeClerk
) -> None:
    clerk_id = new_clerk_id()
    for azp in (None, "https://anything.example"):
        response = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id, azp=azp)))
        assert response.status_code == 200, response.text


async def test_createupdateuser_takes_a_clerk_token(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()

    first = await client.post(CREATE_UPDATE, headers=bearer(fake_clerk.session_token(clerk_id)))
    second = await client.post(CREATE_UPDATE, headers=bearer(fake_clerk.session_token(clerk_id)))

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    user = await one_user(session, clerk_id)
    assert first.json()["id"] == second.json()["id"] == str(user.id)
    assert first.json()["plan"] == "free"
    assert len(await bonus_rows(session, user.id)) == 1


async def test_createupdateuser_refuses_a_local_token(
    client: httpx.AsyncClient, container: Container, settings: Settings, session: AsyncSession
) -> None:
    email = f"local-{uuid.uuid4().hex[:8]}@example.com"
    user = await users_service.create_user(session, settings, email=email, name="Local")
    user_id = user.id
    await session.commit()
    access, _ = container.tokens.issue(user_id, "access")
    assert (await client.get(ME, headers=bearer(access))).status_code == 200

    response = await client.post(CREATE_UPDATE, headers=bearer(access))

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    session.expire_all()
    assert (await session.get(User, user_id)) is not None
    assert (await session.scalar(select(User.clerk_id).where(User.id == user_id))) is None


# --- webhooks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WEBHOOK, WEBHOOK_ALIAS])
async def test_user_created_webhook_creates_the_user(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession, path: str
) -> None:
    clerk_id = new_clerk_id()
    tag = uuid.uuid4().hex[:8]
    payload = fake_clerk.user_payload(
        clerk_id,
        f"  Jane.Doe.{tag}@Example.COM ",
        first_name="Jane",
        last_name="Doe",
        image_url=f"https://img.clerk.com/{tag}",
    )
    body, headers = fake_clerk.signed_webhook("user.created", payload)

    response = await client.post(path, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "processed"}
    user = await one_user(session, clerk_id)
    assert user.email == f"jane.doe.{tag}@example.com"
    assert user.email_verified_at is not None
    assert user.name == "Jane Doe"
    assert user.photo_url == f"https://img.clerk.com/{tag}"
    assert user.plan == "free"
    assert user.clerk_updated_at == payload["updated_at"]
    user_id = user.id
    assert len(await bonus_rows(session, user_id)) == 1
    [event] = await webhook_events(session, headers["svix-id"])
    assert event.event_type == "user.created"
    assert event.handled_at is not None

    # The session of that Clerk user lands on the same row.
    me = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))
    assert me.status_code == 200
    assert me.json()["id"] == str(user_id)
    assert me.json()["email"] == f"jane.doe.{tag}@example.com"
    assert me.json()["email_verified"] is True
    assert len(await bonus_rows(session, user_id)) == 1


async def test_webhook_fills_in_a_user_first_seen_through_a_session(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    assert (await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))).status_code == 200
    email = f"later-{uuid.uuid4().hex[:8]}@example.com"

    response = await deliver(client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email))

    assert response.status_code == 200, response.text
    user = await one_user(session, clerk_id)
    assert user.email == email
    assert len(await bonus_rows(session, user.id)) == 1


async def test_a_verified_clerk_email_links_the_existing_verified_local_account(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, settings: Settings, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    email = f"linked-{uuid.uuid4().hex[:8]}@example.com"
    local = await users_service.create_user(
        session, settings, email=email, name="Local", password_hash="x", email_verified_at=utcnow()
    )
    local_id = local.id
    await session.commit()

    response = await deliver(client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email))

    assert response.status_code == 200, response.text
    user = await one_user(session, clerk_id)
    assert user.id == local_id
    assert user.email == email
    assert len(await bonus_rows(session, local_id)) == 1
    assert (await session.scalar(select(func.count()).select_from(User).where(User.email == email))) == 1


async def test_an_unverified_clerk_email_never_takes_an_address_held_by_another_account(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, settings: Settings, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    email = f"taken-{uuid.uuid4().hex[:8]}@example.com"
    local = await users_service.create_user(
        session, settings, email=email, password_hash="x", email_verified_at=utcnow()
    )
    local_id = local.id
    await session.commit()

    response = await deliver(
        client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email, verified=False)
    )

    assert response.status_code == 200, response.text
    user = await one_user(session, clerk_id)
    assert user.id != local_id
    assert user.email is None
    local_after = await session.get(User, local_id)
    assert local_after is not None
    assert local_after.clerk_id is None
    assert local_after.email == email


async def test_a_clerk_user_does_not_inherit_an_unverified_local_registration(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, settings: Settings, session: AsyncSession
) -> None:
    """Regression (pre-account takeover): linking a Clerk-verified address to a local account that never
    verified it used to keep the password chosen by whoever registered the address."""
    clerk_id = new_clerk_id()
    email = f"squatted-{uuid.uuid4().hex[:8]}@example.com"
    # Someone registered the address with a password of their choosing and never proved they own it.
    squatter = await users_service.create_user(session, settings, email=email, password_hash="squatters-hash")
    squatter_id = squatter.id
    await session.commit()

    response = await deliver(client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email))

    assert response.status_code == 200, response.text
    user = await one_user(session, clerk_id)
    # The real owner's account must not carry a password set by whoever squatted the address.
    assert user.id != squatter_id or user.password_hash is None


async def test_a_redelivered_svix_id_is_a_duplicate_and_changes_nothing(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    created_at = now_ms() - 60_000
    payload = fake_clerk.user_payload(clerk_id, email, first_name="First", updated_at=created_at)
    body, headers = fake_clerk.signed_webhook("user.created", payload)
    assert (await client.post(WEBHOOK, content=body, headers=headers)).json() == {"status": "processed"}
    user = await one_user(session, clerk_id)

    # Svix retry: the same bytes, the same id.
    replay = await client.post(WEBHOOK, content=body, headers=headers)
    # Same id with different (newer) content: still the same delivery as far as we are concerned.
    changed = fake_clerk.user_payload(
        clerk_id, f"other-{email}", first_name="Changed", updated_at=created_at + 30_000
    )
    same_id = await deliver(client, fake_clerk, "user.updated", changed, msg_id=headers["svix-id"])

    for response in (replay, same_id):
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "duplicate"}
    again = await one_user(session, clerk_id)
    assert again.id == user.id
    assert again.email == email
    assert again.name == "First Example"
    assert again.clerk_updated_at == created_at
    assert len(await bonus_rows(session, user.id)) == 1
    [event] = await webhook_events(session, headers["svix-id"])
    assert event.event_type == "user.created"


async def test_user_updated_before_user_created_keeps_the_newer_data(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    tag = uuid.uuid4().hex[:8]
    created_ms = now_ms() - 120_000
    updated_ms = created_ms + 60_000
    created = fake_clerk.user_payload(
        clerk_id,
        f"old-{tag}@example.com",
        first_name="Old",
        last_name="Name",
        image_url="https://img.clerk.com/old",
        created_at=created_ms,
        updated_at=created_ms,
    )
    updated = fake_clerk.user_payload(
        clerk_id,
        f"new-{tag}@example.com",
        first_name="New",
        last_name="Name",
        username=f"new_{tag}",
        image_url="https://img.clerk.com/new",
        created_at=created_ms,
        updated_at=updated_ms,
    )

    first = await deliver(client, fake_clerk, "user.updated", updated)
    second = await deliver(client, fake_clerk, "user.created", created)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json() == second.json() == {"status": "processed"}
    user = await one_user(session, clerk_id)
    assert user.email == f"new-{tag}@example.com"
    assert user.name == "New Name"
    assert user.username == f"new_{tag}"
    assert user.photo_url == "https://img.clerk.com/new"
    assert user.clerk_updated_at == updated_ms
    assert len(await bonus_rows(session, user.id)) == 1


async def test_a_newer_user_updated_changes_the_profile(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    tag = uuid.uuid4().hex[:8]
    created_ms = now_ms() - 60_000
    await deliver(
        client,
        fake_clerk,
        "user.created",
        fake_clerk.user_payload(clerk_id, f"a-{tag}@example.com", first_name="A", updated_at=created_ms),
    )

    response = await deliver(
        client,
        fake_clerk,
        "user.updated",
        fake_clerk.user_payload(clerk_id, f"b-{tag}@example.com", first_name="B", updated_at=created_ms + 1),
    )

    assert response.json() == {"status": "processed"}
    user = await one_user(session, clerk_id)
    assert user.email == f"b-{tag}@example.com"
    assert user.name == "B Example"
    assert user.clerk_updated_at == created_ms + 1


async def test_user_deleted_erases_and_nothing_brings_it_back(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    email = f"gone-{uuid.uuid4().hex[:8]}@example.com"
    created_ms = now_ms() - 60_000
    await deliver(
        client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email, updated_at=created_ms)
    )
    token = fake_clerk.session_token(clerk_id)
    assert (await client.get(ME, headers=bearer(token))).status_code == 200
    user_id = (await one_user(session, clerk_id)).id

    deleted = await deliver(client, fake_clerk, "user.deleted", fake_clerk.deleted_payload(clerk_id))

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"status": "processed"}
    assert await users_by_clerk_id(session, clerk_id) == []
    erased = await session.get(User, user_id)
    assert erased is not None
    assert erased.email is None
    assert erased.name is None
    assert erased.photo_url is None
    assert erased.email_verified_at is None
    assert erased.erased_at is not None
    assert erased.is_active is False
    assert erased.clerk_id == users_service.clerk_tombstone(clerk_id)
    assert clerk_id not in (erased.clerk_id or "")

    # Late (even newer) events for that Clerk user do not bring it back.
    for event_type in ("user.updated", "user.created"):
        late = await deliver(
            client,
            fake_clerk,
            event_type,
            fake_clerk.user_payload(clerk_id, email, first_name="Back", updated_at=now_ms() + 60_000),
        )
        assert late.status_code == 200, late.text
    assert await users_by_clerk_id(session, clerk_id) == []
    session.expire_all()
    assert (await session.scalar(select(func.count()).select_from(User).where(User.email == email))) == 0
    erased = await session.get(User, user_id)
    assert erased is not None
    assert erased.email is None
    assert erased.name is None

    # Nor does a (still unexpired) Clerk session.
    for response in (
        await client.get(ME, headers=bearer(token)),
        await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id))),
        await client.post(CREATE_UPDATE, headers=bearer(fake_clerk.session_token(clerk_id))),
    ):
        assert response.status_code == 401
        assert without_request_id(response) == INVALID_TOKEN_BODY
    assert await users_by_clerk_id(session, clerk_id) == []


async def test_user_deleted_before_it_was_ever_seen_blocks_a_late_creation(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    email = f"never-{uuid.uuid4().hex[:8]}@example.com"

    deleted = await deliver(client, fake_clerk, "user.deleted", fake_clerk.deleted_payload(clerk_id))
    late = await deliver(client, fake_clerk, "user.created", fake_clerk.user_payload(clerk_id, email))
    session_response = await client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id)))

    assert deleted.status_code == late.status_code == 200
    assert session_response.status_code == 401
    assert await users_by_clerk_id(session, clerk_id) == []
    session.expire_all()
    assert (await session.scalar(select(func.count()).select_from(User).where(User.email == email))) == 0
    tombstones = await users_by_clerk_id(session, users_service.clerk_tombstone(clerk_id))
    assert len(tombstones) == 1
    assert tombstones[0].erased_at is not None
    assert tombstones[0].email is None


Mutator = Callable[[FakeClerk, bytes, dict[str, str], str, str], tuple[bytes, dict[str, str]]]


def _signed_raw(secret: str, msg_id: str, text: str) -> tuple[bytes, dict[str, str]]:
    """A body of our choosing, correctly signed (so only what comes after the signature can refuse it)."""
    moment = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, text)
    headers = {"svix-id": msg_id, "svix-timestamp": str(int(moment.timestamp())), "svix-signature": signature}
    return text.encode(), headers


def _stale(
    fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
) -> tuple[bytes, dict[str, str]]:
    payload = fake.user_payload(clerk_id, email)
    return fake.signed_webhook("user.created", payload, timestamp=datetime.now(UTC) - timedelta(minutes=10))


def _bad_signature(
    fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
) -> tuple[bytes, dict[str, str]]:
    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    return _signed_raw(other_secret, headers["svix-id"], body.decode())


def _tampered(
    fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
) -> tuple[bytes, dict[str, str]]:
    tampered = body.replace(b'"first_name":"Example"', b'"first_name":"Mallory"')
    assert tampered != body
    return tampered, headers


def _non_json(
    fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
) -> tuple[bytes, dict[str, str]]:
    return _signed_raw(fake.svix_secret, headers["svix-id"], f"this is not json {clerk_id} {email}")


def _json_array(
    fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
) -> tuple[bytes, dict[str, str]]:
    return _signed_raw(fake.svix_secret, headers["svix-id"], f'["{clerk_id}", "{email}"]')


def _drop(*names: str) -> Mutator:
    def mutate(
        fake: FakeClerk, body: bytes, headers: dict[str, str], clerk_id: str, email: str
    ) -> tuple[bytes, dict[str, str]]:
        return body, {key: value for key, value in headers.items() if key not in names}

    return mutate


BAD_DELIVERIES: dict[str, Mutator] = {
    "bad_signature": _bad_signature,
    "stale_timestamp": _stale,
    "tampered_body": _tampered,
    "non_json_body": _non_json,
    "json_array_body": _json_array,
    "missing_all_headers": _drop("svix-id", "svix-timestamp", "svix-signature"),
    "missing_signature": _drop("svix-signature"),
    "missing_timestamp": _drop("svix-timestamp"),
    "missing_id": _drop("svix-id"),
    "future_timestamp": lambda fake, body, headers, clerk_id, email: fake.signed_webhook(
        "user.created",
        fake.user_payload(clerk_id, email),
        timestamp=datetime.now(UTC) + timedelta(minutes=10),
    ),
}


async def count(session: AsyncSession, model: type[Any]) -> int:
    session.expire_all()
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("case", list(BAD_DELIVERIES))
async def test_bad_webhook_deliveries_are_refused_and_write_nothing(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession, case: str
) -> None:
    clerk_id = new_clerk_id()
    email = f"bad-{uuid.uuid4().hex[:8]}@example.com"
    body, headers = fake_clerk.signed_webhook("user.created", fake_clerk.user_payload(clerk_id, email))
    body, headers = BAD_DELIVERIES[case](fake_clerk, body, headers, clerk_id, email)
    users_before, events_before = await count(session, User), await count(session, WebhookEvent)

    response = await client.post(WEBHOOK, content=body, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_signature"
    assert await users_by_clerk_id(session, clerk_id) == []
    assert (await session.scalar(select(func.count()).select_from(User).where(User.email == email))) == 0
    assert await count(session, User) == users_before
    assert await count(session, WebhookEvent) == events_before


async def test_standard_webhooks_header_names_are_accepted(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession
) -> None:
    clerk_id = new_clerk_id()
    body, headers = fake_clerk.signed_webhook(
        "user.created", fake_clerk.user_payload(clerk_id, f"std-{uuid.uuid4().hex[:8]}@example.com")
    )
    renamed = {key.replace("svix-", "webhook-"): value for key, value in headers.items()}

    response = await client.post(WEBHOOK_ALIAS, content=body, headers=renamed)

    assert response.status_code == 200, response.text
    assert len(await users_by_clerk_id(session, clerk_id)) == 1
    assert len(await webhook_events(session, headers["svix-id"])) == 1


@pytest.mark.parametrize("clerk_overrides", [{"clerk_webhook_secret": None}])
@pytest.mark.parametrize("path", [WEBHOOK, WEBHOOK_ALIAS])
async def test_webhooks_answer_503_when_the_secret_is_unset(
    client: httpx.AsyncClient, fake_clerk: FakeClerk, session: AsyncSession, path: str
) -> None:
    clerk_id = new_clerk_id()
    body, headers = fake_clerk.signed_webhook(
        "user.created", fake_clerk.user_payload(clerk_id, f"{clerk_id}@example.com")
    )

    response = await client.post(path, content=body, headers=headers)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "provider_not_configured"
    assert await users_by_clerk_id(session, clerk_id) == []
    assert await webhook_events(session, headers["svix-id"]) == []


# --- concurrency (real commits, PostgreSQL) --------------------------------------------------------


@pytest.fixture
def committing_app(committing: tuple[FastAPI, Database]) -> FastAPI:
    app, _ = committing
    return app


async def _cleanup(engine: AsyncEngine, clerk_ids: list[str], event_ids: list[str]) -> None:
    user_ids = select(User.id).where(User.clerk_id.in_(clerk_ids))
    account_ids = select(CreditAccount.id).where(CreditAccount.user_id.in_(user_ids))
    async with engine.begin() as connection:
        await connection.execute(
            delete(CreditLedgerEntry).where(CreditLedgerEntry.account_id.in_(account_ids))
        )
        await connection.execute(delete(CreditAccount).where(CreditAccount.user_id.in_(user_ids)))
        if event_ids:
            await connection.execute(
                delete(WebhookEvent).where(
                    WebhookEvent.provider == "clerk", WebhookEvent.event_id.in_(event_ids)
                )
            )
        await connection.execute(delete(User).where(User.clerk_id.in_(clerk_ids)))


async def _committed_state(engine: AsyncEngine, clerk_id: str) -> tuple[list[Any], int]:
    async with engine.connect() as connection:
        users = (await connection.execute(select(User.id, User.email).where(User.clerk_id == clerk_id))).all()
        bonuses = await connection.scalar(
            select(func.count())
            .select_from(CreditLedgerEntry)
            .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
            .join(User, User.id == CreditAccount.user_id)
            .where(User.clerk_id == clerk_id, CreditLedgerEntry.reason == LedgerReason.signup_bonus.value)
        )
    return list(users), int(bonuses or 0)


async def test_concurrent_user_created_deliveries_make_one_user(
    committing_app: FastAPI, engine: AsyncEngine, fake_clerk: FakeClerk
) -> None:
    clerk_id = new_clerk_id()
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    payload = fake_clerk.user_payload(clerk_id, email)
    deliveries = [fake_clerk.signed_webhook("user.created", payload) for _ in range(2)]
    event_ids = [headers["svix-id"] for _, headers in deliveries]
    assert event_ids[0] != event_ids[1]
    try:
        transport = httpx.ASGITransport(app=committing_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = await asyncio.gather(
                *(client.post(WEBHOOK, content=body, headers=headers) for body, headers in deliveries)
            )

        for response in responses:
            assert response.status_code == 200, response.text
            assert response.json() == {"status": "processed"}
        users, bonuses = await _committed_state(engine, clerk_id)
        assert len(users) == 1
        assert users[0].email == email
        assert bonuses == 1
        async with engine.connect() as connection:
            handled = (
                await connection.execute(
                    select(WebhookEvent.event_id, WebhookEvent.handled_at).where(
                        WebhookEvent.provider == "clerk", WebhookEvent.event_id.in_(event_ids)
                    )
                )
            ).all()
        assert sorted(row.event_id for row in handled) == sorted(event_ids)
        assert all(row.handled_at is not None for row in handled)
    finally:
        await _cleanup(engine, [clerk_id], event_ids)
    assert await _committed_state(engine, clerk_id) == ([], 0)


async def test_concurrent_first_requests_with_one_clerk_session_make_one_user(
    committing_app: FastAPI, engine: AsyncEngine, fake_clerk: FakeClerk
) -> None:
    clerk_id = new_clerk_id()
    try:
        transport = httpx.ASGITransport(app=committing_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = await asyncio.gather(
                *(client.get(ME, headers=bearer(fake_clerk.session_token(clerk_id))) for _ in range(4))
            )

        assert [response.status_code for response in responses] == [200] * 4, [r.text for r in responses]
        assert len({response.json()["id"] for response in responses}) == 1
        users, bonuses = await _committed_state(engine, clerk_id)
        assert len(users) == 1
        assert str(users[0].id) == responses[0].json()["id"]
        assert bonuses == 1
    finally:
        await _cleanup(engine, [clerk_id], [])
    assert await _committed_state(engine, clerk_id) == ([], 0)
