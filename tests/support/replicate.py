"""The fake Replicate, with what training a personal model needs (providers.md §2b) on top of the
predictions of tests/fakes/replicate.py:

* ``POST {base}/v1/files`` (multipart: ``content`` + ``filename``/``type``/``metadata``) → 201 file object
  (md5 ``etag``, ``checksums``, ``expires_at`` + 24 h, ``urls.get`` on the fake's base URL);
  ``GET {base}/v1/files/{id}`` → the object (JSON, never the bytes); ``DELETE`` → 204, then 404.
* ``POST {base}/v1/models`` → 201 (409 for a name ever taken, 403 when ``owner`` is not the token's
  account, 422 without ``visibility``/``hardware``); ``GET {base}/v1/models/{owner}/{name}`` → the model
  with ``latest_version``; ``DELETE {base}/v1/models/{owner}/{name}/versions/{id}`` → 202.
* ``POST {base}/v1/models/{owner}/{name}/versions/{version}/trainings`` → 201 ``starting`` (404 with
  Replicate's recorded detail when the destination does not exist); ``GET {base}/v1/trainings/{id}``
  moves it one step (``starting → processing → succeeded|failed``); ``POST …/cancel`` → ``canceled``
  unless it ended already. A training whose ``input_images`` is not a zip of ours fails with the
  trainer's own message; a success adds a version to the destination (predictions on it then work).

``fail_next_training(error)`` makes the next training end failed. ``finish_training(id)`` runs it to its
end without a GET (what happens on Replicate while nobody asks); ``training_webhook(id)`` signs its
current state as Replicate's webhook would deliver it (``signed_webhook``).
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import io
import json
import re
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx

from tests.fakes.replicate import TERMINAL, FakeReplicate, invalid_input, new_id, problem, timestamp

OWNER = "acme-app"
TRAINER = "ostris/flux-dev-lora-trainer"
TRAINER_VERSION = "26dce37af90b9d997eeb970d92e47de3064d46c300504ae376c75bef6a9022d2"
NOT_A_ZIP = "input_images must be a zip file"
NO_DESTINATION = "The specified training destination does not exist"


def parse_multipart(request: httpx.Request) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Each part of a multipart/form-data body: name → (bytes, filename, content type)."""
    content_type = request.headers.get("content-type", "")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    parts: dict[str, tuple[bytes, str | None, str | None]] = {}
    if not message.is_multipart():
        return parts
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        parts[name] = (
            payload if isinstance(payload, bytes) else b"",
            part.get_filename(),
            part.get_content_type() if part.get("content-type") else None,
        )
    return parts


