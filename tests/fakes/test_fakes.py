"""Self-tests: the fakes speak the real contracts (tokens verify, attacks don't, codes are one-time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import respx
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError
from svix.webhooks import Webhook, WebhookVerificationError

from tests.fakes.clerk import FakeClerk
from tests.fakes.google import GRANTED_SCOPE, FakeGoogle
from tests.fakes.keys import RsaKey, b64url

REDIRECT_URI = "http://testserver/auth/google/callback"


async def fetch_json(url: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.get(url, **kwargs)
    response.raise_for_status()
    return response.json()


def key_for(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    matches: list[dict[str, Any]] = [key for key in jwks["keys"] if key["kid"] == kid]
    if not matches:
        raise LookupError(kid)
    return matches[0]


def verify_clerk(token: str, jwks: dict[str, Any], clerk: FakeClerk) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, key_for(token, jwks), algorithms=["RS256"], issuer=clerk.issuer
    )
    return claims


# -- keys --


def test_keys_are_cached_per_kid_and_publish_a_proper_jwk() -> None:
    key = RsaKey.generate("test-kid")
    assert RsaKey.generate("test-kid") is key
    jwk = key.public_jwk()
    assert jwk["kty"] == "RSA"
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "RS256"
    assert jwk["kid"] == "test-kid"
    assert jwk["e"] == "AQAB"
    assert "=" not in jwk["n"]
    assert int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big").bit_length() == 2048
    token = key.sign({"sub": "x"})
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": "test-kid", "typ": "JWT"}
    assert jwt.decode(token, jwk, algorithms=["RS256"]) == {"sub": "x"}
    assert jwt.decode(token, key.public_pem, algorithms=["RS256"]) == {"sub": "x"}


# -- Clerk session tokens --


async def test_clerk_token_verifies_against_served_jwks(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    token = clerk.session_token()
    jwks = await fetch_json(clerk.jwks_url)
    assert clerk.jwks_requests == 1
    assert jwks["keys"][0].keys() == {"kty", "use", "alg", "kid", "n", "e"}

    claims = verify_clerk(token, jwks, clerk)
    assert claims["sub"] == "user_2abcDEF123"
    assert claims["azp"] == "http://localhost:5173"
    assert claims["iss"] == "https://fake-app.clerk.accounts.dev"
    assert claims["v"] == 2
    assert claims["fva"] == [0, -1]
    assert claims["sid"].startswith("sess_")
    assert claims["jti"]
    assert claims["exp"] - claims["iat"] == 60
    assert claims["iat"] - claims["nbf"] == 5
    assert jwt.get_unverified_header(token)["kid"] == clerk.current_key.kid


async def test_clerk_azp_issuer_and_extra_claims(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http, issuer="https://clerk.example.test", authorized_party="https://app.test")
    jwks = await fetch_json(clerk.jwks_url)
    assert verify_clerk(clerk.session_token(), jwks, clerk)["azp"] == "https://app.test"
    assert "azp" not in verify_clerk(clerk.session_token(azp=None), jwks, clerk)
    assert (
        verify_clerk(clerk.session_token(azp="https://evil.test"), jwks, clerk)["azp"] == "https://evil.test"
    )
    assert verify_clerk(clerk.session_token(extra={"sts": "pending"}), jwks, clerk)["sts"] == "pending"
    with pytest.raises(JWTClaimsError):
        verify_clerk(clerk.session_token(issuer="https://other.clerk.accounts.dev"), jwks, clerk)


async def test_clerk_time_claims(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    jwks = await fetch_json(clerk.jwks_url)
    with pytest.raises(ExpiredSignatureError):
        verify_clerk(
            clerk.session_token(expires_in=-30, issued_at_offset=-90, not_before_offset=-95), jwks, clerk
        )
    with pytest.raises(JWTClaimsError, match="not yet valid"):
        verify_clerk(clerk.session_token(not_before_offset=30), jwks, clerk)


async def test_clerk_key_rotation(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    old_kid = clerk.current_key.kid
    old_token = clerk.session_token()

    clerk.rotate_key()
    new_token = clerk.session_token()
    jwks = await fetch_json(clerk.jwks_url)
    assert [key["kid"] for key in jwks["keys"]] == [clerk.current_key.kid]
    assert clerk.current_key.kid != old_kid
    assert verify_clerk(new_token, jwks, clerk)["sub"] == "user_2abcDEF123"
    with pytest.raises(LookupError):
        verify_clerk(old_token, jwks, clerk)
    with pytest.raises(JWTError):
        jwt.decode(old_token, jwks, algorithms=["RS256"])

    clerk.rotate_key(keep_old=True)
    jwks = await fetch_json(clerk.jwks_url)
    assert len(jwks["keys"]) == 2
    assert verify_clerk(clerk.session_token(), jwks, clerk)
    assert verify_clerk(new_token, jwks, clerk)
    assert clerk.jwks_requests == 2

    # A kid the fake used before signs with that key; an unknown kid only changes the header.
    previous_kid = jwt.get_unverified_header(new_token)["kid"]
    assert verify_clerk(clerk.session_token(kid=previous_kid), jwks, clerk)
    mismatched = clerk.session_token(kid=previous_kid + "x")
    assert jwt.get_unverified_header(mismatched)["kid"] == previous_kid + "x"


async def test_clerk_backend_jwks_needs_the_secret_key(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    jwks = await fetch_json(clerk.backend_jwks_url, headers={"Authorization": f"Bearer {clerk.secret_key}"})
    assert verify_clerk(clerk.session_token(), jwks, clerk)
    async with httpx.AsyncClient() as client:
        response = await client.get(clerk.backend_jwks_url, headers={"Authorization": "Bearer sk_test_nope"})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "authentication_invalid"
    assert clerk.backend_jwks_requests == 2
    assert clerk.jwks_requests == 0


# -- Clerk attack tokens --


async def test_token_from_unknown_key_does_not_verify(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    token = clerk.token_signed_by_unknown_key(sub="user_mallory")
    jwks = await fetch_json(clerk.jwks_url)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] not in {key["kid"] for key in jwks["keys"]}
    assert jwt.get_unverified_claims(token)["sub"] == "user_mallory"
    with pytest.raises(JWTError):
        jwt.decode(token, jwks, algorithms=["RS256"])
    with pytest.raises(JWTError):  # not even when forced onto the published key
        jwt.decode(token, jwks["keys"][0], algorithms=["RS256"])


async def test_hs256_confusion_token_is_real_but_rejected(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    token = clerk.hs256_token_signed_with_public_key(sub="user_mallory")
    jwks = await fetch_json(clerk.jwks_url)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"] == clerk.current_key.kid

    # It really is HMAC-SHA256 keyed with the published public PEM (what a naive verifier would accept)...
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(
        clerk.current_key.public_pem.encode(), signing_input.encode(), hashlib.sha256
    ).digest()
    assert signature == b64url(expected)

    # ...and is rejected once RS256 is enforced, whichever form the key takes.
    for key in (jwks, key_for(token, jwks), clerk.current_key.public_pem):
        with pytest.raises(JWTError):
            jwt.decode(token, key, algorithms=["RS256"])


async def test_none_alg_token_is_rejected(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    token = clerk.none_alg_token()
    header_segment, payload_segment, signature = token.split(".")
    assert signature == ""
    assert json.loads(base64.urlsafe_b64decode(header_segment + "=="))["alg"] == "none"
    assert json.loads(base64.urlsafe_b64decode(payload_segment + "=="))["sub"] == "user_2abcDEF123"
    jwks = await fetch_json(clerk.jwks_url)
    for key in (jwks, key_for(token, jwks)):
        with pytest.raises(JWTError):
            jwt.decode(token, key, algorithms=["RS256"])


# -- Clerk webhooks --


def test_webhook_signature_verifies_and_envelope_is_clerk_shaped(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    assert clerk.svix_secret.startswith("whsec_")
    assert len(base64.b64decode(clerk.svix_secret.removeprefix("whsec_"))) == 24
    data = clerk.user_payload(
        "user_29w83sxmDNGwOuEthce5gg56FcC", "example@example.org", extra_emails=["b@x.org"]
    )
    body, headers = clerk.signed_webhook("user.created", data)

    assert headers.keys() == {"svix-id", "svix-timestamp", "svix-signature"}
    assert headers["svix-id"].startswith("msg_")
    assert headers["svix-signature"].startswith("v1,")
    Webhook(clerk.svix_secret).verify(body, headers)  # raises on failure

    event = json.loads(body)
    assert event.keys() == {"data", "event_attributes", "instance_id", "object", "timestamp", "type"}
    assert event["object"] == "event"
    assert event["type"] == "user.created"
    assert event["instance_id"] == "ins_123"
    assert abs(event["timestamp"] // 1000 - int(headers["svix-timestamp"])) <= 1
    user = event["data"]
    assert user["object"] == "user"
    assert user["id"] == "user_29w83sxmDNGwOuEthce5gg56FcC"
    primary = [e for e in user["email_addresses"] if e["id"] == user["primary_email_address_id"]]
    assert [e["email_address"] for e in primary] == ["example@example.org"]
    assert [e["email_address"] for e in user["email_addresses"]] == ["example@example.org", "b@x.org"]
    assert primary[0]["verification"]["status"] == "verified"
    assert user["username"] is None
    assert user["first_name"] == "Example"

    unverified = clerk.user_payload("user_1", "u@x.org", verified=False)
    assert unverified["email_addresses"][0]["verification"]["status"] == "unverified"
    assert clerk.deleted_payload("user_1") == {"deleted": True, "id": "user_1", "object": "user"}


def test_webhook_signature_fails_after_tampering(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    body, headers = clerk.signed_webhook("user.deleted", clerk.deleted_payload("user_1"), msg_id="msg_fixed")
    assert headers["svix-id"] == "msg_fixed"
    webhook = Webhook(clerk.svix_secret)

    with pytest.raises(WebhookVerificationError):
        webhook.verify(body.replace(b"user_1", b"user_2"), headers)
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body, {**headers, "svix-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body, {**headers, "svix-timestamp": str(int(headers["svix-timestamp"]) + 1)})
    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(body, headers)


def test_webhook_timestamp_is_signed_as_given(outside_http: respx.MockRouter) -> None:
    clerk = FakeClerk(outside_http)
    webhook = Webhook(clerk.svix_secret)
    stale = datetime.now(UTC) - timedelta(minutes=10)
    body, headers = clerk.signed_webhook("user.updated", {"id": "user_1"}, timestamp=stale)
    assert headers["svix-timestamp"] == str(int(stale.timestamp()))
    assert json.loads(body)["timestamp"] == int(stale.timestamp() * 1000)
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhook.verify(body, headers)

    # A non-UTC aware timestamp still produces a signature that matches its header.
    recent = datetime.now(timezone(timedelta(hours=5))) - timedelta(minutes=1)
    body, headers = clerk.signed_webhook("user.updated", {"id": "user_1"}, timestamp=recent)
    webhook.verify(body, headers)


# -- Google --


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def authorization_url(google: FakeGoogle, challenge: str, **overrides: str) -> str:
    params = {
        "client_id": google.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "state-" + secrets.token_urlsafe(8),
        "nonce": "nonce-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"{google.auth_url}?{urlencode(params)}"


def callback_params(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT_URI
    return {name: values[0] for name, values in parse_qs(parts.query).items()}


async def exchange(google: FakeGoogle, code: str, verifier: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **overrides,
    }
    async with httpx.AsyncClient() as client:
        return await client.post(google.token_url, data=form)


async def test_google_happy_path(outside_http: respx.MockRouter) -> None:
    google = FakeGoogle(outside_http)
    verifier, challenge = pkce_pair()
    url = authorization_url(google, challenge)
    callback = callback_params(google.authorize(url, sub="42", email="ann@example.com", name="Ann Lee"))
    assert callback["state"] == parse_qs(urlsplit(url).query)["state"][0]
    assert callback["scope"] == GRANTED_SCOPE
    assert callback["code"].startswith("4/0A")

    response = await exchange(google, callback["code"], verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens.keys() == {"access_token", "expires_in", "scope", "token_type", "id_token"}
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3599
    assert google.token_requests[-1]["code_verifier"] == verifier

    jwks = await fetch_json(google.jwks_url)
    claims = jwt.decode(
        tokens["id_token"],
        key_for(tokens["id_token"], jwks),
        algorithms=["RS256"],
        audience=google.client_id,
        issuer="https://accounts.google.com",
        access_token=tokens["access_token"],
    )
    assert claims["aud"] == claims["azp"] == "123.apps.googleusercontent.com"
    assert claims["sub"] == "42"
    assert claims["email"] == "ann@example.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Ann Lee"
    assert claims["given_name"] == "Ann"
    assert claims["family_name"] == "Lee"
    assert claims["nonce"] == "nonce-123"
    assert claims["picture"]
    assert claims["exp"] > claims["iat"]
    with pytest.raises(JWTClaimsError):
        jwt.decode(
            tokens["id_token"],
            jwks,
            algorithms=["RS256"],
            audience="someone-else",
            options={"verify_at_hash": False},
        )

    userinfo = await fetch_json(
        google.userinfo_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo["sub"] == "42"
    assert userinfo["email"] == "ann@example.com"
    discovery = await fetch_json(google.discovery_url)
    assert discovery["token_endpoint"] == google.token_url
    assert discovery["jwks_uri"] == google.jwks_url


async def test_google_code_is_one_time(outside_http: respx.MockRouter) -> None:
    google = FakeGoogle(outside_http)
    verifier, challenge = pkce_pair()
    code = callback_params(google.authorize(authorization_url(google, challenge)))["code"]
    assert (await exchange(google, code, verifier)).status_code == 200
    reused = await exchange(google, code, verifier)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    unknown = await exchange(google, "4/0Anever-issued", verifier)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_grant"
    assert len(google.token_requests) == 3


async def test_google_pkce_and_redirect_uri_are_enforced(outside_http: respx.MockRouter) -> None:
    google = FakeGoogle(outside_http)
    verifier, challenge = pkce_pair()
    code = callback_params(google.authorize(authorization_url(google, challenge)))["code"]

    wrong = await exchange(google, code, pkce_pair()[0])
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid code verifier.",
    }
    missing = await exchange(google, code, "")
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_grant"
    mismatch = await exchange(google, code, verifier, redirect_uri="http://evil.test/callback")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "redirect_uri_mismatch"
    # Failed attempts don't burn the code; the right verifier still works once.
    assert (await exchange(google, code, verifier)).status_code == 200


async def test_google_client_authentication(outside_http: respx.MockRouter) -> None:
    google = FakeGoogle(outside_http)
    verifier, challenge = pkce_pair()
    code = callback_params(google.authorize(authorization_url(google, challenge)))["code"]

    bad_secret = await exchange(google, code, verifier, client_secret="nope")
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    bad_id = await exchange(google, code, verifier, client_id="999.apps.googleusercontent.com")
    assert bad_id.status_code == 401
    assert bad_id.json()["error"] == "invalid_client"
    bad_grant = await exchange(google, code, verifier, grant_type="password")
    assert bad_grant.status_code == 400
    assert bad_grant.json()["error"] == "unsupported_grant_type"

    # client_secret_basic (authlib's default) is accepted too.
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            google.token_url, data=form, auth=(google.client_id, google.client_secret)
        )
    assert response.status_code == 200, response.text


async def test_google_deny_and_authorization_request_checks(outside_http: respx.MockRouter) -> None:
    google = FakeGoogle(outside_http)
    _, challenge = pkce_pair()
    url = authorization_url(google, challenge, state="s-1")
    assert callback_params(google.deny(url)) == {"error": "access_denied", "state": "s-1"}

    with pytest.raises(AssertionError, match="S256"):
        google.authorize(authorization_url(google, challenge, code_challenge_method="plain"))
    with pytest.raises(AssertionError, match="scope"):
        google.authorize(authorization_url(google, challenge, scope="openid"))
    with pytest.raises(AssertionError, match="state"):
        google.authorize(authorization_url(google, challenge, state=""))
    with pytest.raises(AssertionError, match="client_id"):
        google.authorize(authorization_url(google, challenge, client_id="other"))
    assert len(google.authorization_requests) == 5
