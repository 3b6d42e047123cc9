from __future__ import annotations

import re
from typing import Annotated, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import ConfigDict, EmailStr, Field

from app.schemas.base import Schema

# What the schemas' NUL check (app/schemas/base.py) enforces, written into the document so a client
# (or a fuzzer) generating valid bodies from it sends none.
NO_NUL = r"^[^\x00]*$"
Password = Annotated[str, Field(min_length=8, max_length=128, pattern=NO_NUL)]


def _any_case(word: str) -> str:
    return "".join(f"[{char}{char.upper()}]" if char.isalpha() else re.escape(char) for char in word)


_SPECIAL_USE = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
_ATOM = r'[^@\s"\[\]\x00]+'
# Documents what the email validator refuses beyond `format: email`: quoted local parts, address
# literals, dotless domains and special-use domains (.test, .localhost, ...). Its 254 characters are
# RFC 5321's limit.
Email = Annotated[
    EmailStr,
    Field(
        max_length=254,
        examples=["jane@example.com"],
        json_schema_extra={"pattern": rf"^(?!.*[.@](?:{_SPECIAL_USE})\.?$){_ATOM}@{_ATOM}\.{_ATOM}$"},
    ),
]


class AuthIn(Schema):
    """Bodies of the account endpoints: a field they do not know is refused (422), not ignored, so what
    the OpenAPI document allows is exactly what they accept."""

    model_config = ConfigDict(extra="forbid")


class RegisterIn(AuthIn):
    email: Email
    password: Password
    name: Annotated[str, Field(max_length=200, pattern=NO_NUL)] | None = None


class RegisteredOut(Schema):
    id: str
    email: str
    message: str = "Check your inbox to confirm your email address."


class LoginIn(AuthIn):
    email: Annotated[str, Field(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class TokenOut(Schema):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_expires_in: int


RefreshToken = Annotated[str, Field(max_length=4096, pattern=NO_NUL)]


class RefreshIn(AuthIn):
    refresh_token: RefreshToken | None = None


class LogoutIn(AuthIn):
    refresh_token: RefreshToken | None = None


OneTimeToken = Annotated[str, Field(min_length=1, max_length=512, pattern=NO_NUL)]


class TokenIn(AuthIn):
    token: OneTimeToken


class EmailIn(AuthIn):
    email: Email


class PasswordResetIn(AuthIn):
    token: OneTimeToken
    password: Password


class MessageOut(Schema):
    message: str


class SessionCookiesOut(Schema):
    """A session sent as httpOnly cookies only (`?cookies=true`): the tokens stay out of reach of the
    page's scripts, so the body does not carry them."""

    token_type: Literal["cookie"] = "cookie"
    expires_in: int
    refresh_expires_in: int


class ResetTokenCheckIn(AuthIn):
    token: OneTimeToken


class ValidityOut(Schema):
    valid: bool


# --- emailed codes ---------------------------------------------------------------------------------


class CodeRequestIn(AuthIn):
    """`purpose` "login": a code for the account's verified address; with `password`, it must be right
    first (as POST /auth/login). "signup": a code that creates the account (with `name` and `password`
    if given), or signs into the existing one."""

    email: Email
    purpose: Literal["login", "signup"]
    name: Annotated[str, Field(max_length=200, pattern=NO_NUL, description="Sign-up only.")] | None = None
    password: Password | None = None
    resend_of: Annotated[
        OneTimeToken | None,
        Field(description="Sign-up: the token of the earlier challenge; its name and password carry over."),
    ] = None


class CodeChallengeOut(Schema):
    token: str
    expires_in: int
    message: str = "If this address can use a code, one is on its way."


class CodeVerifyIn(AuthIn):
    token: OneTimeToken
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$", examples=["012345"])]


class CodeCheckIn(AuthIn):
    token: OneTimeToken
