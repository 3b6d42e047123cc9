from __future__ import annotations

from fastapi import APIRouter

from app.dependencies import DatabaseDep, SettingsDep
from app.errors import ServiceUnavailable
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
    responses={503: {"description": "A dependency (named in `detail` and `checks`) is unreachable."}},
)
async def readyz(database: DatabaseDep, settings: SettingsDep) -> ReadinessStatus:
    """Every dependency this process needs answers."""
    readiness = await check_readiness(database, timeout_seconds=settings.db_connect_timeout_seconds + 1)
    if readiness.failing:
        raise ServiceUnavailable(
            f"Not ready: {', '.join(readiness.failing)} unreachable.",
            extra={"checks": readiness.checks},
        )
    return ReadinessStatus(status="ok", checks=readiness.checks)
