"""Local accounts and sessions: register, verify, login, refresh (rotation with reuse detection),
logout. Password reset: app/services/password_reset.py. Resolving a bearer credential to its caller:
app/services/credentials.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import AppError, BadRequest, Forbidden, RateLimited
from app.integrations.rate_limit import RateLimitExceeded
from app.models import AuditAction, OneTimeToken, OneTimeTokenPurpose, RefreshToken, User
from app.repositories.auth_tokens import (
    OneTimeTokenRepository,
    RefreshTokenRepository,
    RevokedAccessTokenRepository,
)
from app.repositories.users import UserRepository
from app.security import (
    InvalidLocalToken,
    LocalTokenClaims,
    forget_callers,
    new_secret_token,
    sha256_hex,
)
from app.services import audit
from app.services import email as email_service
from app.services import users as users_service
from app.services.users import EmailTaken, normalize_email

log = structlog.get_logger("app.auth")

API_KEY_PREFIX = "pk_"


class InvalidToken(AppError):
    status_code = 401
    code = "invalid_token"
    default_detail = "The token is invalid or expired."

    def __init__(self, *, keep_changes: bool = False) -> None:
        # One message for every cause: the client learns nothing that helps forge the next attempt.
        super().__init__(
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}, keep_changes=keep_changes
        )


class NotAuthenticated(AppError):
    status_code = 401
    code = "unauthenticated"
    default_detail = "Sign in, or send a bearer token or API key."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class InvalidCredentials(AppError):
    status_code = 401
    code = "invalid_credentials"
    default_detail = "The email or password is incorrect."


class EmailNotVerified(Forbidden):
    code = "email_not_verified"
    default_detail = "Verify your email address before signing in; we can send the link again."


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    default_detail = "Missing or wrong X-CSRF-Token for a cookie-authenticated request."


class InvalidOneTimeToken(BadRequest):
    code = "invalid_or_expired_token"
    default_detail = "This link is invalid, expired or already used."


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    access_expires_in: int
    refresh_expires_in: int


@dataclass(frozen=True)
class Principal:
    """Who is calling and how: `via` is "local", "clerk" or "api_key"; `access` holds the local token's
    claims (logout needs them)."""

    user: User
    via: str
    access: LocalTokenClaims | None = None


async def rate_limit(ctx: Container, limit: str, *identifiers: str) -> None:
    try:
        await ctx.rate_limiter.hit(limit, *identifiers)
    except RateLimitExceeded as exc:
        raise RateLimited(exc.retry_after_seconds) from exc


def account_identity(email: str) -> str:
    """The account an address names, as the account lookup reads it: per-account limits are keyed on
    this, so no spelling of one address (case, full-width letters, an IDN domain) gets a fresh budget."""
    try:
        return normalize_email(email)
    except ValueError:
        return email.strip().lower()


async def rate_limit_account(ctx: Container, limit: str, action: str, email: str) -> None:
    await rate_limit(ctx, limit, action, "account", account_identity(email))


# The limits of each guessable step, shared by the native and the compat routes that offer it.


async def verification_limits(ctx: Container, ip: str, account: str | None = None) -> None:
    """Checking or spending an emailed link's token (verify, reset)."""
    await rate_limit(ctx, ctx.settings.rate_limit_verification_per_ip, "verify", "ip", ip)
    if account:
        await rate_limit_account(ctx, ctx.settings.rate_limit_verification_per_account, "verify", account)


async def code_request_limits(ctx: Container, ip: str, email: str) -> None:
    """Asking for an emailed sign-in or sign-up code."""
    await rate_limit(ctx, ctx.settings.rate_limit_code_request_per_ip, "code", "ip", ip)
    await rate_limit_account(ctx, ctx.settings.rate_limit_code_request_per_account, "code", email)


async def code_verify_limits(ctx: Container, ip: str) -> None:
    """Checking or entering an emailed code."""
    await rate_limit(ctx, ctx.settings.rate_limit_code_verify_per_ip, "code-verify", "ip", ip)


async def password_forgot_limits(ctx: Container, ip: str, email: str) -> None:
    """Asking for a password reset link."""
    await rate_limit(ctx, ctx.settings.rate_limit_password_forgot_per_ip, "forgot", "ip", ip)
    await rate_limit_account(ctx, ctx.settings.rate_limit_password_forgot_per_account, "forgot", email)


# --- registration and verification -----------------------------------------------------------------


