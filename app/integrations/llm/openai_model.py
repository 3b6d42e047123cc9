"""OpenAI (or any server speaking its Chat Completions API) through the official `openai` SDK:
`POST {OPENAI_BASE_URL}/v1/chat/completions` with a strict `json_schema` response format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai

from app.integrations.llm.base import LLMBadOutput, LLMUnavailable, parse_json_object
from app.integrations.llm.errors import unavailable


def api_base(base_url: str) -> str:
    """The SDK's base URL ends in /v1; OPENAI_BASE_URL may be given with or without it."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class OpenAITextModel:
    provider = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model: str,
        timeout_seconds: float,
        max_retries: int,
        max_output_tokens: int,
    ) -> None:
        self.model = model
        self._timeout = timeout_seconds
        self._max_output_tokens = max_output_tokens
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=api_base(base_url), timeout=timeout_seconds, max_retries=max_retries
        )

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
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True},
                },
                max_completion_tokens=max_output_tokens or self._max_output_tokens,
                timeout=timeout_seconds or self._timeout,
            )
        except openai.APIError as exc:
            raise _unavailable(exc) from exc
        if not completion.choices:
            raise LLMBadOutput("the model returned no choice")
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            raise LLMBadOutput("the model's answer was cut at the output-token bound")
        if choice.message.refusal:
            raise LLMBadOutput("the model refused to answer")
        return parse_json_object(choice.message.content)

    async def aclose(self) -> None:
        await self._client.close()


def _unavailable(exc: openai.APIError) -> LLMUnavailable:
    if isinstance(exc, openai.APITimeoutError):
        return unavailable("timeout", "OpenAI did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return unavailable("connection", "OpenAI could not be reached")
    if isinstance(exc, openai.APIStatusError):
        return unavailable(exc.status_code, f"OpenAI answered {exc.status_code}")
    return unavailable(None, "OpenAI's answer could not be read")
