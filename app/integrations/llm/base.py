"""What every LLM behind Pixforge promises: one JSON object for a prompt, under a JSON Schema, with
bounded time and output length; and how it fails."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

# An answer longer than this many characters is refused before it is parsed (a model cannot produce it
# within any sane output-token bound; a misbehaving proxy could).
MAX_ANSWER_CHARS = 200_000


class LLMError(Exception):
    """The model gave no usable answer. `code` is stable and safe to show a client."""

    code = "provider_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LLMUnavailable(LLMError):
    """The provider could not be reached or refused the call (timeout, connection, 429, 5xx, bad key).
    Codes: provider_timeout, provider_unreachable, provider_rate_limited, provider_error."""


class LLMBadOutput(LLMError):
    """The provider answered, but not with one JSON object: truncated at the token bound, refused, or
    not JSON."""

    code = "invalid_provider_output"


class TextModel(Protocol):
    """A chat model that answers a prompt with one JSON object.

    The schema is a JSON Schema of an object in the subset both providers enforce (every property
    `required`, `additionalProperties: false`). Providers constrain their output to it, but the caller
    must still validate what comes back: nothing here checks the object against the schema."""

    provider: str
    model: str

    async def generate_json(
        self,
        *,
        system: str,
        prompt: str,
        schema: Mapping[str, Any],
        schema_name: str,
        max_output_tokens: int | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, Any]:
        """One answer. `max_output_tokens` and `timeout_seconds` default to the model's settings.
        Raises LLMUnavailable or LLMBadOutput."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP connections (at shutdown)."""
        ...


def parse_json_object(text: str | None) -> dict[str, Any]:
    """The JSON object a model wrote, or LLMBadOutput."""
    if not text or not text.strip():
        raise LLMBadOutput("the model answered nothing")
    if len(text) > MAX_ANSWER_CHARS:
        raise LLMBadOutput("the model's answer is too long")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LLMBadOutput("the model's answer is not JSON") from exc
    return require_object(value)


def require_object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LLMBadOutput("the model's answer is not a JSON object")
    return value