async def register(
    session: AsyncSession, ctx: Container, *, email: str, password: str, name: str | None
) -> User:
    email = normalize_email(email)
    if await UserRepository(session).get_by_email(email) is not None:
        raise EmailTaken()
    password_hash = await ctx.passwords.hash(password)
    try:
        user = await users_service.create_user(
            session, ctx.settings, email=email, password_hash=password_hash, name=name
        )
    except IntegrityError as exc:  # a concurrent registration of the same address won
        raise EmailTaken() from exc
    await _send_verification(session, ctx, user)
    log.info("auth.registered", user_id=str(user.id))
    return user


async def verify_email(session: AsyncSession, token: str) -> User:
    user_id = await OneTimeTokenRepository(session).consume(
        sha256_hex(token), OneTimeTokenPurpose.verify_email.value, utcnow()
    )
    user = await users_service.get_active(session, user_id) if user_id else None
    if user is None:
        raise InvalidOneTimeToken()
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user


async def resend_verification(session: AsyncSession, ctx: Container, email: str) -> None:
    """Same outcome whether or not the address has an account, so it cannot be used to probe."""
    user = await find_by_email(session, email)
    if user is not None and user.email_verified_at is None and user.password_hash is not None:
        await OneTimeTokenRepository(session).expire_unused(
            user.id, OneTimeTokenPurpose.verify_email.value, utcnow()
        )
        await _send_verification(session, ctx, user)


async def _send_verification(session: AsyncSession, ctx: Container, user: User) -> None:
    assert user.email is not None
    token = await issue_one_time_token(
        session, user.id, OneTimeTokenPurpose.verify_email, ctx.settings.email_verification_ttl_seconds
    )
    link = f"{ctx.settings.public_base_url}/api/v1/auth/verify?token={token}"
    await email_service.enqueue(
        session,
        to=user.email,
        subject=f"Confirm your email for {ctx.settings.app_name}",
        text=f"Hello{greeting(user)},\n\nConfirm your email address by opening this link:\n{link}\n\n"
        f"The link works once and expires in {ctx.settings.email_verification_ttl_seconds // 3600} hours.",
        html=f"<p>Hello{escape(greeting(user))},</p>"
        f'<p><a href="{escape(link)}">Confirm your email address</a></p>',
        tag="verify_email",
        user_id=user.id,
    )


async def issue_one_time_token(
    session: AsyncSession, user_id: uuid.UUID, purpose: OneTimeTokenPurpose, ttl_seconds: int
) -> str:
    token = new_secret_token()
    await OneTimeTokenRepository(session).add(
        OneTimeToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=sha256_hex(token),
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
    )
    return token


def greeting(user: User) -> str:
    return f" {user.name}" if user.name else ""


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    try:
        normalized = normalize_email(email)
    except ValueError:
        return None
    user = await UserRepository(session).get_by_email(normalized)
    return user if user is not None and users_service.is_open(user) else None


# --- sessions --------------------------------------------------------------------------------------


async def login(session: AsyncSession, ctx: Container, *, email: str, password: str) -> TokenPair:
    user = await check_password(session, ctx, email=email, password=password)
    return await signed_in(session, ctx, user, "password")


async def check_password(session: AsyncSession, ctx: Container, *, email: str, password: str) -> User:
    """The verified account these credentials open, else 401 (403 unverified) with the refusal on
    record. Nothing is issued: `login` issues a session, a code challenge emails a code."""
    user = await find_by_email(session, email)
    # Verified either way (against a decoy hash when there is no account): same time, same answer.
    matches, new_hash = await ctx.passwords.verify(password, user.password_hash if user else None)
    if user is None or not matches:
        await _login_failed(session, user, "invalid_credentials")
        # The audit row is committed with the 401 (nothing else was changed).
        raise InvalidCredentials(keep_changes=True)
    if user.email_verified_at is None:
        await _login_failed(session, user, "email_not_verified")
        raise EmailNotVerified(keep_changes=True)
    if new_hash is not None:
        user.password_hash = new_hash
    return user


async def signed_in(session: AsyncSession, ctx: Container, user: User, method: str) -> TokenPair:
    """A successful sign-in (`method`: "password", "code"), on record, and its new session."""
    user.last_login_at = utcnow()
    await audit.record(
        session,
        action=AuditAction.login_succeeded,
        actor_id=user.id,
        subject_id=user.id,
        details={"method": method},
    )
    log.info("auth.login", user_id=str(user.id), method=method)
    return await issue_session(session, ctx, user)


async def _login_failed(session: AsyncSession, user: User | None, reason: str) -> None:
    await login_failed(session, user.id if user is not None else None, reason, "password")


