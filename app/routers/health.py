from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from app.dependencies import ContainerDep
from app.errors import NotFound, ServiceUnavailable, Unauthenticated
from app.metrics import CONTENT_TYPE_LATEST
from app.schemas.health import HealthStatus, ReadinessStatus
from app.services.health import check_readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthStatus)
async def healthz() -> HealthStatus:
    """The process is up and serving."""
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    response_model=ReadinessStatus,
    responses={
        503: {
            "description": "A dependency is unreachable, or failed webhook events pile up (named in "
            "`detail` and `checks`)."
        }
    },
)
async def readyz(container: ContainerDep) -> ReadinessStatus:
    """Every dependency this process needs answers (the database, and Redis when configured), and no
    webhook events stayed failed too long (READYZ_FAILED_WEBHOOK_AGE_SECONDS / _COUNT)."""
    timeout = container.settings.db_connect_timeout_seconds + 1
    readiness = await check_readiness(container, timeout_seconds=timeout)
    if readiness.failing:
        raise ServiceUnavailable(f"Not ready: {readiness.explain()}.", extra={"checks": readiness.checks})
    return ReadinessStatus(status="ok", checks=readiness.checks)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, container: ContainerDep) -> Response:
    """Prometheus exposition: requests by route and status, job outcomes and durations, webhooks."""
    settings = container.settings
    if not settings.metrics_enabled:
        raise NotFound()
    if settings.metrics_token is not None:
        offered = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(offered, settings.metrics_token.get_secret_value().encode()):
            raise Unauthenticated("The metrics need `Authorization: Bearer <METRICS_TOKEN>`.")
    return Response(container.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
