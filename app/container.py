"""The process's long-lived collaborators, built once per app from settings. Tests swap members."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from app.config import Settings
from app.db.session import Database
from app.integrations.clerk import ClerkSessionVerifier
from app.integrations.email import EmailSender, build_email_sender
from app.integrations.google import GoogleOAuthClient
from app.integrations.rate_limit import RateLimiter
from app.security import LocalTokenCodec, PasswordHasher


@dataclass
class Container:
    settings: Settings
    database: Database
    http: httpx.AsyncClient
    passwords: PasswordHasher
    tokens: LocalTokenCodec
    email: EmailSender
    rate_limiter: RateLimiter
    clerk: ClerkSessionVerifier | None
    google: GoogleOAuthClient | None

    @classmethod
    def build(cls, settings: Settings, database: Database) -> Container:
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers={"User-Agent": "pixforge/0.1"},
        )
        return cls(
            settings=settings,
            database=database,
            http=http,
            passwords=PasswordHasher.from_settings(settings),
            tokens=LocalTokenCodec.from_settings(settings),
            email=build_email_sender(settings, http),
            rate_limiter=RateLimiter.for_redis_url(settings.redis_url, enabled=settings.rate_limits_enabled),
            clerk=_clerk(settings, http),
            google=_google(settings, http),
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.rate_limiter.aclose()


def _clerk(settings: Settings, http: httpx.AsyncClient) -> ClerkSessionVerifier | None:
    if not settings.clerk_issuer:
        return None
    issuer = settings.clerk_issuer.rstrip("/")
    return ClerkSessionVerifier(
        http,
        jwks_url=settings.clerk_jwks_url or f"{issuer}/.well-known/jwks.json",
        issuer=issuer,
        authorized_parties=settings.clerk_authorized_parties,
        clock_skew_seconds=settings.clerk_clock_skew_seconds,
        min_refresh_seconds=settings.clerk_jwks_min_refresh_seconds,
    )


def _google(settings: Settings, http: httpx.AsyncClient) -> GoogleOAuthClient | None:
    if not settings.google_client_id or not settings.google_client_secret:
        return None
    return GoogleOAuthClient(
        http,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret.get_secret_value(),
        auth_url=settings.google_auth_url,
        token_url=settings.google_token_url,
        jwks_url=settings.google_jwks_url,
    )