async def login_failed(session: AsyncSession, user_id: uuid.UUID | None, reason: str, method: str) -> None:
    """A refused sign-in, on record. An attempt on an unknown address names no one (and never keeps what
    was typed: a password pasted into the email field, or a code, must not land in the trail)."""
    await audit.record(
        session,
        action=AuditAction.login_failed,
        subject_id=user_id,
        details={"reason": reason, "method": method, "known_account": user_id is not None},
    )


async def issue_session(
    session: AsyncSession, ctx: Container, user: User, family_id: uuid.UUID | None = None
) -> TokenPair:
    family_id = family_id or uuid.uuid4()
    access, _ = ctx.tokens.issue(user.id, "access")
    refresh, refresh_claims = ctx.tokens.issue(user.id, "refresh", family_id=family_id)
    await RefreshTokenRepository(session).add(
        RefreshToken(
            id=uuid.UUID(refresh_claims.jti),
            user_id=user.id,
            family_id=family_id,
            expires_at=refresh_claims.expires_at,
        )
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        access_expires_in=int(ctx.tokens.access_ttl.total_seconds()),
        refresh_expires_in=int(ctx.tokens.refresh_ttl.total_seconds()),
    )


async def refresh(session: AsyncSession, ctx: Container, refresh_token: str) -> TokenPair:
    """Rotate: the presented token dies and a new pair is issued in the same family. Presenting a token
    that was already rotated means it was stolen (or the client is confused): the whole family dies."""
    claims = decode_local(ctx, refresh_token, "refresh")
    repository = RefreshTokenRepository(session)
    now = utcnow()
    token_id = uuid.UUID(claims.jti)
    if not await repository.mark_used(token_id, now):
        stored = await repository.get(token_id)
        if _within_grace(ctx, stored, now):
            assert stored is not None
            # Two tabs refreshed with the same token at once: the later one gets a pair of its own in
            # the same family instead of logging the user out.
            log.info("auth.refresh_within_grace", user_id=str(stored.user_id))
            return await _rotated(session, ctx, claims, stored)
        if stored is not None and stored.used_at is not None and stored.revoked_at is None:
            await repository.revoke_family(stored.family_id, now)
            log.warning(
                "auth.refresh_token_reused", user_id=str(stored.user_id), family_id=str(stored.family_id)
            )
            # The answer is 401, yet the revocation must be committed, not rolled back with the error.
            raise InvalidToken(keep_changes=True)
        raise InvalidToken()
    return await _rotated(session, ctx, claims, await repository.get(token_id))


def _within_grace(ctx: Container, stored: RefreshToken | None, now: datetime) -> bool:
    """Rotated moments ago (REFRESH_REUSE_GRACE_SECONDS) and its family still alive."""
    grace = ctx.settings.refresh_reuse_grace_seconds
    return (
        grace > 0
        and stored is not None
        and stored.used_at is not None
        and stored.revoked_at is None
        and stored.expires_at > now
        and now - stored.used_at <= timedelta(seconds=grace)
    )


async def _rotated(
    session: AsyncSession, ctx: Container, claims: LocalTokenClaims, stored: RefreshToken | None
) -> TokenPair:
    user = await users_service.get_active(session, claims.user_id)
    if stored is None or user is None or revoked_by_user(user, claims):
        raise InvalidToken()
    return await issue_session(session, ctx, user, family_id=stored.family_id)


async def logout(
    session: AsyncSession, ctx: Container, principal: Principal | None, refresh_token: str | None
) -> None:
    if principal is not None and principal.access is not None:
        await RevokedAccessTokenRepository(session).revoke(principal.access.jti, principal.access.expires_at)
        forget_callers({principal.user.id})
    if refresh_token:
        try:
            claims = ctx.tokens.decode(refresh_token, "refresh")
        except InvalidLocalToken:
            return
        same_user = principal is None or claims.user_id == principal.user.id
        if same_user and claims.family_id is not None:
            await RefreshTokenRepository(session).revoke_family(claims.family_id, utcnow())


def revoked_by_user(user: User, claims: LocalTokenClaims) -> bool:
    if user.sessions_revoked_at is None:
        return False
    return claims.issued_at_ms <= int(user.sessions_revoked_at.timestamp() * 1000)


def decode_local(ctx: Container, token: str, token_type: str) -> LocalTokenClaims:
    try:
        return ctx.tokens.decode(token, token_type)  # type: ignore[arg-type]
    except InvalidLocalToken as exc:
        log.info("auth.token_refused", reason=str(exc))
        raise InvalidToken() from exc
