"""Replicate's HTTP API (providers.md §2 and §2b) over an injected httpx client, without the replicate SDK:
predictions and their output files, the Files API, models and trainings, and webhook verification. One
:class:`ReplicateClient` speaks all of it; each part lives in a module of its own."""

from __future__ import annotations

from app.integrations.images.replicate._base import (
    DELIVERY_HOSTS,
    OUTPUT_TYPES,
    REPLICATE_DEFAULT_BASE_URL,
    STATUSES,
    TERMINAL_STATUSES,
    PredictionStatus,
)
from app.integrations.images.replicate.files import FilesApi
from app.integrations.images.replicate.predictions import PredictionsApi, prediction_from_payload
from app.integrations.images.replicate.trainings import (
    TRAINING_WEBHOOK_EVENTS,
    TrainingsApi,
    training_from_payload,
)
from app.integrations.images.replicate.webhooks import WebhooksApi, WebhookVerificationError


class ReplicateClient(PredictionsApi, FilesApi, TrainingsApi, WebhooksApi):
    """Replicate, all of it: ``create_prediction``/``get_prediction``/``download``, ``upload_file``,
    ``get_model``/``create_model``/``delete_model_version``, ``create_training``/``get_training``/
    ``cancel_training``, ``verify_webhook``. Every failure is an EngineError without the token."""


__all__ = [
    "DELIVERY_HOSTS",
    "OUTPUT_TYPES",
    "REPLICATE_DEFAULT_BASE_URL",
    "STATUSES",
    "TERMINAL_STATUSES",
    "TRAINING_WEBHOOK_EVENTS",
    "PredictionStatus",
    "ReplicateClient",
    "WebhookVerificationError",
    "prediction_from_payload",
    "training_from_payload",
]
