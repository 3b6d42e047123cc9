"""The failure codes both providers' errors map to."""

from __future__ import annotations

from typing import Literal

from app.integrations.llm.base import LLMUnavailable


def unavailable(cause: int | Literal["timeout", "connection"] | None, message: str) -> LLMUnavailable:
    """`cause`: the HTTP status the provider answered, or how the call failed before that."""
    if cause == "timeout":
        code = "provider_timeout"
    elif cause == "connection":
        code = "provider_unreachable"
    elif cause == 429:
        code = "provider_rate_limited"
    else:
        code = "provider_error"
    return LLMUnavailable(message, code=code)
