from __future__ import annotations

from typing import Literal

from pydantic import EmailStr, Field

from app.schemas.base import Schema

Password = Field(min_length=8, max_length=128)


class RegisterIn(Schema):
    email: EmailStr = Field(max_length=320, examples=["jane@example.com"])
    password: str = Password
    name: str | None = Field(default=None, max_length=200)


class RegisteredOut(Schema):
    id: str
    email: str
    message: str = "Check your inbox to confirm your email address."


class LoginIn(Schema):
    email: str = Field(max_length=320)
    password: str = Field(min_length=1, max_length=128)


class TokenOut(Schema):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_expires_in: int


class RefreshIn(Schema):
    refresh_token: str | None = Field(default=None, max_length=4096)


class LogoutIn(Schema):
    refresh_token: str | None = Field(default=None, max_length=4096)


class TokenIn(Schema):
    token: str = Field(min_length=1, max_length=512)


class EmailIn(Schema):
    email: EmailStr = Field(max_length=320)


class PasswordResetIn(Schema):
    token: str = Field(min_length=1, max_length=512)
    password: str = Password


class MessageOut(Schema):
    message: str
