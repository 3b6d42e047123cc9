"""RSA signing keys for the identity fakes (Clerk session tokens, Google ID tokens)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

# Key generation costs ~50-100 ms; one key per kid for the whole test session keeps the suite fast.
_KEYS: dict[str, RsaKey] = {}


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class RsaKey:
    kid: str
    private_pem: str
    public_pem: str
    n: int
    e: int

    @classmethod
    def generate(cls, kid: str) -> RsaKey:
        """A 2048-bit RSA key; the same kid always yields the same (cached) key."""
        cached = _KEYS.get(kid)
        if cached is not None:
            return cached
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key()
        numbers = public.public_numbers()
        key = cls(
            kid=kid,
            private_pem=private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii"),
            public_pem=public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii"),
            n=numbers.n,
            e=numbers.e,
        )
        _KEYS[kid] = key
        return key

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _uint_b64url(self.n),
            "e": _uint_b64url(self.e),
        }

    def sign(
        self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None, algorithm: str = "RS256"
    ) -> str:
        """A compact JWS; the header carries this key's kid unless `headers` overrides it."""
        token: str = jwt.encode(
            claims, self.private_pem, algorithm=algorithm, headers={"kid": self.kid, **(headers or {})}
        )
        return token
