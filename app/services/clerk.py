"""Clerk users mirrored into `users`: created on first verified request, kept in sync by Svix webhooks
(idempotent per delivery, safe against duplicates, concurrency and out-of-order arrival)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import ProviderNotConfigured
from app.integrations.clerk import InvalidWebhookSignature, verify_svix_webhook
from app.models import User, WebhookEvent
from app.repositories.users import UserRepository
from app.services import erasure, webhook_inbox
from app.services import users as users_service

log = structlog.get_logger("app.clerk")
PROVIDER = "clerk"


@dataclass(frozen=True)
class ClerkProfile:
    clerk_id: str
    email: str | None
    email_verified: bool
    name: str | None
    username: str | None
    photo_url: str | None
    updated_at_ms: int | None

    @classmethod
    def from_user_object(cls, data: dict[str, Any]) -> ClerkProfile:
        primary_id = data.get("primary_email_address_id")
        addresses = [entry for entry in data.get("email_addresses") or [] if isinstance(entry, dict)]
        primary = next((entry for entry in addresses if entry.get("id") == primary_id), None)
        if primary is None and addresses:
            primary = addresses[0]
        email = None
        verified = False
        if primary is not None and isinstance(primary.get("email_address"), str):
            try:
                email = users_service.normalize_email(primary["email_address"])
            except ValueError:
                email = None
            verified = (primary.get("verification") or {}).get("status") == "verified"
        name = " ".join(
            part for part in (data.get("first_name"), data.get("last_name")) if isinstance(part, str) and part
        )
        updated = data.get("updated_at")
        return cls(
            clerk_id=str(data["id"]),
            email=email,
            email_verified=verified,
            name=name or None,
            username=data.get("username") if isinstance(data.get("username"), str) else None,
            photo_url=data.get("image_url") if isinstance(data.get("image_url"), str) else None,
            updated_at_ms=updated if isinstance(updated, int) else None,
        )


async def user_for_session(session: AsyncSession, ctx: Container, clerk_id: str) -> User | None:
    """The user behind a verified Clerk session, created on first use. None when that Clerk user was
    erased here (a deleted account does not come back through an old session)."""
    repository = UserRepository(session)
    user = await repository.get_by_clerk_id(clerk_id)
    if user is None:
        if await _was_erased(session, clerk_id):
            return None
        user = await _create_or_get(session, ctx, ClerkProfile(clerk_id, None, False, None, None, None, None))
    return user if user.is_active and user.erased_at is None else None


async def _was_erased(session: AsyncSession, clerk_id: str) -> bool:
    return await UserRepository(session).get_by_clerk_id(users_service.clerk_tombstone(clerk_id)) is not None


async def sync_profile(session: AsyncSession, ctx: Container, profile: ClerkProfile) -> User | None:
    """Insert or update from Clerk's user object; older data than what we hold is ignored."""
    user = await UserRepository(session).get_by_clerk_id(profile.clerk_id)
    if user is None:
        if await _was_erased(session, profile.clerk_id):
            log.info("clerk.update_of_erased_user_ignored")
            return None
        user = await _create_or_get(session, ctx, profile)
    stale = (
        profile.updated_at_ms is not None
        and user.clerk_updated_at is not None
        and profile.updated_at_ms < user.clerk_updated_at
    )
    if stale:
        log.info("clerk.stale_update_ignored", clerk_id=profile.clerk_id)
        return user
    await _apply(session, user, profile)
    return user


async def _create_or_get(session: AsyncSession, ctx: Container, profile: ClerkProfile) -> User:
    return await users_service.find_or_create_external(
        session,
        ctx.settings,
        provider="clerk",
        external_id=profile.clerk_id,
        email=profile.email,
        email_verified=profile.email_verified,
        name=profile.name,
        photo_url=profile.photo_url,
    )


async def _apply(session: AsyncSession, user: User, profile: ClerkProfile) -> None:
    repository = UserRepository(session)
    if profile.email is not None and profile.email != user.email:
        owner = await repository.get_by_email(profile.email)
        if owner is None:
            user.email = profile.email
            user.email_verified_at = utcnow() if profile.email_verified else None
    if profile.name is not None:
        user.name = profile.name
    if profile.photo_url is not None:
        user.photo_url = profile.photo_url
    if profile.username is not None and not await repository.username_taken(
        profile.username, by_other_than=user.id
    ):
        user.username = profile.username
    if profile.updated_at_ms is not None:
        user.clerk_updated_at = profile.updated_at_ms
    await session.flush()


async def receive_webhook(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> bool:
    """Verify a Clerk delivery on its raw bytes, then apply it once."""
    secret = ctx.settings.clerk_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ProviderNotConfigured("Clerk webhooks are not configured (CLERK_WEBHOOK_SECRET).")
    try:
        event = verify_svix_webhook(secret.get_secret_value(), body, headers)
    except InvalidWebhookSignature as exc:
        raise await webhook_inbox.refused(session, PROVIDER, str(exc)) from exc
    event_id = headers.get("svix-id") or headers.get("webhook-id") or ""
    return await handle_webhook(session, ctx, event_id, event)


async def handle_webhook(session: AsyncSession, ctx: Container, event_id: str, event: dict[str, Any]) -> bool:
    """Apply one verified delivery; False (and nothing changed) when this `svix-id` was seen before."""
    event_type = str(event.get("type", ""))
    apply = _applier(session, ctx, event)
    outcome = await webhook_inbox.receive(session, PROVIDER, event_id, event_type, event, apply)
    return outcome != "duplicate"


def _applier(session: AsyncSession, ctx: Container, event: dict[str, Any]) -> webhook_inbox.Handler:
    event_type = str(event.get("type", ""))
    raw_data = event.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}

    async def apply() -> bool:
        if event_type in ("user.created", "user.updated") and "id" in data:
            await sync_profile(session, ctx, ClerkProfile.from_user_object(data))
            return True
        if event_type == "user.deleted" and "id" in data:
            await _delete(session, ctx, str(data["id"]))
            return True
        return False

    return apply


async def replayer(session: AsyncSession, ctx: Container, stored: WebhookEvent) -> webhook_inbox.Handler:
    """The effect of a stored Clerk event (verified when it arrived), as a live delivery applies it."""
    return _applier(session, ctx, stored.payload)


async def _delete(session: AsyncSession, ctx: Container, clerk_id: str) -> None:
    user = await UserRepository(session).get_by_clerk_id(clerk_id)
    if user is not None:
        await erasure.erase_account(session, ctx, user)
    elif not await _was_erased(session, clerk_id):
        # Deleted before its creation reached us: leave only the tombstone, so a late user.created
        # cannot bring it back.
        await UserRepository(session).add(
            User(
                clerk_id=users_service.clerk_tombstone(clerk_id),
                is_active=False,
                erased_at=utcnow(),
                sessions_revoked_at=utcnow(),
            )
        )
