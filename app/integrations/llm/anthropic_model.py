"""Anthropic through the official `anthropic` SDK: `POST {ANTHROPIC_BASE_URL}/v1/messages` with one tool
whose input schema is the answer's, and `tool_choice` forcing the model to call it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from app.integrations.llm.base import LLMBadOutput, LLMUnavailable, require_object
from app.integrations.llm.errors import unavailable


class AnthropicTextModel:
    provider = "anthropic"

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
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url.rstrip("/"), timeout=timeout_seconds, max_retries=max_retries
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
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=max_output_tokens or self._max_output_tokens,
                system=system,
                messages=[{"role": "user", "content": prompt}],
                tools=[
                    {
                        "name": schema_name,
                        "description": "Record the answer. Always answer through this tool.",
                        "input_schema": dict(schema),
                    }
                ],
                tool_choice={"type": "tool", "name": schema_name},
                timeout=timeout_seconds or self._timeout,
            )
        except anthropic.APIError as exc:
            raise _unavailable(exc) from exc
        if message.stop_reason == "max_tokens":
            raise LLMBadOutput("the model's answer was cut at the output-token bound")
        if message.stop_reason == "refusal":
            raise LLMBadOutput("the model refused to answer")
        for block in message.content:
            if block.type == "tool_use" and block.name == schema_name:
                return require_object(block.input)
        raise LLMBadOutput("the model did not answer through the tool")

    async def aclose(self) -> None:
        await self._client.close()


def _unavailable(exc: anthropic.APIError) -> LLMUnavailable:
    if isinstance(exc, anthropic.APITimeoutError):
        return unavailable("timeout", "Anthropic did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return unavailable("connection", "Anthropic could not be reached")
    if isinstance(exc, anthropic.APIStatusError):
        return unavailable(exc.status_code, f"Anthropic answered {exc.status_code}")
    return unavailable(None, "Anthropic's answer could not be read")
