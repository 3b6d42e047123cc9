"""Operator alerts to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, Discord's
`/slack` endpoint...): a JSON POST of `{"text", "blocks"}`; `text` alone is enough for any of them and is
what notifications show, the blocks only lay it out where they are understood."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import structlog

log = structlog.get_logger("app.integrations.alerts")


@dataclass(frozen=True)
class AlertMessage:
    kind: str
    title: str
    detail: str

    def payload(self) -> dict[str, Any]:
        text = f"{self.title}\n{self.detail}" if self.detail else self.title
        return {
            "text": text,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": (self.detail or self.title)[:3000]}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert `{self.kind}`"}]},
            ],
        }


class AlertDeliveryFailed(Exception):
    """Every attempt to deliver an alert failed (timeouts, refused connections, non-2xx answers)."""


class AlertSender(Protocol):
    async def send(self, message: AlertMessage) -> None:
        """Delivered, or AlertDeliveryFailed after the sender's own retries."""
        ...


class SlackWebhookSender:
    """Each attempt is bounded by `timeout_seconds`; up to `attempts` of them, `backoff_seconds` apart,
    doubling. A 4xx other than 429 is final (the URL or the body is wrong: a retry would be too)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        url: str,
        timeout_seconds: float,
        attempts: int,
        backoff_seconds: float,
    ) -> None:
        self._http = http
        self._url = url
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    def __repr__(self) -> str:  # the URL is a credential: whoever holds it can post to the channel
        return f"SlackWebhookSender(timeout_seconds={self.timeout_seconds}, attempts={self.attempts})"

    async def send(self, message: AlertMessage) -> None:
        reason = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 2))
            try:
                response = await self._http.post(
                    self._url, json=message.payload(), timeout=self.timeout_seconds
                )
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                if response.is_success:
                    return
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            log.warning("alert.attempt_failed", kind=message.kind, attempt=attempt, reason=reason)
        raise AlertDeliveryFailed(f"The alert receiver did not take the {message.kind} alert ({reason}).")
