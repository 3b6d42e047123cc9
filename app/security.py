"""Password hashing and the local access/refresh JWTs."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jose import JWTError, jwt
from passlib.context import CryptContext

from app.config import Settings
from app.db.base import utcnow

TokenType = Literal["access", "refresh"]
LOCAL_ISSUER = "pixforge"
LOCAL_AUDIENCE = "pixforge-api"


class PasswordHasher:
    """Argon2id for new hashes; bcrypt hashes (imported accounts) still verify and are upgraded on the
    next successful login. Hashing is CPU-bound, so it runs in a worker thread."""

    def __init__(self, memory_kib: int, time_cost: int) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__time_cost=time_cost,
        )
        # Verified when the account does not exist, so "no such email" costs as much as "wrong password".
        self._decoy_hash = self._context.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(settings.password_hash_memory_kib, settings.password_hash_time_cost)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """(matches, replacement hash when the stored one uses an outdated scheme or cost)."""
        if password_hash is None:
            await asyncio.to_thread(self._context.verify, password, self._decoy_hash)
            return False, None
        try:
            return await asyncio.to_thread(self._context.verify_and_update, password, password_hash)
        except ValueError:  # an unrecognised or corrupt stored hash
            return False, None


@dataclass(frozen=True)
class LocalTokenClaims:
    user_id: uuid.UUID
    jti: str
    token_type: TokenType
    issued_at_ms: int  # unix milliseconds: orders a token against a revocation in the same second
    expires_at: datetime
    family_id: uuid.UUID | None = None


class InvalidLocalToken(Exception):
    """The token is not a valid local token of the expected type (reason kept for logs only)."""


class LocalTokenCodec:
    """HS256 tokens issued by this server. `typ` separates access from refresh tokens, so neither can
    stand in for the other."""

    def __init__(self, secret: str, access_ttl_seconds: int, refresh_ttl_seconds: int) -> None:
        self._secret = secret
        self.access_ttl = timedelta(seconds=access_ttl_seconds)
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalTokenCodec:
        return cls(
            settings.secret_key.get_secret_value(),
            settings.access_token_ttl_seconds,
            settings.refresh_token_ttl_seconds,
        )

    def issue(
        self, user_id: uuid.UUID, token_type: TokenType, family_id: uuid.UUID | None = None
    ) -> tuple[str, LocalTokenClaims]:
        now = utcnow()
        claims = LocalTokenClaims(
            user_id=user_id,
            jti=uuid.uuid4().hex,
            token_type=token_type,
            issued_at_ms=int(now.timestamp() * 1000),
            expires_at=now + (self.access_ttl if token_type == "access" else self.refresh_ttl),
            family_id=family_id,
        )
        payload: dict[str, Any] = {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": str(user_id),
            "jti": claims.jti,
            "typ": token_type,
            "iat": claims.issued_at_ms // 1000,
            "nbf": claims.issued_at_ms // 1000,
            "iat_ms": claims.issued_at_ms,
            "exp": int(claims.expires_at.timestamp()),
        }
        if family_id is not None:
            payload["fam"] = str(family_id)
        return jwt.encode(payload, self._secret, algorithm="HS256"), claims

    def decode(self, token: str, expected_type: TokenType) -> LocalTokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=LOCAL_AUDIENCE,
                issuer=LOCAL_ISSUER,
                options={"require_exp": True, "require_sub": True, "require_jti": True, "require_iat": True},
            )
        except JWTError as exc:
            raise InvalidLocalToken(str(exc)) from exc
        if payload.get("typ") != expected_type:
            raise InvalidLocalToken(f"expected a {expected_type} token")
        try:
            return LocalTokenClaims(
                user_id=uuid.UUID(payload["sub"]),
                jti=str(payload["jti"]),
                token_type=expected_type,
                issued_at_ms=int(payload["iat_ms"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=utcnow().tzinfo),
                family_id=uuid.UUID(payload["fam"]) if "fam" in payload else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLocalToken("malformed claims") from exc


def unverified_issuer(token: str) -> str | None:
    """Which issuer a bearer token claims, to pick the verifier; nothing is trusted from it."""
    try:
        issuer = jwt.get_unverified_claims(token).get("iss")
    except JWTError:
        return None
    return issuer if isinstance(issuer, str) else None


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """What a credential proved: whose it is and how it was presented (`via` is "local", "clerk" or
    "api_key"); `access` holds a local access token's claims (logout needs them)."""

    user_id: uuid.UUID
    via: str
    access: LocalTokenClaims | None = None


