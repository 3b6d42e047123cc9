"""Clerk: session JWTs verified against the instance's JWKS, and Svix-signed webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from jose import JWTError, jwt
from svix.webhooks import Webhook, WebhookVerificationError

log = structlog.get_logger("app.integrations.clerk")


class InvalidClerkToken(Exception):
    """The session token failed verification (the reason is for logs, never for the client)."""


class ClerkUnavailable(Exception):
    """The JWKS could not be fetched, so no token can be verified right now."""


class InvalidWebhookSignature(Exception):
    pass


@dataclass(frozen=True)
class ClerkSession:
    user_id: str
    session_id: str | None
    claims: dict[str, Any]


class ClerkSessionVerifier:
    """RS256 only. Keys come from the JWKS URL and are cached by `kid`; an unknown `kid` (key rotation)
    refetches the set, at most once per `min_refresh_seconds` so forged kids cannot hammer Clerk."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        jwks_url: str,
        issuer: str,
        authorized_parties: list[str],
        clock_skew_seconds: int = 5,
        min_refresh_seconds: float = 30.0,
        on_keys_retired: Callable[[], None] | None = None,
    ) -> None:
        self._http = http
        self._jwks_url = jwks_url
        self.issuer = issuer
        self._authorized_parties = set(authorized_parties)
        self._skew = clock_skew_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        # Called when a refresh drops a kid: whatever remembers tokens verified with it must forget them.
        self._on_keys_retired = on_keys_retired

    async def verify(self, token: str) -> ClerkSession:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError as exc:
            raise InvalidClerkToken("unreadable header") from exc
        if header.get("alg") != "RS256":
            raise InvalidClerkToken(f"algorithm {header.get('alg')!r} refused")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidClerkToken("no kid")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require_exp": True, "require_sub": True, "leeway": self._skew},
            )
        except JWTError as exc:
            raise InvalidClerkToken(str(exc)) from exc
        if "nbf" not in claims:
            raise InvalidClerkToken("no nbf")
        if self._authorized_parties and claims.get("azp") not in self._authorized_parties:
            raise InvalidClerkToken("azp not authorized")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.startswith("user_"):
            raise InvalidClerkToken("sub is not a Clerk user id")
        session_id = claims.get("sid")
        return ClerkSession(subject, session_id if isinstance(session_id, str) else None, claims)

    async def _key(self, kid: str) -> dict[str, Any]:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_refresh():
                await self._refresh()
        if kid not in self._keys:
            if not self._keys:
                # Nothing was ever fetched (Clerk unreachable, refetch throttled): we cannot judge the token.
                raise ClerkUnavailable("Clerk's signing keys are not available yet.")
            raise InvalidClerkToken("unknown kid")
        return self._keys[kid]

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self._min_refresh

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._http.get(self._jwks_url, timeout=5.0)
            response.raise_for_status()
            keys = response.json()["keys"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("clerk.jwks_fetch_failed", error_type=type(exc).__name__)
            if not self._keys:
                raise ClerkUnavailable("Clerk's signing keys could not be fetched.") from exc
            return
        retired = set(self._keys)
        self._keys = {
            key["kid"]: key
            for key in keys
            if isinstance(key, dict) and key.get("kty") == "RSA" and "kid" in key
        }
        retired -= set(self._keys)
        log.info("clerk.jwks_refreshed", kids=sorted(self._keys), retired=sorted(retired))
        if retired and self._on_keys_retired is not None:
            self._on_keys_retired()


def verify_svix_webhook(secret: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Verify a Clerk (Svix) delivery on its raw bytes (5 minute tolerance) and return the event."""
    try:
        Webhook(secret).verify(body, dict(headers))
    except (WebhookVerificationError, ValueError) as exc:  # ValueError: a signature that is not base64
        raise InvalidWebhookSignature(str(exc)) from exc
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise InvalidWebhookSignature("body is not JSON") from exc
    if not isinstance(event, dict):
        raise InvalidWebhookSignature("body is not a JSON object")
    return event
