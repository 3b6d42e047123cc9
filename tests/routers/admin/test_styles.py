"""The hairstyle catalogue managed over HTTP: admins create, edit, retire and delete styles; GET /styles
shows the active ones; every change is audited."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import AuditLog
from tests.factories import bearer, make_user
from tests.support.http import assert_error

URL = "/api/v1/admin/styles"


async def test_admins_create_edit_retire_and_delete_styles(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    headers = bearer(container, await make_user(session, settings, role="admin"))
    body = {
        "name": "Curtain bangs",
        "prompt": "soft curtain bangs, shoulder length",
        "thumbnail_url": "https://cdn.example.com/bangs.webp",
        "sort_order": 2,
    }
    created = await client.post(URL, headers=headers, json=body)
    assert created.status_code == 201, created.text
    style = created.json()
    assert (style["name"], style["thumbnail_url"], style["is_active"]) == (
        "Curtain bangs",
        "https://cdn.example.com/bangs.webp",
        True,
    )
    assert_error(await client.post(URL, headers=headers, json=body), 409, "style_name_taken")
    shouted = {**body, "name": "CURTAIN BANGS"}
    assert_error(await client.post(URL, headers=headers, json=shouted), 409, "style_name_taken")
    public = (await client.get("/api/v1/styles")).json()
    assert "Curtain bangs" in [item["name"] for item in public]

    edited = await client.patch(
        f"{URL}/{style['id']}", headers=headers, json={"description": "Face-framing", "is_active": False}
    )
    assert edited.json()["description"] == "Face-framing"
    assert edited.json()["prompt"] == body["prompt"]
    assert "Curtain bangs" not in [item["name"] for item in (await client.get("/api/v1/styles")).json()]
    listed = (await client.get(URL, headers=headers)).json()
    assert [item["is_active"] for item in listed if item["id"] == style["id"]] == [False]

    other = await client.post(URL, headers=headers, json={**body, "name": "Test style two"})
    renamed = await client.patch(
        f"{URL}/{other.json()['id']}", headers=headers, json={"name": "Curtain bangs"}
    )
    assert_error(renamed, 409, "style_name_taken")
    assert_error(
        await client.patch(f"{URL}/{style['id']}", headers=headers, json={"prompt": None}),
        422,
        "validation_error",
    )

    assert (await client.delete(f"{URL}/{style['id']}", headers=headers)).status_code == 204
    assert_error(await client.delete(f"{URL}/{style['id']}", headers=headers), 404, "not_found")
    assert_error(
        await client.patch(f"{URL}/{uuid.uuid4()}", headers=headers, json={"name": "x"}), 404, "not_found"
    )

    session.expunge_all()
    actions = list(
        await session.scalars(
            select(AuditLog.action).where(AuditLog.action.like("style.%")).order_by(AuditLog.created_at)
        )
    )
    assert actions == ["style.created", "style.updated", "style.created", "style.deleted"]


async def test_style_input_is_checked(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    headers = bearer(container, await make_user(session, settings, role="admin"))
    for bad in (
        {"name": "", "prompt": "p"},
        {"name": "n"},
        {"name": "n", "prompt": "p", "thumbnail_url": "javascript:alert(1)"},
        {"name": "n" * 101, "prompt": "p"},
        {"name": "n", "prompt": "p", "sort_order": 10**12},
        {"name": "n", "prompt": "p", "category": "Celebrity"},
        {"name": "n", "prompt": "p", "category": "c" * 33},
        {"name": "n", "prompt": "p", "category": None},
    ):
        assert_error(await client.post(URL, headers=headers, json=bad), 422, "validation_error")


async def test_styles_have_categories_the_public_catalogue_filters_and_lists(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    headers = bearer(container, await make_user(session, settings, role="admin"))
    seeded = (await client.get("/api/v1/styles")).json()
    assert {style["category"] for style in seeded} == {"standard"}  # the migration's default
    celebrity = {
        "name": "Test celebrity quiff",
        "prompt": "a tall glossy quiff",
        "category": "celebrity",
        "thumbnail_url": "https://cdn.example.com/quiff.webp",
    }
    created = await client.post(URL, headers=headers, json=celebrity)
    assert created.status_code == 201, created.text
    assert created.json()["category"] == "celebrity"
    plain = await client.post(URL, headers=headers, json={"name": "Test plain crop", "prompt": "a crop"})
    assert plain.json()["category"] == "standard"
    hidden = {**celebrity, "name": "Test retired mullet", "is_active": False}
    assert (await client.post(URL, headers=headers, json=hidden)).status_code == 201

    listed = (await client.get("/api/v1/styles", params={"category": "celebrity"})).json()
    assert listed == [
        {
            "id": created.json()["id"],
            "name": "Test celebrity quiff",
            "description": None,
            "thumbnail_url": "https://cdn.example.com/quiff.webp",
            "category": "celebrity",
        }
    ]
    categories = (await client.get("/api/v1/styles/categories")).json()
    assert categories == [
        {"name": "celebrity", "styles": 1},
        {"name": "standard", "styles": len(seeded) + 1},
    ]
    assert (await client.get("/api/v1/styles", params={"category": "anime"})).json() == []
    assert_error(
        await client.get("/api/v1/styles", params={"category": "Not a slug"}), 422, "validation_error"
    )

    moved = await client.patch(f"{URL}/{plain.json()['id']}", headers=headers, json={"category": "celebrity"})
    assert moved.json()["category"] == "celebrity"
    assert (await client.get("/api/v1/styles/categories")).json() == [
        {"name": "celebrity", "styles": 2},
        {"name": "standard", "styles": len(seeded)},
    ]
    refused = await client.patch(f"{URL}/{plain.json()['id']}", headers=headers, json={"category": None})
    assert_error(refused, 422, "validation_error")