class FakeReplicateWithTrainings(FakeReplicate):
    def __init__(self, router: respx.MockRouter, *, owner: str = OWNER, **kwargs: Any) -> None:
        super().__init__(router, **kwargs)
        self.owner = owner
        self.uploads: dict[str, dict[str, Any]] = {}
        """File objects by id, as GET answers them."""
        self.upload_bytes: dict[str, bytes] = {}
        self.destinations: dict[str, dict[str, Any]] = {}
        """Models by owner/name, as GET answers them."""
        self.taken_names: set[str] = set()
        self.model_versions: dict[str, list[dict[str, Any]]] = {}
        self.deleted_versions: list[str] = []
        self.trainings: dict[str, dict[str, Any]] = {}
        self.training_requests: list[dict[str, Any]] = []
        self._training_steps: dict[str, list[dict[str, Any]]] = {}
        self._next_training_error: list[str] = []
        self.models[TRAINER] = lambda data: []

        api = re.escape(self.base_url)
        router.post(f"{self.base_url}/v1/files").mock(side_effect=self._upload)
        router.route(method="GET", url__regex=rf"^{api}/v1/files/(?P<file_id>[^/?]+)$").mock(
            side_effect=self._get_file
        )
        router.route(method="DELETE", url__regex=rf"^{api}/v1/files/(?P<file_id>[^/?]+)$").mock(
            side_effect=self._delete_file
        )
        router.post(f"{self.base_url}/v1/models").mock(side_effect=self._create_model)
        router.get(url__regex=rf"^{api}/v1/models/(?P<owner>[^/]+)/(?P<name>[^/?]+)$").mock(
            side_effect=self._get_model
        )
        router.route(
            method="DELETE",
            url__regex=rf"^{api}/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/versions/(?P<vid>[^/?]+)$",
        ).mock(side_effect=self._delete_version)
        router.post(
            url__regex=rf"^{api}/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/versions/(?P<vid>[^/]+)/trainings$"
        ).mock(side_effect=self._create_training)
        router.get(url__regex=rf"^{api}/v1/trainings/(?P<training_id>[^/?]+)$").mock(
            side_effect=self._get_training
        )
        router.post(url__regex=rf"^{api}/v1/trainings/(?P<training_id>[^/?]+)/cancel$").mock(
            side_effect=self._cancel_training
        )

    # -- switches and helpers --

    def fail_next_training(self, error: str = "CUDA out of memory while training") -> None:
        self._next_training_error.append(error)

    def finish_training(self, training_id: str) -> dict[str, Any]:
        while self._training_steps.get(training_id):
            self._step(training_id)
        return copy.deepcopy(self.trainings[training_id])

    def _step(self, training_id: str) -> None:
        """One step of the lifecycle; a success adds the trained version to its destination model."""
        training = self.trainings[training_id]
        training.update(self._training_steps[training_id].pop(0))
        if training["status"] != "succeeded":
            return
        destination, _, version_id = training["output"]["version"].partition(":")
        version = {"id": version_id, "created_at": training["completed_at"], "cog_version": "0.13.7"}
        self.model_versions[destination].insert(0, version)
        self.destinations[destination]["latest_version"] = version
        # The trained version runs predictions (prompt required), as a real one does.
        self.models[destination] = lambda data: (
            [] if data.get("prompt") else [("input", "prompt is required")]
        )
        self.versions[version_id] = destination

    def training_webhook(
        self, training_id: str, *, msg_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        return self.signed_webhook(copy.deepcopy(self.trainings[training_id]), msg_id=msg_id)

    def zip_of(self, training_id: str) -> zipfile.ZipFile:
        """The zip a training was given (through its input_images file URL)."""
        url = self.trainings[training_id]["input"]["input_images"]
        return zipfile.ZipFile(io.BytesIO(self.upload_bytes[url.rsplit("/", 1)[1]]))

    # -- files --

    async def _upload(self, request: httpx.Request) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        parts = parse_multipart(request)
        if "content" not in parts:
            return invalid_input(("content", "content is required"))
        data, part_name, part_type = parts["content"]
        name = parts["filename"][0].decode() if "filename" in parts else part_name or "file"
        kind = parts["type"][0].decode() if "type" in parts else part_type or "application/octet-stream"
        metadata = json.loads(parts["metadata"][0] or b"{}") if "metadata" in parts else {}
        file_id = base64.b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")
        created = datetime.now(UTC)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.upload_bytes[file_id] = data
        self.uploads[file_id] = {
            "id": file_id,
            "name": name,
            "content_type": kind,
            "size": len(data),
            "etag": md5,
            "checksums": {"sha256": hashlib.sha256(data).hexdigest(), "md5": md5},
            "metadata": metadata,
            "created_at": timestamp(created),
            "expires_at": timestamp(created + timedelta(hours=24)),
            "urls": {"get": f"{self.base_url}/v1/files/{file_id}"},
        }
        return httpx.Response(201, json=self.uploads[file_id])

    async def _get_file(self, request: httpx.Request, file_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        if file_id not in self.uploads:
            return problem(404)
        return httpx.Response(200, json=self.uploads[file_id])

    async def _delete_file(self, request: httpx.Request, file_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        if self.uploads.pop(file_id, None) is None:
            return problem(404)
        self.upload_bytes.pop(file_id, None)
        return httpx.Response(204)

    # -- models --

    async def _create_model(self, request: httpx.Request) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        body = self._json_object(request)
        if isinstance(body, httpx.Response):
            return body
        missing = [field for field in ("owner", "name", "visibility", "hardware") if not body.get(field)]
        if missing:
            return invalid_input(*[(field, f"{field} is required") for field in missing])
        if body["owner"] != self.owner:
            return problem(403, "You do not have permission to create models for this owner.")
        if body["visibility"] not in ("public", "private"):
            return invalid_input(("visibility", "visibility must be one of: public, private"))
        reference = f"{body['owner']}/{body['name']}"
        if reference in self.taken_names:
            return problem(409, "A model with that name already exists.")
        self.taken_names.add(reference)
        self.destinations[reference] = {
            "url": f"https://replicate.com/{reference}",
            "owner": body["owner"],
            "name": body["name"],
            "description": body.get("description"),
            "visibility": body["visibility"],
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": 0,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": None,
            "is_official": False,
        }
        self.model_versions[reference] = []
        return httpx.Response(201, json=self.destinations[reference])

    async def _get_model(self, request: httpx.Request, owner: str, name: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        model = self.destinations.get(f"{owner}/{name}")
        if model is None:
            return problem(404)
        return httpx.Response(200, json=model)

    async def _delete_version(
        self, request: httpx.Request, owner: str, name: str, vid: str
    ) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        reference = f"{owner}/{name}"
        versions = self.model_versions.get(reference, [])
        if not any(version["id"] == vid for version in versions):
            return problem(404)
        self.model_versions[reference] = [version for version in versions if version["id"] != vid]
        self.destinations[reference]["latest_version"] = (
            self.model_versions[reference][0] if self.model_versions[reference] else None
        )
        self.versions.pop(vid, None)
        self.deleted_versions.append(f"{reference}:{vid}")
        return httpx.Response(202)

    # -- trainings --

    async def _create_training(
        self, request: httpx.Request, owner: str, name: str, vid: str
    ) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        body = self._json_object(request)
        if isinstance(body, httpx.Response):
            return body
        if f"{owner}/{name}" != TRAINER or not re.fullmatch(r"[0-9a-f]{64}", vid):
            return problem(404)
        destination = body.get("destination")
        if not isinstance(destination, str) or destination not in self.destinations:
            return problem(404, NO_DESTINATION)
        data = body.get("input")
        if not isinstance(data, dict):
            return invalid_input(("input", "input is required"))
        self.training_requests.append(body)
        training_id = new_id()
        created = datetime.now(UTC)
        get_url = f"{self.base_url}/v1/trainings/{training_id}"
        training: dict[str, Any] = {
            "id": training_id,
            "model": TRAINER,
            "version": vid,
            "input": data,
            "logs": None,
            "error": None,
            "output": None,
            "source": "api",
            "status": "starting",
            "created_at": timestamp(created),
            "started_at": None,
            "completed_at": None,
            "urls": {
                "get": get_url,
                "cancel": f"{get_url}/cancel",
                "web": f"https://replicate.com/p/{training_id}",
            },
            "metrics": {},
        }
        self.trainings[training_id] = training
        if isinstance(body.get("webhook"), str):
            self.webhooks[training_id] = (body["webhook"], list(body.get("webhook_events_filter") or []))
        self._training_steps[training_id] = self._training_lifecycle(training_id, destination, data, created)
        return httpx.Response(201, json=copy.deepcopy(training))

    def _is_zip_of_ours(self, url: object) -> bool:
        prefix = f"{self.base_url}/v1/files/"
        if not isinstance(url, str) or not url.startswith(prefix):
            return False
        data = self.upload_bytes.get(url.removeprefix(prefix))
        return data is not None and zipfile.is_zipfile(io.BytesIO(data))

    def _training_lifecycle(
        self, training_id: str, destination: str, data: dict[str, Any], created: datetime
    ) -> list[dict[str, Any]]:
        started = created + timedelta(seconds=41)
        completed = started + timedelta(minutes=18)
        processing = {
            "status": "processing",
            "started_at": timestamp(started),
            "logs": "Extracted files from zip to input_images\nStarting train job\n",
        }
        terminal: dict[str, Any] = {
            "completed_at": timestamp(completed),
            "metrics": {"predict_time": 1110.55, "total_time": 1152.34},
        }
        if not self._is_zip_of_ours(data.get("input_images")):
            terminal |= {"status": "failed", "error": NOT_A_ZIP}
        elif self._next_training_error:
            terminal |= {"status": "failed", "error": self._next_training_error.pop(0)}
        else:
            version_id = hashlib.sha256(training_id.encode()).hexdigest()
            terminal |= {
                "status": "succeeded",
                "output": {
                    "version": f"{destination}:{version_id}",
                    "weights": f"{self.delivery_url}/xezq/{training_id}/trained_model.tar",
                },
                "logs": processing["logs"] + "flux_train_replicate: 100%|##########| 1000/1000\n",
            }
        return [processing, terminal]

    async def _get_training(self, request: httpx.Request, training_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        if training_id not in self.trainings:
            return problem(404)
        if self._training_steps.get(training_id):
            self._step(training_id)
        return httpx.Response(200, json=copy.deepcopy(self.trainings[training_id]))

    async def _cancel_training(self, request: httpx.Request, training_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        training = self.trainings.get(training_id)
        if training is None:
            return problem(404)
        if training["status"] not in TERMINAL:
            self._training_steps[training_id] = []
            training.update({"status": "canceled", "completed_at": timestamp(), "output": None})
        return httpx.Response(200, json=copy.deepcopy(training))
