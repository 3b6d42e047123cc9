"""The bodies of refusals, as the OpenAPI document declares them (app/errors.py writes them).

Every error is `{"error": code, "detail": sentence, "request_id": id}`, a few with machine-readable facts
next to them (`required`/`available` of insufficient credits, `checks` of /readyz, `resets_at` of a
quota). Validation errors keep FastAPI's list of issues as `detail`. The Hair Try-On compat routes answer
their session refusals with an object `detail` ({code, message}) the SPA branches on, and its presigned
upload refuses the way S3 does, in XML."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorOut(BaseModel):
    """A refusal: a stable machine code, a sentence for people, the request id to quote."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    error: str = Field(examples=["not_found"])
    detail: str = Field(examples=["The resource does not exist."])
    request_id: str | None


class ValidationIssueOut(BaseModel):
    """One invalid input, as pydantic reports it."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    """422: `validation_error` with the invalid fields, or a code of its own (e.g. `invalid_period`) with a
    sentence."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    error: str = Field(examples=["validation_error"])
    detail: list[ValidationIssueOut] | str
    request_id: str | None


class HairTryOnRefusalDetail(BaseModel):
    code: str = Field(examples=["NOT_AUTHENTICATED"])
    message: str


class HairTryOnErrorOut(BaseModel):
    """A Hair Try-On refusal: the session gate's ({code, message} in `detail`, e.g. NO_COOKIES_FOUND,
    NOT_AUTHENTICATED) or any other in the native shape."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    error: str
    detail: HairTryOnRefusalDetail | str
    request_id: str | None


DESCRIPTIONS: dict[int, str] = {
    400: "Malformed: the body is not valid JSON or not a valid form, a cursor or token is malformed, or the "
    "request contradicts itself.",
    401: "Not authenticated, or the credential is invalid, expired or revoked.",
    402: "Not enough credits (`insufficient_credits`, with `required` and `available`).",
    403: "Authenticated but not allowed.",
    404: "No such resource (or not yours).",
    405: "The method is not allowed on this path (the `Allow` header lists those that are).",
    409: "Conflicts with the current state.",
    413: "The request body (or an uploaded file) is too large.",
    415: "Not a supported content type or image.",
    422: "Invalid fields (`validation_error`, with the issues) or an invalid combination of them.",
    429: "Rate limited or over a quota: retry after `Retry-After` seconds.",
    503: "A dependency is unavailable (`database_unavailable`; retry later) or this feature's provider is "
    "not configured on this server (`provider_not_configured`).",
}


def error_responses(*statuses: int, model: type[BaseModel] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or a route: each status with its error body."""
    return {
        status: {"model": ValidationErrorOut if status == 422 else model, "description": DESCRIPTIONS[status]}
        for status in statuses
    }


S3_ERROR_XML: dict[str, Any] = {
    "application/xml": {
        "schema": {
            "type": "string",
            "description": "An S3-style `<Error>` document (`Code`, `Message`, `RequestId`; "
            "`ProposedSize`/`MaxSizeAllowed` with EntityTooLarge).",
        }
    }
}
