"""Resolving a bearer credential (a local access token, a Clerk session token, an API key) to its
caller: verified in full, or from this process's short cache of verified credentials."""

from __future__ import annotations

import hmac
import uuid
from datetime import timedelta

import structlog
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from app.container import Container
from app.db.base import utcnow
from app.db.fair_pool import served_first
from app.errors import ServiceUnavailable
from app.integrations.clerk import ClerkUnavailable, InvalidClerkToken
from app.models import ApiKey, User
from app.repositories.auth_tokens import ApiKeyRepository
from app.repositories.users import UserRepository
from app.security import LOCAL_ISSUER, Caller, forget_callers, sha256_hex, unverified_issuer
from app.services import users as users_service
from app.services.auth import API_KEY_PREFIX, InvalidToken, Principal, decode_local, revoked_by_user

log = structlog.get_logger("app.auth")


async def identify(ctx: Container, credential: str) -> Caller:
    """Whose credential this is, from this process's cache of the last AUTH_CACHE_SECONDS, else verified
    in full (`authenticate`) in a unit of work of its own: what verifying writes (a first-time Clerk
    user) is committed, and its connection is back in the pool before the caller's request takes one.
    A busy credential is verified again by one of its requests before its entry runs out."""
    cached = ctx.callers.get(credential)
    if cached is not None:
        if not ctx.callers.renewal_due(credential):
            return cached
        try:
            return await _verify(ctx, credential)
        finally:
            ctx.callers.renewed(credential)
    async with ctx.callers.verifying(credential):
        cached = ctx.callers.get(credential)  # verified meanwhile by a request that carried it too
        if cached is not None:
            return cached
        return await _verify(ctx, credential)


async def _verify(ctx: Container, credential: str) -> Caller:
    try:
        # Ahead of the requests queued for a connection: under a crowd, every request that carries this
        # credential waits on this one lookup once its entry runs out (measured at 256 clients: 1.5 s).
        with served_first():
            async with ctx.database.session_scope() as session:
                principal = await authenticate(session, ctx, credential)
    except InvalidToken:
        ctx.callers.drop(credential)  # ended since it was cached: refused from now on
        raise
    caller = Caller(principal.user.id, principal.via, principal.access)
    ctx.callers.put(credential, caller)
    return caller


async def principal_of(session: AsyncSession, caller: Caller) -> Principal:
    """The caller with its account row, checked again: an account closed since the credential was
    verified is refused here at once."""
    user = await session.get(User, caller.user_id)
    if user is None or not users_service.is_open(user):
        raise InvalidToken()
    if caller.access is not None and revoked_by_user(user, caller.access):
        raise InvalidToken()
    return Principal(user, caller.via, caller.access)


# What ends a user's credentials: closing or erasing the account, revoking its sessions, revoking a key.
_ENDING_USER_FIELDS = ("is_active", "erased_at", "sessions_revoked_at")


@event.listens_for(Session, "after_flush")
def _forget_ended_callers(session: Session, _flush: UOWTransaction) -> None:
    """Whatever code ends a credential through the ORM, this process stops trusting its cached
    verification at once (at the flush: a rollback afterwards only costs a lookup)."""
    ended: set[uuid.UUID] = set()
    for instance in (*session.dirty, *session.deleted):
        if isinstance(instance, User):
            state = inspect(instance)
            if instance in session.deleted or any(
                state.attrs[name].history.has_changes() for name in _ENDING_USER_FIELDS
            ):
                ended.add(instance.id)
        elif isinstance(instance, ApiKey):
            ended.add(instance.user_id)
    forget_callers(ended)


async def authenticate(session: AsyncSession, ctx: Container, credential: str) -> Principal:
    if credential.startswith(API_KEY_PREFIX):
        return await _authenticate_api_key(session, ctx, credential)
    issuer = unverified_issuer(credential)
    if issuer == LOCAL_ISSUER:
        return await _authenticate_local(session, ctx, credential)
    if ctx.clerk is not None and issuer == ctx.clerk.issuer:
        return await _authenticate_clerk(session, ctx, credential)
    raise InvalidToken()


async def _authenticate_local(session: AsyncSession, ctx: Container, token: str) -> Principal:
    claims = decode_local(ctx, token, "access")
    found = await UserRepository(session).get_with_token_revocation(claims.user_id, claims.jti)
    if found is None:
        raise InvalidToken()
    user, token_revoked = found
    if token_revoked or not users_service.is_open(user) or revoked_by_user(user, claims):
        raise InvalidToken()
    return Principal(user, "local", claims)


async def _authenticate_clerk(session: AsyncSession, ctx: Container, token: str) -> Principal:
    assert ctx.clerk is not None
    try:
        clerk_session = await ctx.clerk.verify(token)
    except InvalidClerkToken as exc:
        log.info("auth.clerk_token_refused", reason=str(exc))
        raise InvalidToken() from exc
    except ClerkUnavailable as exc:
        raise ServiceUnavailable("Sign-in with Clerk is unavailable right now; retry shortly.") from exc
    from app.services import clerk as clerk_service

    user = await clerk_service.user_for_session(session, ctx, clerk_session.user_id)
    if user is None:
        raise InvalidToken()
    return Principal(user, "clerk")


async def _authenticate_api_key(session: AsyncSession, ctx: Container, credential: str) -> Principal:
    prefix, _, _ = credential.removeprefix(API_KEY_PREFIX).partition("_")
    found = await ApiKeyRepository(session).get_with_owner(prefix) if prefix else None
    # Compared in constant time so response timing does not reveal how much of a guess was right.
    if (
        found is None
        or found[0].revoked_at is not None
        or not hmac.compare_digest(found[0].secret_hash, sha256_hex(credential))
    ):
        raise InvalidToken()
    key, user = found
    if not users_service.is_open(user):
        raise InvalidToken()
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        # Its own short transaction: a read-only request stays read-only (no write lock held while it
        # runs a job), and the bookkeeping survives the request's own failure.
        async with ctx.database.session_scope() as bookkeeping:
            await ApiKeyRepository(bookkeeping).touch(key.id, now)
    return Principal(user, "api_key")
