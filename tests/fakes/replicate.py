"""A fake Replicate speaking its real HTTP contract (providers.md §0 and §2).

Routes registered on the respx router:

* ``POST {base_url}/v1/models/{owner}/{name}/predictions`` (official models) and
  ``POST {base_url}/v1/predictions`` (``version`` = ``owner/name``, ``owner/name:<64-hex>`` or
  ``<64-hex>``) → 201 with a ``starting`` prediction; Bearer auth (else 401 problem+json); ``input``
  validated against the model's schema (seedream-4: ``prompt`` required, enums checked) → 422
  problem+json **(body shape unverified)**; unknown model → 404.
* ``GET {base_url}/v1/predictions/{id}``: each GET moves the prediction one step along its lifecycle,
  ``starting → processing → succeeded`` (or ``failed`` with ``error``), ``completed_at``/``metrics`` on
  the terminal step. ``POST …/{id}/cancel`` cancels unless already terminal.
* ``GET {base_url}/v1/webhooks/default/secret`` → ``{"key": "whsec_…"}``.
* ``GET {delivery_url}/…``: the output files (PNG) the succeeded predictions list in ``output``.

Errors are RFC 7807 (``application/problem+json``: ``title``/``detail``/``status``); 429 carries
``Retry-After`` and Replicate's throttling ``detail``.

Switches (each applies to one request, in order; ``on="delivery"`` targets the file host instead of the API):
``fail_next(status)``, ``answer_malformed_next()``, ``time_out_next()``, ``refuse_connection_next()``,
``answer_next(response)``; ``fail_next_prediction(error)`` makes the next created prediction end ``failed``;
``filter_next_outputs(count)`` makes the next one drop ``count`` images as NSFW (all of them: it fails, as
cog-flux does); ``expire_outputs()`` deletes the served files (their URLs then answer 404).

Flux: the official ``black-forest-labs/flux-schnell`` is known, and :meth:`add_trained_version` adds a
personal model's version (a LoRA trained on cog-flux), run by ``POST /v1/predictions``; both validate their
input against the model's schema (unknown inputs refused) and make ``num_outputs`` images.

:meth:`signed_webhook` serializes a prediction once and signs it with Standard Webhooks headers.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import io
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import respx
from PIL import Image
from standardwebhooks import Webhook

Target = Literal["api", "delivery"]
Behaviour = Callable[[httpx.Request], Awaitable[httpx.Response]]

_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
SEEDREAM = "bytedance/seedream-4"
SEEDREAM_VERSION = hashlib.sha256(SEEDREAM.encode()).hexdigest()
FLUX_SCHNELL = "black-forest-labs/flux-schnell"
FLUX_ASPECT_RATIOS = {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"}
ALL_NSFW = "All generated images contained NSFW content. Try running it again with a different prompt."
DEFAULT_TOKEN = "r8_FakeReplicateTestToken0123456789abcdef"
THROTTLED = "Request was throttled. Your rate limit resets in ~30s."
EVENTS = {"start", "output", "logs", "completed"}
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    422: "Input validation failed",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}
_DETAILS = {
    401: "You did not pass a valid authentication token",
    402: "You have insufficient credit to run this model. Go to https://replicate.com/account/billing to "
    "purchase credit.",
    404: "The requested resource could not be found.",
    429: THROTTLED,
    500: "An internal server error occurred.",
}


def new_id() -> str:
    """A Replicate-style prediction id: 26 lowercase base32 characters."""
    return "".join(secrets.choice(_BASE32) for _ in range(26))


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def timestamp(moment: datetime | None = None) -> str:
    """``2026-01-01T00:00:14.905Z`` (milliseconds, as Replicate writes them)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def problem(
    status: int,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "title": _TITLES.get(status, "Error"),
        "detail": detail or _DETAILS.get(status, _TITLES.get(status, "Error")),
        "status": status,
    }
    body.update(extra or {})
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


def invalid_input(*problems: tuple[str, str]) -> httpx.Response:
    """422 for input that does not match the model's schema: ``(field, description)`` pairs."""
    return problem(
        422,
        "".join(f"- {field}: {description}\n" for field, description in problems),
        extra={
            "invalid_fields": [
                {"type": "invalid", "field": field, "description": description}
                for field, description in problems
            ]
        },
    )


