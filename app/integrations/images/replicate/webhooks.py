"""Replicate's webhooks: Standard Webhooks signatures (``webhook-id`` / ``webhook-timestamp`` /
``webhook-signature``) with the ``whsec_`` secret, ±5 minutes. The body is the prediction or training
object exactly as ``GET`` returns it."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, cast

from standardwebhooks.webhooks import WebhookVerificationError as _StandardWebhookError

from app.errors import ProviderNotConfigured
from app.integrations.images.replicate._base import ReplicateBase


class WebhookVerificationError(Exception):
    """A webhook delivery is not authentic (bad or missing signature, stale or future timestamp) or not a
    JSON object. Answer 400 and do not act on it."""


class WebhooksApi(ReplicateBase):
    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The delivered prediction, once its Standard Webhooks signature and timestamp (±5 min) check out.

        Pass the raw request body (before any JSON parsing). Raises :class:`WebhookVerificationError`
        otherwise, and ``ProviderNotConfigured`` without a webhook secret.
        """
        if self._webhook is None:
            raise ProviderNotConfigured("Replicate webhooks need REPLICATE_WEBHOOK_SECRET.")
        lowered = {key.lower(): value for key, value in headers.items()}
        try:
            payload = self._webhook.verify(body, lowered)
        except _StandardWebhookError as exc:
            raise WebhookVerificationError(f"Replicate webhook refused: {exc}") from None
        except (ValueError, binascii.Error) as exc:
            # A garbled signature header, a body that is not UTF-8 or not JSON.
            raise WebhookVerificationError(
                f"Replicate webhook refused: malformed ({type(exc).__name__})"
            ) from None
        if not isinstance(payload, dict):
            raise WebhookVerificationError("Replicate webhook refused: the body is not a JSON object")
        return cast(dict[str, Any], payload)