# Every cache of this process, so that a revocation written here reaches the caches of every app
# instance in it (tests run several).
_caller_caches: weakref.WeakSet[CallerCache] = weakref.WeakSet()


class CallerCache:
    """Credentials this process verified in the last `ttl_seconds` (a bounded LRU): the hot path's
    way around two lookups per request. Other processes learn of a revocation when their entry runs
    out, so `ttl_seconds` bounds how long a revoked credential may still pass there; this process
    forgets a user's entries as soon as it revokes (see `forget_users`)."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        # Verifications in progress, and how many requests wait on each.
        self._verifying: dict[str, tuple[asyncio.Lock, int]] = {}
        # Entries one request is verifying again while the others still use them.
        self._renewing: set[str] = set()
        _caller_caches.add(self)

    @asynccontextmanager
    async def verifying(self, credential: str) -> AsyncIterator[None]:
        """One verification of a credential at a time in this process: when its entry runs out, the
        requests that carry it at that moment wait for the first one's verification (and find the entry
        it put) rather than each repeat it, a query and a unit of work apiece."""
        lock, waiting = self._verifying.get(credential, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._verifying[credential] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._verifying[credential]
            if waiting == 1:
                del self._verifying[credential]
            else:
                self._verifying[credential] = (lock, waiting - 1)

    def get(self, credential: str) -> Caller | None:
        entry = self._entries.get(credential)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[credential]
            return None
        self._entries.move_to_end(credential)
        return entry[1]

    def renewal_due(self, credential: str) -> bool:
        """Whether this request should verify the credential again now: its entry is past half its time
        and no other request is renewing it (the caller then must call `renewed`). Renewing ahead keeps
        a busy credential from running out for everyone at once: when it did, every request carrying
        it waited for the one verification, and a crowd of clients saw a stall each second."""
        entry = self._entries.get(credential)
        if entry is None or credential in self._renewing:
            return False
        if entry[0] - time.monotonic() > self.ttl_seconds / 2:
            return False
        self._renewing.add(credential)
        return True

    def renewed(self, credential: str) -> None:
        self._renewing.discard(credential)

    def drop(self, credential: str) -> None:
        self._entries.pop(credential, None)

    def put(self, credential: str, caller: Caller) -> None:
        if self.ttl_seconds <= 0:
            return
        expires = time.monotonic() + self.ttl_seconds
        if caller.access is not None:
            expires = min(expires, time.monotonic() + (caller.access.expires_at - utcnow()).total_seconds())
        self._entries[credential] = (expires, caller)
        self._entries.move_to_end(credential)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, user_ids: set[uuid.UUID]) -> None:
        if not user_ids or not self._entries:
            return
        for credential in [c for c, (_, caller) in self._entries.items() if caller.user_id in user_ids]:
            del self._entries[credential]

    def forget_via(self, via: str) -> None:
        """Drop every entry proved one way (a key the issuer retired voids all its tokens at once)."""
        for credential in [c for c, (_, caller) in self._entries.items() if caller.via == via]:
            del self._entries[credential]


def forget_callers(user_ids: set[uuid.UUID]) -> None:
    """Drop these users' verified credentials from every cache of this process."""
    for cache in list(_caller_caches):
        cache.forget(user_ids)
