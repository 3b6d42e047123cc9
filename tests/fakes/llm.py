"""Fake OpenAI and Anthropic APIs speaking their real HTTP shapes, for the official SDKs.

The ``openai`` (3.x) and ``anthropic`` (2.x) SDKs send through ``httpx2``, which respx does not intercept
(and ``anthropic`` refuses an ``httpx`` client), so each fake is a real HTTP server: a Starlette app served
by uvicorn on ``127.0.0.1:<free port>`` in a background thread. Point the settings at it
(:meth:`FakeLLM.settings`): ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` = ``fake.base_url``.

* :class:`FakeOpenAI`: ``POST /v1/chat/completions``. ``Authorization: Bearer <key>`` (401
  ``invalid_api_key`` otherwise); a body with ``model``, ``messages`` and a strict ``json_schema``
  ``response_format`` (400 ``invalid_request_error`` otherwise); answers a ``chat.completion`` whose
  message content is the queued answer as JSON text.
* :class:`FakeAnthropic`: ``POST /v1/messages``. ``x-api-key`` or a bearer token (401
  ``authentication_error``) and ``anthropic-version`` headers; ``model``, ``max_tokens``, ``messages``,
  and a forced tool (400 ``invalid_request_error`` otherwise); answers a ``message`` whose one
  ``tool_use`` block carries the queued answer as its ``input``.

Behaviours are queued for the next requests, one each (else the default answer is given):
``answer_next(obj)`` (any JSON value, so a test can send a non-object), ``answer_text_next(text)`` (raw
content, e.g. not JSON; OpenAI only), ``truncate_next()`` (cut at the token bound), ``refuse_next()``,
``fail_next(status)`` (the provider's JSON error), ``slow_next(seconds)``. ``requests`` holds every
request body received, ``reset()`` clears both.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "test-llm-key"


@dataclass
class _Behaviour:
    kind: str  # "answer", "text", "truncate", "refuse", "fail", "slow"
    value: Any = None


class FakeLLM:
    """The shared server machinery and behaviour queue; subclasses speak one provider."""

    provider: ClassVar[str]
    path: ClassVar[str]

    def __init__(self, default_answer: Any = None) -> None:
        self.default_answer = default_answer if default_answer is not None else {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._queue: deque[_Behaviour] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    # --- what a test sets up ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, object]:
        """Settings overrides that make the app use this fake."""
        return {
            "llm_provider": self.provider,
            f"{self.provider}_base_url": self.base_url,
            f"{self.provider}_api_key": API_KEY,
            "llm_max_retries": 0,
            "llm_timeout_seconds": 5.0,
        }

    def answer_next(self, value: Any) -> None:
        self._push(_Behaviour("answer", value))

    def answer_text_next(self, text: str) -> None:
        self._push(_Behaviour("text", text))

    def truncate_next(self) -> None:
        self._push(_Behaviour("truncate"))

    def refuse_next(self) -> None:
        self._push(_Behaviour("refuse"))

    def fail_next(self, status: int) -> None:
        self._push(_Behaviour("fail", status))

    def slow_next(self, seconds: float) -> None:
        self._push(_Behaviour("slow", seconds))

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.headers.clear()

    def _push(self, behaviour: _Behaviour) -> None:
        with self._lock:
            self._queue.append(behaviour)

    # --- the provider's side ------------------------------------------------------------------------

    async def _handle(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return self.error(
                400, "invalid_request_error", "We could not parse the JSON body of your request."
            )
        with self._lock:
            self.requests.append(body)
            self.headers.append({key.lower(): value for key, value in request.headers.items()})
            behaviour = self._queue.popleft() if self._queue else _Behaviour("answer", self.default_answer)
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        invalid = self.validate(body)
        if invalid is not None:
            return self.error(400, "invalid_request_error", invalid)
        if behaviour.kind == "slow":
            deadline = time.monotonic() + float(behaviour.value)
            # Polled, so that stopping the server (from another thread) ends the wait at once.
            while time.monotonic() < deadline and not (self._server and self._server.should_exit):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            behaviour = _Behaviour("answer", self.default_answer)
        if behaviour.kind == "fail":
            status = int(behaviour.value)
            kinds = {
                429: "rate_limit_error",
                500: "api_error",
                503: "overloaded_error",
                401: "authentication_error",
            }
            return self.error(status, kinds.get(status, "api_error"), f"fake failure {status}")
        return self.respond(body, behaviour)

    def check_auth(self, request: Request) -> JSONResponse | None:
        raise NotImplementedError

    def validate(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def respond(self, body: dict[str, Any], behaviour: _Behaviour) -> JSONResponse:
        raise NotImplementedError

    def error(self, status: int, kind: str, message: str) -> JSONResponse:
        raise NotImplementedError

    # --- the server ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FakeLLM:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http="h11",
            ws="none",
            loop="asyncio",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{self.provider}", daemon=True
        )
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake {self.provider} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # pragma: no cover - a client holding a request open
                assert self._server is not None
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FakeOpenAI(FakeLLM):
    provider = "openai"
    path = "/v1/chat/completions"

    def check_auth(self, request: Request) -> JSONResponse | None:
        if _bearer(request) != API_KEY:
            return self.error(
                401, "invalid_request_error", "Incorrect API key provided.", code="invalid_api_key"
            )
        return None

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty array"
        if any(not isinstance(m, dict) or m.get("role") not in {"system", "user"} for m in messages):
            return "invalid message role"
        response_format = body.get("response_format") or {}
        schema = (response_format.get("json_schema") or {}) if isinstance(response_format, dict) else {}
        if response_format.get("type") != "json_schema" or not isinstance(schema.get("schema"), dict):
            return "response_format must be a json_schema"
        if schema.get("strict") is True and not _strict_schema_ok(schema["schema"]):
            return "Invalid schema for response_format: strict schemas need required + additionalProperties"
        tokens = body.get("max_completion_tokens")
        if not isinstance(tokens, int) or tokens < 1:
            return "max_completion_tokens must be a positive integer"
        return None

    def respond(self, body: dict[str, Any], behaviour: _Behaviour) -> JSONResponse:
        content: str | None = None
        refusal = None
        finish = "stop"
        if behaviour.kind == "answer":
            content = json.dumps(behaviour.value)
        elif behaviour.kind == "text":
            content = str(behaviour.value)
        elif behaviour.kind == "truncate":
            content, finish = '{"primary": "#12', "length"
        elif behaviour.kind == "refuse":
            refusal = "I'm sorry, I can't help with that."
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90},
                "system_fingerprint": "fp_fake",
            }
        )

    def error(self, status: int, kind: str, message: str, code: str | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status
        )


class FakeAnthropic(FakeLLM):
    provider = "anthropic"
    path = "/v1/messages"

    def check_auth(self, request: Request) -> JSONResponse | None:
        # The API takes the key as `x-api-key` or as a bearer token (what SDK 2.x sends).
        if API_KEY not in (request.headers.get("x-api-key"), _bearer(request)):
            return self.error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            return "messages: the first message must use the user role"
        tools = body.get("tools")
        choice = body.get("tool_choice") or {}
        if not isinstance(tools, list) or not tools:
            return "tools: a forced tool is expected"
        names = {tool.get("name") for tool in tools if isinstance(tool, dict)}
        if choice.get("type") != "tool" or choice.get("name") not in names:
            return "tool_choice: must name one of the tools"
        if any(not isinstance(tool.get("input_schema"), dict) for tool in tools):
            return "tools.0.input_schema: Field required"
        return None

    def respond(self, body: dict[str, Any], behaviour: _Behaviour) -> JSONResponse:
        tool = body["tool_choice"]["name"]
        stop = "tool_use"
        content: list[dict[str, Any]]
        if behaviour.kind in {"answer", "text"}:
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": tool,
                    "input": behaviour.value,
                }
            ]
        elif behaviour.kind == "truncate":
            content, stop = [{"type": "text", "text": "Here is a pal"}], "max_tokens"
        else:  # refuse
            content, stop = [], "refusal"
        return JSONResponse(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": 50, "output_tokens": 40},
            }
        )

    def error(self, status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"},
            status_code=status,
        )


def _bearer(request: Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential if scheme.lower() == "bearer" else None


def _strict_schema_ok(schema: Any) -> bool:
    """OpenAI's strict mode: every object lists all its properties as required and forbids others."""
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object":
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(
            properties
        ):
            return False
        return all(_strict_schema_ok(value) for value in properties.values())
    if schema.get("type") == "array":
        return _strict_schema_ok(schema.get("items"))
    return True


FAKES: dict[str, type[FakeLLM]] = {"openai": FakeOpenAI, "anthropic": FakeAnthropic}
