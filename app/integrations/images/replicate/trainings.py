"""Replicate's models and trainings (providers.md §2b): a LoRA is trained by a trainer model version into
a destination model of ours, which must exist first.

* ``get_model(owner, name)`` → ``GET /v1/models/{owner}/{name}`` (None on 404);
  ``create_model(...)`` → ``POST /v1/models`` (201; 409 when the name is taken, even by a deleted model).
* ``create_training(trainer, destination=..., input=..., webhook_url=...)`` →
  ``POST /v1/models/{owner}/{name}/versions/{version}/trainings`` (201, ``starting``); 404 when the
  destination does not exist.
* ``get_training(id)`` → ``GET /v1/trainings/{id}``; ``cancel_training(id)`` →
  ``POST /v1/trainings/{id}/cancel``.
* ``delete_model_version(model, version)`` → ``DELETE /v1/models/{owner}/{name}/versions/{id}`` (202).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import quote

from app.integrations.images.base import EngineError, Training
from app.integrations.images.replicate._base import (
    MODEL_REFERENCE,
    RESOURCE_ID,
    STATUSES,
    PredictionStatus,
    ReplicateBase,
    log,
)

# The events a training's webhook is sent for: its start and its end (`output`/`logs` would flood us).
TRAINING_WEBHOOK_EVENTS: Final = ("start", "completed")
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


def _path(owner: str, name: str) -> str:
    return f"/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}"


def _split_model(model: str) -> tuple[str, str, str | None]:
    match = MODEL_REFERENCE.match(model)
    if match is None:
        raise ValueError(f"Not a Replicate model reference (owner/name[:version]): {model!r}")
    return match["owner"], match["name"], match["version"]


class TrainingsApi(ReplicateBase):
    # -- models --

    async def get_model(self, owner: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", _path(owner, name), expected=(200,))
        except EngineError as exc:
            if exc.code == "provider_not_found":
                return None
            raise

    async def create_model(
        self, owner: str, name: str, *, visibility: str, hardware: str, description: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "owner": owner,
            "name": name,
            "visibility": visibility,
            "hardware": hardware,
        }
        if description is not None:
            payload["description"] = description
        body = await self._request("POST", "/v1/models", json=payload, expected=(200, 201))
        log.info("replicate.model_created", model=f"{owner}/{name}", visibility=visibility)
        return body

    async def delete_model_version(self, model: str, version_id: str) -> None:
        owner, name, _ = _split_model(model)
        if not _VERSION_ID.match(version_id):
            raise ValueError(f"Not a Replicate version id: {version_id!r}")
        await self._request(
            "DELETE", f"{_path(owner, name)}/versions/{version_id}", expected=(200, 202, 204), empty=True
        )
        log.info("replicate.version_deleted", model=model, version=version_id)

    # -- trainings --

    async def create_training(
        self,
        trainer: str,
        *,
        destination: str,
        input: dict[str, Any],
        webhook_url: str | None = None,
    ) -> Training:
        """Start a training of `trainer` (``owner/name:<64-hex version>``) into `destination`
        (``owner/name``); with `webhook_url` Replicate posts its start and its end there."""
        owner, name, version = _split_model(trainer)
        if version is None:
            raise ValueError(f"A trainer needs its version (owner/name:<64-hex>): {trainer!r}")
        _split_model(destination)
        payload: dict[str, Any] = {"destination": destination, "input": input}
        if webhook_url is not None:
            payload["webhook"] = webhook_url
            payload["webhook_events_filter"] = list(TRAINING_WEBHOOK_EVENTS)
        body = await self._request(
            "POST", f"{_path(owner, name)}/versions/{version}/trainings", json=payload, expected=(200, 201)
        )
        training = training_from_payload(body)
        log.info(
            "replicate.training_created",
            training_id=training.id,
            destination=destination,
            status=training.status,
            webhook=webhook_url is not None,
        )
        return training

    async def get_training(self, id: str) -> Training:
        if not RESOURCE_ID.match(id):
            raise ValueError(f"Not a Replicate training id: {id!r}")
        return training_from_payload(await self._request("GET", f"/v1/trainings/{id}", expected=(200,)))

    async def cancel_training(self, id: str) -> Training:
        if not RESOURCE_ID.match(id):
            raise ValueError(f"Not a Replicate training id: {id!r}")
        training = training_from_payload(
            await self._request("POST", f"/v1/trainings/{id}/cancel", expected=(200,))
        )
        log.info("replicate.training_canceled", training_id=training.id, status=training.status)
        return training


def training_from_payload(payload: Mapping[str, Any]) -> Training:
    """A :class:`Training` from Replicate's training JSON (an API answer or a webhook body). ``output`` is
    null until success, then ``{"version": "owner/name:<hex>", "weights": url}``."""
    training_id = payload.get("id")
    status = payload.get("status")
    if not isinstance(training_id, str) or not training_id or status not in STATUSES:
        raise EngineError(
            "provider_error",
            f"Replicate answered a training without a usable id/status (status={status!r}).",
            retryable=True,
        )
    output = payload.get("output")
    version = weights = None
    if isinstance(output, dict):
        version = output.get("version") if isinstance(output.get("version"), str) else None
        weights = output.get("weights") if isinstance(output.get("weights"), str) else None
    elif output is not None:
        raise EngineError(
            "provider_error",
            f"Replicate training {training_id} has an output of an unexpected shape "
            f"({type(output).__name__}).",
            retryable=False,
        )
    urls = payload.get("urls")
    web = urls.get("web") if isinstance(urls, dict) else None
    error = payload.get("error")
    return Training(
        id=training_id,
        status=cast(PredictionStatus, status),
        version=version,
        weights=weights,
        error=None if error is None else str(error),
        logs_url=web if isinstance(web, str) and web.startswith("https://") else None,
        raw=dict(payload),
    )
