"""Every route under /api/v1/admin/ refuses anonymous callers (401) and non-admins (403): the test walks
the app's routes, so a route added later cannot forget the admin dependency."""

from __future__ import annotations

import re
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.security import PasswordHasher
from app.services import admin as admin_service
from tests.factories import bearer, make_user
from tests.support.http import assert_error

ADMIN_PREFIX = "/api/v1/admin/"


def _admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with ids filled in) of every admin operation the app serves, read from its OpenAPI
    document (the app's own list of what it routes; included routers are not flattened in app.routes)."""
    routes = []
    for template, operations in app.openapi()["paths"].items():
        if template.startswith(ADMIN_PREFIX):
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), template)
            routes.extend((method.upper(), path) for method in sorted(operations))
    return routes


async def test_every_admin_route_refuses_anonymous_and_non_admin_callers(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    routes = _admin_routes(app)
    assert "POST" in {method for method, path in routes if path.endswith("/credits")}
    for method, path in routes:
        anonymous = await client.request(method, path, json={})
        assert_error(anonymous, 401, "unauthenticated")
        user = await client.request(method, path, headers=auth, json={})
        assert_error(user, 403, "forbidden")


async def test_an_account_made_admin_by_the_cli_service_signs_in_and_passes(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    admin, created = await admin_service.create_admin(
        session, settings, PasswordHasher.from_settings(settings), "Ops@Example.com", "long enough pw"
    )
    assert created
    assert admin.role == "admin"
    credentials = {"email": "ops@example.com", "password": "long enough pw"}
    login = await client.post("/api/v1/auth/login", json=credentials)
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    target = await make_user(session, settings)
    url = f"/api/v1/admin/users/{target.id}/credits"
    granted = await client.post(url, headers=headers, json={"amount": 1, "note": "welcome"})
    assert granted.status_code == 200
    demoted = await admin_service.set_role(session, "ops@example.com", "user")
    assert demoted.role == "user"
    refused = await client.post(url, headers=bearer(container, admin), json={"amount": 1, "note": "x"})
    assert_error(refused, 403, "forbidden")
