"""What design-system requests can fail with, for a client."""

from __future__ import annotations

from app.errors import AppError, Conflict, Forbidden, NotFound


class DesignSystemNotFound(NotFound):
    default_detail = "No such design system."


class PlanRequired(Forbidden):
    code = "plan_required"


class DesignSystemLimit(Conflict):
    code = "design_system_limit"


class VersionConflict(Conflict):
    code = "version_conflict"


class TokenNameCollision(AppError):
    status_code = 422
    code = "token_name_collision"


class UnreadableImage(AppError):
    status_code = 422
    code = "unreadable_image"
    default_detail = "The upload's image cannot be read for colours."


class ProviderFailed(AppError):
    """The LLM gave no usable answer. Nothing was charged; the failed attempt is recorded in the usage
    history (that row is kept: `keep_changes`)."""

    status_code = 502
    code = "provider_error"

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail, extra={"reason": reason, "credits_charged": 0}, keep_changes=True)


class InvalidProviderOutput(ProviderFailed):
    code = "invalid_provider_output"
