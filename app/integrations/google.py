"""Google OAuth 2.0 / OpenID Connect, web server flow with PKCE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from jose import JWTError, jwt

log = structlog.get_logger("app.integrations.google")

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class GoogleSignInFailed(Exception):
    """The code exchange or the ID token was refused (reason for logs only)."""


class GoogleUnavailable(Exception):
    pass


@dataclass(frozen=True)
class GoogleIdentity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    picture: str | None


class GoogleOAuthClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        client_id: str,
        client_secret: str,
        auth_url: str,
        token_url: str,
        jwks_url: str,
    ) -> None:
        self._http = http
        self.client_id = client_id
        self._client_secret = client_secret
        self._auth_url = auth_url
        self._token_url = token_url
        self._jwks_url = jwks_url

    def authorization_url(self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str) -> str:
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": "openid email profile",
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                "access_type": "online",
                "prompt": "select_account",
            }
        )
        return f"{self._auth_url}?{query}"

    async def exchange_code(
        self, *, code: str, code_verifier: str, redirect_uri: str, nonce: str
    ) -> GoogleIdentity:
        try:
            response = await self._http.post(
                self._token_url,
                data={
                    "code": code,
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                    "redirect_uri": redirect_uri,
                    "grant_type": "authorization_code",
                    "code_verifier": code_verifier,
                },
                headers={"Accept": "application/json"},
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise GoogleUnavailable("Google's token endpoint did not answer.") from exc
        if response.status_code >= 500:
            raise GoogleUnavailable(f"Google's token endpoint answered {response.status_code}.")
        body = _json(response)
        if response.status_code != 200 or "id_token" not in body:
            raise GoogleSignInFailed(f"token exchange refused: {body.get('error', response.status_code)}")
        return await self._verify_id_token(str(body["id_token"]), nonce)

    async def _verify_id_token(self, id_token: str, nonce: str) -> GoogleIdentity:
        try:
            header = jwt.get_unverified_header(id_token)
        except JWTError as exc:
            raise GoogleSignInFailed("unreadable id_token") from exc
        if header.get("alg") != "RS256":
            raise GoogleSignInFailed("id_token algorithm refused")
        key = await self._key(str(header.get("kid")))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=["RS256"],
                audience=self.client_id,
                options={"verify_at_hash": False, "leeway": 30},
            )
        except JWTError as exc:
            raise GoogleSignInFailed(f"id_token refused: {exc}") from exc
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise GoogleSignInFailed("id_token issuer refused")
        if claims.get("nonce") != nonce:
            raise GoogleSignInFailed("id_token nonce mismatch")
        email = claims.get("email")
        return GoogleIdentity(
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
            picture=claims.get("picture") if isinstance(claims.get("picture"), str) else None,
        )

    async def _key(self, kid: str) -> dict[str, Any]:
        # Sign-ins are rare next to API calls, so the key set is fetched per sign-in: rotation just works.
        try:
            response = await self._http.get(self._jwks_url, timeout=10.0)
            response.raise_for_status()
            keys = response.json()["keys"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise GoogleUnavailable("Google's signing keys could not be fetched.") from exc
        for key in keys:
            if isinstance(key, dict) and key.get("kid") == kid:
                return key
        raise GoogleSignInFailed("id_token signed by an unknown key")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
