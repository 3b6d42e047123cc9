"""Sign-in with Google: the authorization redirect (state, PKCE, nonce) and the callback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from jose import JWTError, jwt
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import BadRequest, ProviderNotConfigured, ServiceUnavailable
from app.integrations.google import GoogleIdentity, GoogleOAuthClient, GoogleSignInFailed, GoogleUnavailable
from app.models import AuditAction, User
from app.services import audit
from app.services import auth as auth_service
from app.services import users as users_service

log = structlog.get_logger("app.google")
STATE_TTL = timedelta(minutes=10)
_STATE_AUDIENCE = "pixforge-google-state"


class GoogleSignInRefused(BadRequest):
    code = "google_sign_in_failed"
    default_detail = "Google sign-in failed; start again."


@dataclass(frozen=True)
class GoogleStart:
    authorization_url: str
    state_cookie: str  # signed, to be set httpOnly on the browser until the callback


def _client(ctx: Container) -> GoogleOAuthClient:
    if ctx.google is None:
        raise ProviderNotConfigured("Google sign-in is not configured on this server.")
    return ctx.google


def start(ctx: Container, *, redirect_uri: str | None = None) -> GoogleStart:
    """`redirect_uri`: the callback Google sends the browser back to (a compat router has its own);
    GOOGLE_REDIRECT_URI when not given. The callback must complete with the same one."""
    client = _client(ctx)
    state, verifier, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = client.authorization_url(
        redirect_uri=redirect_uri or ctx.settings.resolved_google_redirect_uri,
        state=state,
        code_challenge=challenge,
        nonce=nonce,
    )
    # The browser carries its own state, verifier and nonce, signed by us: no server-side session table,
    # and a callback from another browser (login CSRF) has no matching cookie.
    cookie = jwt.encode(
        {
            "aud": _STATE_AUDIENCE,
            "exp": int((utcnow() + STATE_TTL).timestamp()),
            "state": state,
            "verifier": verifier,
            "nonce": nonce,
        },
        ctx.settings.secret_key.get_secret_value(),
        algorithm="HS256",
    )
    return GoogleStart(url, cookie)


async def complete(
    session: AsyncSession,
    ctx: Container,
    *,
    code: str | None,
    state: str | None,
    error: str | None,
    state_cookie: str | None,
    redirect_uri: str | None = None,
) -> auth_service.TokenPair:
    """`redirect_uri`: the one `start` was given (Google refuses the code for any other)."""
    client = _client(ctx)
    saved = _read_state_cookie(ctx, state_cookie)
    if saved is None or not state or not hmac.compare_digest(str(saved["state"]).encode(), state.encode()):
        raise GoogleSignInRefused("The sign-in state does not match; start again from the sign-in button.")
    if error or not code:
        raise GoogleSignInRefused(f"Google did not sign you in ({error or 'no code'}).")
    try:
        identity = await client.exchange_code(
            code=code,
            code_verifier=str(saved["verifier"]),
            redirect_uri=redirect_uri or ctx.settings.resolved_google_redirect_uri,
            nonce=str(saved["nonce"]),
        )
    except GoogleSignInFailed as exc:
        log.info("google.sign_in_refused", reason=str(exc))
        await _login_failed(session, None, "google_refused")
        # The audit row is committed with the 400 (nothing else was changed).
        raise GoogleSignInRefused(keep_changes=True) from exc
    except GoogleUnavailable as exc:
        raise ServiceUnavailable("Google is not answering; retry shortly.") from exc
    user = await _find_or_create(session, ctx, identity)
    user.last_login_at = utcnow()
    await audit.record(
        session,
        action=AuditAction.login_succeeded,
        actor_id=user.id,
        subject_id=user.id,
        details={"method": "google"},
    )
    return await auth_service.issue_session(session, ctx, user)


async def _login_failed(session: AsyncSession, user: User | None, reason: str) -> None:
    """A refused Google sign-in, on record like a refused password login (never Google's code or
    tokens)."""
    await audit.record(
        session,
        action=AuditAction.login_failed,
        subject_id=user.id if user is not None else None,
        details={"reason": reason, "method": "google", "known_account": user is not None},
    )


def _read_state_cookie(ctx: Container, cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            cookie, ctx.settings.secret_key.get_secret_value(), algorithms=["HS256"], audience=_STATE_AUDIENCE
        )
    except JWTError:
        return None
    return claims


async def _find_or_create(session: AsyncSession, ctx: Container, identity: GoogleIdentity) -> User:
    user = await users_service.find_or_create_external(
        session,
        ctx.settings,
        provider="google",
        external_id=identity.subject,
        email=users_service.normalize_email(identity.email) if identity.email else None,
        email_verified=identity.email_verified,
        name=identity.name,
        photo_url=identity.picture,
    )
    if not users_service.is_open(user):
        # A closed account is found as it is, unchanged: the audit row is all this request commits.
        await _login_failed(session, user, "account_closed")
        raise GoogleSignInRefused("This account is closed.", keep_changes=True)
    return user
