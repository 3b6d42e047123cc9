"""A fake Clerk instance speaking Clerk's real contracts (see providers.md §6).

* Frontend API JWKS: ``GET {issuer}/.well-known/jwks.json`` (public, no auth).
* Backend API JWKS: ``GET {backend_api_url}/v1/jwks`` with ``Authorization: Bearer <secret_key>`` (what
  ``clerk_backend_api`` calls when given a ``secret_key``).
* Session tokens: RS256 v2 JWTs with header ``kid``.
* Webhooks: the Clerk event envelope, signed by Svix (Standard Webhooks) with a ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import respx
from svix.webhooks import Webhook

from tests.fakes.keys import RsaKey, b64url


class _Default(enum.Enum):
    token = 0


DEFAULT = _Default.token
"""Sentinel: "use the fake's configured value" (as opposed to None, which omits the claim)."""

DEFAULT_SUB = "user_2abcDEF123"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def email_address_id(email: str) -> str:
    """A stable Clerk-style ``idn_…`` id per address, so created/updated payloads agree."""
    return "idn_" + hashlib.sha256(email.lower().encode()).hexdigest()[:27]


def user_payload(
    user_id: str,
    email: str,
    *,
    first_name: str | None = "Example",
    last_name: str | None = "Example",
    username: str | None = None,
    image_url: str = "https://img.clerk.com/fake-avatar",
    verified: bool = True,
    extra_emails: Iterable[str] = (),
    created_at: int | None = None,
    updated_at: int | None = None,
) -> dict[str, Any]:
    """``data`` of a ``user.created`` / ``user.updated`` event: the Clerk User object.

    ``email`` is the primary address (listed first); ``extra_emails`` are further addresses with the same
    verification status. Timestamps are milliseconds (default: now).
    """
    now = int(time.time() * 1000)
    status = "verified" if verified else "unverified"
    addresses = [
        {
            "email_address": address,
            "id": email_address_id(address),
            "linked_to": [],
            "object": "email_address",
            "verification": {"status": status, "strategy": "email_code"},
        }
        for address in (email, *extra_emails)
    ]
    return {
        "birthday": "",
        "created_at": now if created_at is None else created_at,
        "email_addresses": addresses,
        "external_accounts": [],
        "external_id": None,
        "first_name": first_name,
        "gender": "",
        "id": user_id,
        "image_url": image_url,
        "last_name": last_name,
        "last_sign_in_at": now,
        "object": "user",
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": email_address_id(email),
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "profile_image_url": image_url,
        "public_metadata": {},
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": now if updated_at is None else updated_at,
        "username": username,
        "web3_wallets": [],
    }


def deleted_payload(user_id: str) -> dict[str, Any]:
    """``data`` of a ``user.deleted`` event: a DeletedObject."""
    return {"deleted": True, "id": user_id, "object": "user"}


class FakeClerk:
    user_payload = staticmethod(user_payload)
    deleted_payload = staticmethod(deleted_payload)

    def __init__(
        self,
        router: respx.MockRouter,
        issuer: str = "https://fake-app.clerk.accounts.dev",
        authorized_party: str = "http://localhost:5173",
        *,
        backend_api_url: str = "https://api.clerk.com",
    ) -> None:
        self._issuer = issuer.rstrip("/")
        self.authorized_party = authorized_party
        self.backend_api_url = backend_api_url.rstrip("/")
        self.secret_key = "sk_test_" + secrets.token_urlsafe(24)
        self.svix_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")
        self.instance_id = "ins_123"
        self.jwks_requests = 0
        self.backend_jwks_requests = 0
        self._generation = 0
        self._key = RsaKey.generate(self._next_kid())
        self._published: list[RsaKey] = [self._key]
        self._all_keys: dict[str, RsaKey] = {self._key.kid: self._key}
        router.get(self.jwks_url).mock(side_effect=self._serve_jwks)
        router.get(self.backend_jwks_url).mock(side_effect=self._serve_backend_jwks)

    # -- JWKS --

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def jwks_url(self) -> str:
        return f"{self._issuer}/.well-known/jwks.json"

    @property
    def backend_jwks_url(self) -> str:
        return f"{self.backend_api_url}/v1/jwks"

    @property
    def current_key(self) -> RsaKey:
        return self._key

    @property
    def published_keys(self) -> list[RsaKey]:
        return list(self._published)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.public_jwk() for key in self._published]}

    def _serve_jwks(self, request: httpx.Request) -> httpx.Response:
        self.jwks_requests += 1
        return httpx.Response(200, json=self.jwks())

    def _serve_backend_jwks(self, request: httpx.Request) -> httpx.Response:
        self.backend_jwks_requests += 1
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            return httpx.Response(
                401,
                json={
                    "errors": [
                        {
                            "code": "authentication_invalid",
                            "message": "Invalid authentication",
                            "long_message": "The provided secret key is invalid.",
                        }
                    ]
                },
            )
        return httpx.Response(200, json=self.jwks())

    def _next_kid(self) -> str:
        self._generation += 1
        return f"ins_2fakeCLERKinstance_k{self._generation}"

    def rotate_key(self, *, keep_old: bool = False) -> None:
        """Sign from now on with a fresh key (new kid) and publish it; retire the old ones unless
        ``keep_old``."""
        self._key = RsaKey.generate(self._next_kid())
        self._all_keys[self._key.kid] = self._key
        self._published = [self._key, *self._published] if keep_old else [self._key]

    # -- session tokens --

    def session_claims(
        self,
        sub: str = DEFAULT_SUB,
        *,
        azp: str | _Default | None = DEFAULT,
        expires_in: int = 60,
        not_before_offset: int = -5,
        issued_at_offset: int = 0,
        issuer: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """v2 claims; every time offset is in seconds relative to now."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + expires_in,
            "fva": [0, -1],
            "iat": now + issued_at_offset,
            "iss": self._issuer if issuer is None else issuer,
            "jti": secrets.token_hex(10),
            "nbf": now + not_before_offset,
            "sid": "sess_" + secrets.token_hex(12),
            "sub": sub,
            "v": 2,
        }
        resolved_azp = self.authorized_party if azp is DEFAULT else azp
        if resolved_azp is not None:
            claims["azp"] = resolved_azp
        claims.update(extra or {})
        return dict(sorted(claims.items()))

    def session_token(
        self,
        sub: str = DEFAULT_SUB,
        *,
        azp: str | _Default | None = DEFAULT,
        expires_in: int = 60,
        not_before_offset: int = -5,
        issued_at_offset: int = 0,
        issuer: str | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """An RS256 session token signed with the current key.

        ``azp``: default = the fake's ``authorized_party``; ``None`` omits the claim.
        ``kid``: a kid this fake ever used (e.g. before ``rotate_key``) signs with that key; any other
        value keeps the current key but writes that kid in the header (kid mismatch).
        ``extra`` is merged last (e.g. ``{"sts": "pending"}``, ``{"o": {...}}``) and may override claims.
        """
        claims = self.session_claims(
            sub,
            azp=azp,
            expires_in=expires_in,
            not_before_offset=not_before_offset,
            issued_at_offset=issued_at_offset,
            issuer=issuer,
            extra=extra,
        )
        if kid is None:
            return self._key.sign(claims)
        key = self._all_keys.get(kid, self._key)
        return key.sign(claims, headers={"kid": kid})

    def token_signed_by_unknown_key(self, sub: str = DEFAULT_SUB, **options: Any) -> str:
        """A well-formed RS256 token whose kid (and key) this instance never published."""
        stranger = RsaKey.generate("ins_2fakeCLERKstranger")
        return stranger.sign(self.session_claims(sub, **options))

    def hs256_token_signed_with_public_key(self, sub: str = DEFAULT_SUB, **options: Any) -> str:
        """Algorithm confusion: ``alg=HS256`` with the published RSA public PEM as the HMAC secret.

        Built by hand because jose refuses a PEM as an HMAC key (which is the point of the defence)."""
        header = {"alg": "HS256", "kid": self._key.kid, "typ": "JWT"}
        signing_input = f"{_segment(header)}.{_segment(self.session_claims(sub, **options))}"
        mac = hmac.new(self._key.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def none_alg_token(self, sub: str = DEFAULT_SUB, **options: Any) -> str:
        """``alg=none`` with an empty signature: ``b64url(header).b64url(payload).``"""
        header = {"alg": "none", "kid": self._key.kid, "typ": "JWT"}
        return f"{_segment(header)}.{_segment(self.session_claims(sub, **options))}."

    # -- webhooks --

    def signed_webhook(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of one Svix delivery. The body is serialized once and signed as-is;
        ``timestamp`` (default now; naive = UTC) is both the event time and the ``svix-timestamp``.
        Re-use ``msg_id`` to simulate a redelivery (Svix retries keep the id)."""
        # svix signs `timestamp.replace(tzinfo=utc)`: normalise so header and signature agree.
        if timestamp is None:
            moment = datetime.now(UTC)
        elif timestamp.tzinfo is None:
            moment = timestamp.replace(tzinfo=UTC)
        else:
            moment = timestamp.astimezone(UTC)
        message_id = msg_id or "msg_" + secrets.token_urlsafe(18)
        envelope = {
            "data": data,
            "event_attributes": {"http_request": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}},
            "instance_id": self.instance_id,
            "object": "event",
            "timestamp": _ms(moment),
            "type": event_type,
        }
        body = json.dumps(envelope, separators=(",", ":"))
        signature = Webhook(self.svix_secret).sign(message_id, moment, body)
        headers = {
            "svix-id": message_id,
            "svix-timestamp": str(int(moment.timestamp())),
            "svix-signature": signature,
        }
        return body.encode(), headers


def _segment(part: dict[str, Any]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())
