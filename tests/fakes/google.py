"""A fake Google OAuth 2.0 / OpenID Connect provider (web-server flow with PKCE), see providers.md §7.

Routes registered on the respx router: discovery, ``POST token_url``, ``GET jwks_url`` and userinfo.
The "browser" (consent screen) is :meth:`FakeGoogle.authorize` / :meth:`FakeGoogle.deny`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import httpx
import respx

from tests.fakes.keys import RsaKey, b64url

# What Google echoes for `openid email profile` (callback `scope` and token response `scope`).
GRANTED_SCOPE = (
    "email profile openid "
    "https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile"
)
DEFAULT_SUB = "110169484474386276334"


@dataclass(frozen=True)
class GoogleIdentity:
    sub: str
    email: str
    email_verified: bool
    name: str
    given_name: str
    family_name: str
    picture: str
    hd: str | None = None

    def userinfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "sub": self.sub,
            "name": self.name,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "picture": self.picture,
            "email": self.email,
            "email_verified": self.email_verified,
        }
        if self.hd is not None:
            info["hd"] = self.hd
        return info


@dataclass
class IssuedCode:
    code: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    identity: GoogleIdentity
    used: bool = False
    params: dict[str, str] = field(default_factory=dict)


class FakeGoogle:
    def __init__(
        self,
        router: respx.MockRouter,
        client_id: str = "123.apps.googleusercontent.com",
        client_secret: str = "fake-secret",  # noqa: S107
        auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth",
        token_url: str = "https://oauth2.googleapis.com/token",  # noqa: S107
        jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs",
        issuer: str = "https://accounts.google.com",
        *,
        userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.auth_url = auth_url
        self.token_url = token_url
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.userinfo_url = userinfo_url
        self.discovery_url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        self.key = RsaKey.generate("fake-google-0c7d2a9e4b1f6a3c8e5d7b9a1f2c4e6d")
        self.id_token_lifetime = 3600
        # Real Google ID tokens from a code exchange carry at_hash; python-jose then insists on
        # jwt.decode(..., access_token=...) unless options={"verify_at_hash": False}.
        self.include_at_hash = True
        self.authorization_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.jwks_requests = 0
        self.codes: dict[str, IssuedCode] = {}
        self._access_tokens: dict[str, GoogleIdentity] = {}
        router.post(token_url).mock(side_effect=self._token)
        router.get(jwks_url).mock(side_effect=self._jwks)
        router.get(userinfo_url).mock(side_effect=self._userinfo)
        router.get(self.discovery_url).mock(side_effect=self._discovery)

    # -- the browser --

    def _parse_authorization_url(self, authorization_url: str) -> dict[str, str]:
        parts = urlsplit(authorization_url)
        endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}"
        assert endpoint == self.auth_url, f"redirected to {endpoint}, expected {self.auth_url}"
        raw = parse_qs(parts.query, keep_blank_values=True)
        duplicated = [name for name, values in raw.items() if len(values) > 1]
        assert not duplicated, f"repeated query parameters: {duplicated}"
        params = {name: values[0] for name, values in raw.items()}
        self.authorization_requests.append(params)
        assert params.get("client_id") == self.client_id, f"client_id={params.get('client_id')!r}"
        assert params.get("redirect_uri"), "redirect_uri missing"
        assert params.get("state"), "state missing"
        return params

    def authorize(
        self,
        authorization_url: str,
        *,
        sub: str = DEFAULT_SUB,
        email: str = "jane@example.com",
        email_verified: bool = True,
        name: str = "Jane Doe",
        picture: str = "https://lh3.googleusercontent.com/a/fake",
        hd: str | None = None,
    ) -> str:
        """The user consents: return the callback URL Google would redirect the browser to."""
        params = self._parse_authorization_url(authorization_url)
        assert params.get("response_type") == "code", f"response_type={params.get('response_type')!r}"
        scopes = set(params.get("scope", "").split(" "))
        assert {"openid", "email", "profile"} <= scopes, f"scope={params.get('scope')!r}"
        assert params.get("code_challenge_method") == "S256", "PKCE must use S256"
        challenge = params.get("code_challenge", "")
        assert len(challenge) == 43, f"code_challenge must be BASE64URL(SHA256(verifier)): {challenge!r}"
        given_name, _, family_name = name.partition(" ")
        identity = GoogleIdentity(
            sub=sub,
            email=email,
            email_verified=email_verified,
            name=name,
            given_name=given_name,
            family_name=family_name,
            picture=picture,
            hd=hd,
        )
        code = "4/0A" + secrets.token_urlsafe(40)
        self.codes[code] = IssuedCode(
            code=code,
            redirect_uri=params["redirect_uri"],
            code_challenge=challenge,
            nonce=params.get("nonce"),
            identity=identity,
            params=params,
        )
        return _with_query(
            params["redirect_uri"],
            {
                "state": params["state"],
                "code": code,
                "scope": GRANTED_SCOPE,
                "authuser": "0",
                "prompt": "consent",
            },
        )

    def deny(self, authorization_url: str) -> str:
        """The user clicks Cancel on the consent screen."""
        params = self._parse_authorization_url(authorization_url)
        return _with_query(params["redirect_uri"], {"error": "access_denied", "state": params["state"]})

    # -- tokens --

    def id_token(
        self,
        identity: GoogleIdentity,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        expires_in: int | None = None,
        key: RsaKey | None = None,
    ) -> str:
        """An RS256 ID token; the overrides let tests mint wrong-aud/iss, expired or foreign-key tokens."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer if issuer is None else issuer,
            "azp": self.client_id,
            "aud": self.client_id if audience is None else audience,
            "sub": identity.sub,
            "email": identity.email,
            "email_verified": identity.email_verified,
        }
        if access_token is not None and self.include_at_hash:
            claims["at_hash"] = b64url(hashlib.sha256(access_token.encode()).digest()[:16])
        if nonce is not None:
            claims["nonce"] = nonce
        if identity.hd is not None:
            claims["hd"] = identity.hd
        claims.update(
            {
                "name": identity.name,
                "picture": identity.picture,
                "given_name": identity.given_name,
                "family_name": identity.family_name,
                "iat": now,
                "exp": now + (self.id_token_lifetime if expires_in is None else expires_in),
            }
        )
        return (key or self.key).sign(claims)

    def _token(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _error(400, "invalid_request", "Invalid content type; expected form-encoded body.")
        raw = parse_qs(request.content.decode(), keep_blank_values=True)
        form = {name: values[0] for name, values in raw.items()}
        self.token_requests.append(form)

        grant_type = form.get("grant_type")
        if grant_type is None:
            return _error(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type == "refresh_token":
            return _error(400, "invalid_grant", "Bad Request")  # this fake never issues refresh tokens
        if grant_type != "authorization_code":
            return _error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

        client_id, client_secret = _client_credentials(request, form)
        if client_id != self.client_id:
            return _error(401, "invalid_client", "The OAuth client was not found.")
        if client_secret != self.client_secret:
            return _error(401, "invalid_client", "Unauthorized")

        code = form.get("code")
        if not code:
            return _error(400, "invalid_request", "Missing required parameter: code")
        issued = self.codes.get(code)
        if issued is None or issued.used:
            return _error(400, "invalid_grant", "Bad Request")
        if form.get("redirect_uri") != issued.redirect_uri:
            return _error(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier")
        if not verifier:
            return _error(400, "invalid_grant", "Missing code verifier.")
        if b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest()) != issued.code_challenge:
            return _error(400, "invalid_grant", "Invalid code verifier.")

        issued.used = True
        access_token = "ya29.a0Fake" + secrets.token_urlsafe(48)
        self._access_tokens[access_token] = issued.identity
        return httpx.Response(
            200,
            json={
                "access_token": access_token,
                "expires_in": 3599,
                "scope": GRANTED_SCOPE,
                "token_type": "Bearer",
                "id_token": self.id_token(issued.identity, nonce=issued.nonce, access_token=access_token),
            },
        )

    # -- other endpoints --

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.key.public_jwk()]}

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        self.jwks_requests += 1
        return httpx.Response(200, json=self.jwks(), headers={"cache-control": "public, max-age=21600"})

    def _userinfo(self, request: httpx.Request) -> httpx.Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        identity = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if identity is None:
            return httpx.Response(
                401,
                json={"error": "invalid_request", "error_description": "Invalid Credentials"},
                headers={
                    "www-authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                },
            )
        return httpx.Response(200, json=identity.userinfo())

    def _discovery(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "issuer": self.issuer,
                "authorization_endpoint": self.auth_url,
                "token_endpoint": self.token_url,
                "userinfo_endpoint": self.userinfo_url,
                "revocation_endpoint": "https://oauth2.googleapis.com/revoke",
                "jwks_uri": self.jwks_url,
                "response_types_supported": ["code", "token", "id_token", "code token", "code id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "claims_supported": [
                    "aud",
                    "email",
                    "email_verified",
                    "exp",
                    "family_name",
                    "given_name",
                    "iat",
                    "iss",
                    "name",
                    "picture",
                    "sub",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    "urn:ietf:params:oauth:grant-type:device_code",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer",
                ],
            },
        )


def _client_credentials(request: httpx.Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """client_secret_post (form fields) or client_secret_basic (Authorization: Basic)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, client_secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(client_secret)  # RFC 6749 §2.3.1
    return form.get("client_id"), form.get("client_secret")


def _error(status: int, error: str, description: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "error_description": description})


def _with_query(url: str, params: dict[str, str]) -> str:
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode(params)}"
