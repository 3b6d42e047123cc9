"""Property-level authorization (OWASP API3): a client cannot give itself a role, credits, a plan, a
verified address or another owner by adding fields to a body it may send. Each write route that takes
a body of the caller's own objects is sent every privileged field name; none of them lands."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.accounts import PASSWORD, sign_up
from tests.support.http import assert_error
from tests.support.images import logo_like
from tests.support.payments import balance

PRIVILEGED: dict[str, Any] = {
    "role": "admin",
    "plan": "pro",
    "credits": 1_000_000,
    "balance": 1_000_000,
    "reserved": 0,
    "email_verified": True,
    "is_admin": True,
    "user_id": "00000000-0000-0000-0000-000000000001",
    "status": "COMPLETED",
    "featured": True,
    "banned_at": None,
    "deleted_at": None,
}


async def test_registering_with_privileged_fields_is_refused_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    credentials = {"email": "mass@example.com", "password": PASSWORD}
    refused = await client.post("/api/v1/auth/register", json={**credentials, **PRIVILEGED})
    body = assert_error(refused, 422, "validation_error")
    assert {"role", "credits", "plan"} <= {error["loc"][-1] for error in body["detail"]}  # type: ignore[union-attr]
    # Nothing was created: the address is still free.
    created = await client.post("/api/v1/auth/register", json=credentials)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PATCH", "/api/v1/users/me", {"name": "Me"}, id="profile"),
        pytest.param(
            "PUT", "/api/v1/users/me/billing-details", {"name": "Me Ltd", "country": "DE"}, id="billing"
        ),
        pytest.param("PATCH", "/api/v1/images/{image}", {"is_favourite": True}, id="gallery-item"),
        pytest.param("POST", "/api/v1/design-systems", {"name": "Mine"}, id="design-system"),
    ],
)
async def test_privileged_fields_in_a_write_body_change_nothing_of_them(
    client: httpx.AsyncClient, session: AsyncSession, method: str, path: str, body: dict[str, Any]
) -> None:
    signed = await sign_up(client, session, "owner@example.com")
    headers = signed.headers
    upload = await client.post(
        "/api/v1/uploads", headers=headers, files={"file": ("a.png", logo_like(24), "image/png")}
    )
    assert upload.status_code == 201, upload.text
    me_before = (await client.get("/api/v1/users/me", headers=headers)).json()
    balance_before = await balance(client, headers)

    response = await client.request(
        method, path.format(image=upload.json()["id"]), headers=headers, json={**PRIVILEGED, **body}
    )

    # Either the body is refused whole (a strict schema: 422) or the extra fields are dropped.
    assert response.status_code in (200, 201, 422), response.text
    answered = response.json() if response.status_code != 422 else {}
    assert answered.get("role", "user") == "user"
    assert answered.get("featured", False) is False
    assert answered.get("status", "COMPLETED") == "COMPLETED"  # an upload is born completed
    me_after = (await client.get("/api/v1/users/me", headers=headers)).json()
    assert {key: me_after[key] for key in ("role", "plan", "email_verified", "id")} == {
        key: me_before[key] for key in ("role", "plan", "email_verified", "id")
    }
    assert await balance(client, headers) == balance_before
    mine = (await client.get("/api/v1/images", headers=headers)).json()["items"]
    assert [item["id"] for item in mine] == [upload.json()["id"]]