def validate_seedream(data: dict[str, Any]) -> list[tuple[str, str]]:
    """seedream-4's input schema (providers.md §2)."""
    problems: list[tuple[str, str]] = []
    prompt = data.get("prompt")
    if prompt is None:
        problems.append(("input", "prompt is required"))
    elif not isinstance(prompt, str):
        problems.append(("input.prompt", "Invalid type. Expected: string"))
    enums = {
        "size": {"1K", "2K", "4K", "custom"},
        "aspect_ratio": {"match_input_image", "1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9"},
        "sequential_image_generation": {"disabled", "auto"},
    }
    for name, allowed in enums.items():
        if name in data and data[name] not in allowed:
            problems.append((f"input.{name}", f"{name} must be one of the following: {sorted(allowed)}"))
    for name, low, high in (("width", 1024, 4096), ("height", 1024, 4096), ("max_images", 1, 15)):
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or not low <= value <= high):
            problems.append((f"input.{name}", f"Must be an integer between {low} and {high}"))
    images = data.get("image_input", [])
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images) or len(images) > 10:
        problems.append(("input.image_input", "Must be an array of at most 10 URIs"))
    return problems


def _validate_flux(
    data: dict[str, Any], numbers: dict[str, tuple[float, float, bool]]
) -> list[tuple[str, str]]:
    """cog-flux's schema: ``prompt`` required, enums, numeric ranges (name: low, high, integer), and
    nothing else (``additional_property_not_allowed``)."""
    problems: list[tuple[str, str]] = []
    prompt = data.get("prompt")
    if prompt is None:
        problems.append(("input", "prompt is required"))
    elif not isinstance(prompt, str):
        problems.append(("input.prompt", "Invalid type. Expected: string"))
    enums = {
        "aspect_ratio": FLUX_ASPECT_RATIOS,
        "output_format": {"webp", "jpg", "png"},
        "megapixels": {"1", "0.25"},
    }
    for name, allowed in enums.items():
        if name in data and data[name] not in allowed:
            problems.append((f"input.{name}", f"{name} must be one of the following: {sorted(allowed)}"))
    for name, (low, high, integer) in numbers.items():
        value = data.get(name)
        if value is None:
            continue
        kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not kind_ok or not low <= value <= high:
            problems.append((f"input.{name}", f"Must be a number between {low} and {high}"))
    known = {"prompt", "go_fast", "disable_safety_checker", *enums, *numbers}
    for name in sorted(set(data) - known):
        problems.append(("input", f"Additional property {name} is not allowed"))
    return problems


def validate_flux_schnell(data: dict[str, Any]) -> list[tuple[str, str]]:
    """flux-schnell (providers.md §2): no guidance, no negative prompt."""
    numbers = {
        "num_outputs": (1, 4, True),
        "num_inference_steps": (1, 4, True),
        "seed": (0, 2**32, True),
        "output_quality": (0, 100, True),
    }
    return _validate_flux(data, numbers)


