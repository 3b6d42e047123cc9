"""The Hair Try-On SPA's account bodies, field for field as its source sends and reads them (the original
server's `schemas/auth.py` and `schemas/user.py`). Unknown fields are ignored, as the original did."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.schemas.auth import NO_NUL, Email, OneTimeToken, Password
from app.schemas.base import Schema


class UserMeOut(Schema):
    id: str
    name: str
    email: str
    userpic: str | None
    credits: float


class SignupIn(Schema):
    email: Email
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    password: Password


class SignupOut(Schema):
    """The account exists once the emailed code is verified: until then it has no id to show."""

    email: str
    name: str
    verified: Literal[False] = False
    verify_token: str


class LoginTokenIn(Schema):
    email: Annotated[str, Field(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class EmailIn(Schema):
    email: Email


class ChallengeOut(Schema):
    token: str


class EmailStatusOut(Schema):
    verified: bool


class TokenIn(Schema):
    token: OneTimeToken


class ValidityOut(Schema):
    valid: bool


class CodeIn(Schema):
    token: OneTimeToken
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$", examples=["012345"])]


class VerifiedOut(Schema):
    verified: Literal[True] = True


class OkOut(Schema):
    ok: Literal[True] = True


class DetailOut(Schema):
    detail: str


class ResetPasswordIn(Schema):
    token: OneTimeToken
    new_password: Password
    confirm_password: Annotated[str, Field(max_length=128, pattern=NO_NUL)]

    @model_validator(mode="after")
    def _passwords_match(self) -> ResetPasswordIn:
        if self.new_password != self.confirm_password:
            raise ValueError("New password and confirm password do not match.")
        return self
