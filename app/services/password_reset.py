"""A forgotten password: the reset link sent (only to an existing local account, after the answer, so
that neither the answer nor its timing tells whether the address has one), checked, and spent on a new
password, which ends every session of the account."""

from __future__ import annotations

from html import escape

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.models import AuditAction, OneTimeTokenPurpose
from app.repositories.auth_tokens import (
    OneTimeTokenRepository,
    RefreshTokenRepository,
)
from app.security import (
    sha256_hex,
)
from app.services import audit
from app.services import email as email_service
from app.services import users as users_service
from app.services.auth import InvalidOneTimeToken, find_by_email, greeting, issue_one_time_token

log = structlog.get_logger("app.auth")


async def send_password_reset(ctx: Container, email: str) -> None:
    """`forgot_password` in a unit of work of its own, then the email sent: run after the answer, so
    that neither the answer nor its timing tells whether the address has an account."""
    async with ctx.database.session_scope() as session:
        await forgot_password(session, ctx, email)
    await email_service.deliver_due(ctx.database, ctx.email)


async def forgot_password(session: AsyncSession, ctx: Container, email: str) -> None:
    """Only an existing local account gets a message."""
    user = await find_by_email(session, email)
    if user is None or user.email is None:
        return
    await OneTimeTokenRepository(session).expire_unused(
        user.id, OneTimeTokenPurpose.reset_password.value, utcnow()
    )
    token = await issue_one_time_token(
        session, user.id, OneTimeTokenPurpose.reset_password, ctx.settings.password_reset_ttl_seconds
    )
    await audit.record(session, action=AuditAction.password_reset_requested, subject_id=user.id)
    link = f"{ctx.settings.frontend_url}/reset-password?token={token}"
    await email_service.enqueue(
        session,
        to=user.email,
        subject=f"Reset your {ctx.settings.app_name} password",
        text=f"Hello{greeting(user)},\n\nSet a new password here:\n{link}\n\n"
        "If you did not ask for this, ignore this email: your password stays as it is.",
        html=f'<p>Hello{escape(greeting(user))},</p><p><a href="{escape(link)}">Set a new password</a></p>',
        tag="reset_password",
        user_id=user.id,
    )


async def reset_token_is_valid(session: AsyncSession, token: str) -> bool:
    """Whether a reset link would still work, without spending it (the form asks before it shows)."""
    user_id = await OneTimeTokenRepository(session).peek(
        sha256_hex(token), OneTimeTokenPurpose.reset_password.value, utcnow()
    )
    return user_id is not None and await users_service.get_active(session, user_id) is not None


async def reset_password(session: AsyncSession, ctx: Container, token: str, new_password: str) -> None:
    user_id = await OneTimeTokenRepository(session).consume(
        sha256_hex(token), OneTimeTokenPurpose.reset_password.value, utcnow()
    )
    user = await users_service.get_active(session, user_id) if user_id else None
    if user is None:
        raise InvalidOneTimeToken()
    user.password_hash = await ctx.passwords.hash(new_password)
    # Whoever knew the old password may hold sessions: all of them end now.
    now = utcnow()
    user.sessions_revoked_at = now
    if user.email_verified_at is None:
        user.email_verified_at = now  # the reset link proved the address
    await RefreshTokenRepository(session).revoke_all_for_user(user.id, now)
    await audit.record(
        session, action=AuditAction.password_reset_completed, actor_id=user.id, subject_id=user.id
    )
    log.info("auth.password_reset", user_id=str(user.id))