def validate_flux_lora(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A version trained on cog-flux (HotswapPredictor): guidance as ``guidance_scale``, ``lora_scale``."""
    numbers = {
        "num_outputs": (1, 4, True),
        "num_inference_steps": (1, 50, True),
        "guidance_scale": (0, 10, False),
        "lora_scale": (-1, 3, False),
        "extra_lora_scale": (-1, 3, False),
        "prompt_strength": (0, 1, False),
        "seed": (0, 2**32, True),
        "output_quality": (0, 100, True),
    }
    problems = _validate_flux({key: value for key, value in data.items() if key != "model"}, numbers)
    if data.get("model", "dev") not in {"dev", "schnell"}:
        problems.append(("input.model", "model must be one of the following: ['dev', 'schnell']"))
    return problems


def output_png(width: int, height: int, seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (seed % 256, (seed * 7) % 256, (seed * 13) % 256)).save(
        out, format="PNG"
    )
    return out.getvalue()


class FakeReplicate:
    def __init__(
        self,
        router: respx.MockRouter,
        api_token: str = DEFAULT_TOKEN,
        base_url: str = "https://api.replicate.com",
        webhook_secret: str | None = None,
        *,
        delivery_url: str = "https://replicate.delivery",
        output_size: tuple[int, int] = (64, 64),
    ) -> None:
        self.api_token = api_token
        self.base_url = base_url.rstrip("/")
        self.delivery_url = delivery_url.rstrip("/")
        self.webhook_secret = webhook_secret or generate_secret()
        self.output_size = output_size
        self.models: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
            SEEDREAM: validate_seedream,
            FLUX_SCHNELL: validate_flux_schnell,
        }
        self.versions: dict[str, str] = {SEEDREAM_VERSION: SEEDREAM}
        self.predictions: dict[str, dict[str, Any]] = {}
        """Current state of each prediction, as ``GET`` answers it."""
        self.created: list[dict[str, Any]] = []
        """Request body of every accepted create."""
        self.webhooks: dict[str, tuple[str, list[str]]] = {}
        """``webhook`` and ``webhook_events_filter`` of each prediction created with one."""
        self.requests: list[httpx.Request] = []
        self.delivery_requests: list[httpx.Request] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        """Served output files by URL: (bytes, content type)."""
        self.chunked_downloads = False
        """Serve files without ``Content-Length`` (chunked), as a CDN streaming a file may."""
        self._lifecycles: dict[str, list[dict[str, Any]]] = {}
        self._next_prediction_error: list[str] = []
        self._next_filtered: list[int] = []
        self._scripts: dict[Target, list[Behaviour]] = {"api": [], "delivery": []}

        api = re.escape(self.base_url)
        router.post(url__regex=rf"^{api}/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions$").mock(
            side_effect=self._create_for_model
        )
        router.post(url__regex=rf"^{api}/v1/predictions$").mock(side_effect=self._create_for_version)
        router.get(url__regex=rf"^{api}/v1/predictions/(?P<prediction_id>[^/?]+)$").mock(
            side_effect=self._get
        )
        router.post(url__regex=rf"^{api}/v1/predictions/(?P<prediction_id>[^/?]+)/cancel$").mock(
            side_effect=self._cancel
        )
        router.get(f"{self.base_url}/v1/webhooks/default/secret").mock(side_effect=self._secret)
        router.get(url__regex=rf"^{re.escape(self.delivery_url)}/").mock(side_effect=self._deliver)

    # -- switches --

    def answer_next(self, response: httpx.Response, *, on: Target = "api") -> None:
        async def behaviour(request: httpx.Request) -> httpx.Response:
            return response

        self._scripts[on].append(behaviour)

    def fail_next(
        self, status: int, detail: str | None = None, *, retry_after: str | None = None, on: Target = "api"
    ) -> None:
        """The next request answers ``status`` with a problem+json body (429: ``Retry-After`` =
        ``retry_after``, default ``"30"``)."""
        headers: dict[str, str] = {}
        if status == 429:
            headers["retry-after"] = "30" if retry_after is None else retry_after
        elif retry_after is not None:
            headers["retry-after"] = retry_after
        self.answer_next(problem(status, detail, headers=headers), on=on)

    def answer_malformed_next(self, *, status: int = 200, on: Target = "api") -> None:
        """A truncated JSON body with the right status (a proxy cutting the answer short)."""
        self.answer_next(
            httpx.Response(
                status,
                content=b'{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "proc',
                headers={"content-type": "application/json"},
            ),
            on=on,
        )

    def time_out_next(self, *, on: Target = "api") -> None:
        async def behaviour(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        self._scripts[on].append(behaviour)

    def refuse_connection_next(self, *, on: Target = "api") -> None:
        async def behaviour(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        self._scripts[on].append(behaviour)

    def fail_next_prediction(self, error: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> None:
        """The next created prediction ends ``failed`` with this ``error`` instead of succeeding."""
        self._next_prediction_error.append(error)

    def filter_next_outputs(self, count: int) -> None:
        """The next created prediction drops ``count`` of its images as NSFW (all: it fails)."""
        self._next_filtered.append(count)

    def add_trained_version(self, model: str) -> str:
        """A personal model ``owner/name`` with a version trained on cog-flux; that version's id."""
        version = hashlib.sha256(f"{model}:{len(self.versions)}".encode()).hexdigest()
        self.models[model] = validate_flux_lora
        self.versions[version] = model
        return version

    def expire_outputs(self) -> None:
        """Replicate deletes API predictions' files after an hour: every output URL now answers 404."""
        self.files.clear()
        for prediction in self.predictions.values():
            if prediction["status"] in TERMINAL:
                prediction["output"] = None
                prediction["data_removed"] = True

    # -- lifecycle helpers --

    def advance(self, prediction_id: str) -> dict[str, Any]:
        """Move one step along the lifecycle (what a GET does); the new state."""
        steps = self._lifecycles.get(prediction_id, [])
        if steps:
            self.predictions[prediction_id].update(steps.pop(0))
        return copy.deepcopy(self.predictions[prediction_id])

    def finish(self, prediction_id: str) -> dict[str, Any]:
        """Run the lifecycle to its terminal state; that state."""
        while self._lifecycles.get(prediction_id):
            self.advance(prediction_id)
        return copy.deepcopy(self.predictions[prediction_id])

    # -- webhooks --

    def signed_webhook(
        self,
        prediction: dict[str, Any] | str,
        *,
        msg_id: str | None = None,
        timestamp: datetime | None = None,
        secret: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of one webhook delivery of ``prediction`` (an object, or an id = its current
        state). ``timestamp`` (default now; naive = UTC) is the ``webhook-timestamp``; re-use ``msg_id`` to
        simulate a retry; ``secret`` signs with another key (a forged or misconfigured delivery)."""
        payload = self.predictions[prediction] if isinstance(prediction, str) else prediction
        if timestamp is None:
            moment = datetime.now(UTC)
        elif timestamp.tzinfo is None:
            moment = timestamp.replace(tzinfo=UTC)
        else:
            moment = timestamp.astimezone(UTC)
        message_id = msg_id or "msg_" + secrets.token_urlsafe(18)
        body = json.dumps(payload, separators=(",", ":"))
        signature = Webhook(secret or self.webhook_secret).sign(message_id, moment, body)
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
            "user-agent": "Replicate-Webhook/1.0",
        }
        return body.encode(), headers

    # -- HTTP: API --

    def _authenticated(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self.api_token.encode())

    async def _gate(self, request: httpx.Request) -> httpx.Response | None:
        self.requests.append(request)
        if self._scripts["api"]:
            return await self._scripts["api"].pop(0)(request)
        if not self._authenticated(request):
            return problem(401)
        return None

    async def _create_for_model(self, request: httpx.Request, owner: str, name: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        model = f"{owner}/{name}"
        if model not in self.models:
            return problem(404)
        body = self._json_object(request)
        if isinstance(body, httpx.Response):
            return body
        return self._create(model, "hidden", body)

    async def _create_for_version(self, request: httpx.Request) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        body = self._json_object(request)
        if isinstance(body, httpx.Response):
            return body
        version = body.get("version")
        if not isinstance(version, str):
            return invalid_input(("version", "version is required"))
        ref, _, version_id = version.partition(":")
        if re.fullmatch(r"[0-9a-f]{64}", ref):
            ref, version_id = self.versions.get(ref, ""), ref
        if ref not in self.models or (version_id and self.versions.get(version_id) != ref):
            return problem(404)
        return self._create(ref, version_id or "hidden", body)

    def _json_object(self, request: httpx.Request) -> dict[str, Any] | httpx.Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return problem(415, "Content-Type must be application/json")
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return problem(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return problem(400, "Request body must be a JSON object")
        return body

    def _create(self, model: str, version: str, body: dict[str, Any]) -> httpx.Response:
        data = body.get("input")
        if not isinstance(data, dict):
            return invalid_input(("input", "input is required"))
        problems = self.models[model](data)
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter")
        if webhook is not None and (not isinstance(webhook, str) or not re.match(r"^https?://", webhook)):
            problems.append(("webhook", "webhook must be a valid URL"))
        if events is not None and (
            not isinstance(events, list) or not events or not set(events) <= EVENTS or webhook is None
        ):
            problems.append(("webhook_events_filter", f"must be a non-empty subset of {sorted(EVENTS)}"))
        if problems:
            return invalid_input(*problems)
        self.created.append(body)

        prediction_id = new_id()
        get_url = f"{self.base_url}/v1/predictions/{prediction_id}"
        created = datetime.now(UTC)
        prediction: dict[str, Any] = {
            "id": prediction_id,
            "model": model,
            "version": version,
            "input": data,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": timestamp(created),
            "started_at": None,
            "completed_at": None,
            "urls": {
                "cancel": f"{get_url}/cancel",
                "get": get_url,
                "web": f"https://replicate.com/p/{prediction_id}",
                "stream": f"https://stream.replicate.com/v1/files/{new_id()}",
            },
            "metrics": {},
        }
        self.predictions[prediction_id] = prediction
        if isinstance(webhook, str):
            self.webhooks[prediction_id] = (webhook, list(events) if events else sorted(EVENTS))
        self._lifecycles[prediction_id] = self._lifecycle(prediction_id, created, data)
        return httpx.Response(201, json=copy.deepcopy(prediction))

    def _lifecycle(self, prediction_id: str, created: datetime, data: dict[str, Any]) -> list[dict[str, Any]]:
        started = created + timedelta(milliseconds=512)
        completed = started + timedelta(seconds=14, milliseconds=393)
        width, height = self.output_size
        processing = {
            "status": "processing",
            "started_at": timestamp(started),
            "logs": f"Generating {width}x{height} image, aspect ratio {data.get('aspect_ratio', '1:1')}\n",
        }
        terminal: dict[str, Any] = {
            "completed_at": timestamp(completed),
            "metrics": {"predict_time": 14.36, "total_time": 14.37},
        }
        if self._next_prediction_error:
            terminal |= {"status": "failed", "error": self._next_prediction_error.pop(0), "output": None}
            return [processing, terminal]
        if data.get("sequential_image_generation") == "auto":
            count = data.get("max_images", 1)
        else:
            count = data.get("num_outputs", 1)
        count -= self._next_filtered.pop(0) if self._next_filtered else 0
        if count <= 0:
            terminal |= {"status": "failed", "error": ALL_NSFW, "output": None}
        else:
            urls = []
            for index in range(count):
                name = f"out-{prediction_id[:8]}-{index}.png"
                url = f"{self.delivery_url}/xezq/{secrets.token_urlsafe(16)}/{name}"
                self.files[url] = (output_png(width, height, len(self.files) + index), "image/png")
                urls.append(url)
            terminal |= {
                "status": "succeeded",
                "output": urls,
                "logs": processing["logs"] + "Generated in 14.1sec\n",
            }
        return [processing, terminal]

    async def _get(self, request: httpx.Request, prediction_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        if prediction_id not in self.predictions:
            return problem(404)
        return httpx.Response(200, json=self.advance(prediction_id))

    async def _cancel(self, request: httpx.Request, prediction_id: str) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return problem(404)
        if prediction["status"] not in TERMINAL:
            self._lifecycles[prediction_id] = []
            prediction.update({"status": "canceled", "completed_at": timestamp(), "output": None})
        return httpx.Response(200, json=copy.deepcopy(prediction))

    async def _secret(self, request: httpx.Request) -> httpx.Response:
        if (answer := await self._gate(request)) is not None:
            return answer
        return httpx.Response(200, json={"key": self.webhook_secret})

    # -- HTTP: file delivery (public, no auth) --

    async def _deliver(self, request: httpx.Request) -> httpx.Response:
        self.delivery_requests.append(request)
        if self._scripts["delivery"]:
            return await self._scripts["delivery"].pop(0)(request)
        url = str(request.url.copy_with(query=None))
        if url not in self.files:
            return httpx.Response(404, text="Not Found", headers={"content-type": "text/plain"})
        data, content_type = self.files[url]
        if not self.chunked_downloads:
            return httpx.Response(200, content=data, headers={"content-type": content_type})

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 1024):
                yield data[start : start + 1024]

        return httpx.Response(200, content=chunks(), headers={"content-type": content_type})
