"""Design systems over HTTP: generated (paid, by tier) from a colour or an image, written by hand, edited
(version), deleted, shared in the showcase; owner-only; and the usage summary."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.models import CreditLedgerEntry, DesignSystem, DesignSystemTag, UsageAction, UsageRecord, User
from app.services import usage
from tests.conftest import make_settings
from tests.factories import bearer, make_user
from tests.support.design import (
    GENERATE,
    SHOWCASE,
    SYSTEMS,
    USAGE,
    app_client,
    balance,
    blocks_png,
    upload,
    wcag_ratio,
)
from tests.support.http import assert_error

BONUS = 10.0

MANUAL: dict[str, Any] = {
    "name": "Hand made",
    "description": "Written by hand.",
    "tags": ["Minimal", "print", "minimal"],
    "colors": {
        "brand": {"DEFAULT": "#0F766E", "50": "#F0FDFA", "900": "#134e4a"},
        "ink": {"DEFAULT": "#111"},
    },
    "typography": {
        "families": {"display": ["Fraunces", "serif"]},
        "sizes": {"base": "1.00rem", "xl": "1.25rem"},
        "weights": {"bold": 700},
        "line_heights": {"normal": 1.5},
    },
    "spacing": {"1": "4px", "2": "0.5rem"},
    "radii": {"md": "6px"},
    "shadows": {"md": [{"x": "0px", "y": "2px", "blur": "4px", "spread": "-1px", "color": "#0000001A"}]},
}


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture
async def other(session: AsyncSession, settings: Settings) -> User:
    return await make_user(session, settings, username=f"maker{uuid.uuid4().hex[:6]}")


@pytest.fixture
def other_auth(container: Container, other: User) -> dict[str, str]:
    return bearer(container, other)


async def count(session: AsyncSession, model: type[Any], *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def create(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(SYSTEMS, headers=headers, json={**MANUAL, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- generated ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "price"), [("colors", 1.0), ("full", 3.0)])
async def test_generating_from_a_colour_saves_a_private_system_charged_by_tier(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    user: User,
    tier: str,
    price: float,
) -> None:
    response = await client.post(GENERATE, headers=auth, json={"base_color": "#7C3AED", "tier": tier})
    assert response.status_code == 201, response.text
    generated = response.json()
    system = generated["design_system"]
    assert system["source"] == "color"
    assert system["colors"]["primary"]["DEFAULT"] == "#7c3aed"
    assert set(system["colors"]) == {
        "primary",
        "secondary",
        "accent",
        "neutral",
        "success",
        "warning",
        "danger",
        "info",
    }
    assert list(system["colors"]["neutral"]) == [
        "50",
        "100",
        "200",
        "300",
        "400",
        "500",
        "600",
        "700",
        "800",
        "900",
        "950",
    ]
    for group in system["colors"].values():
        if "foreground" in group:
            assert wcag_ratio(group["foreground"], group["DEFAULT"]) >= 4.5
    assert all(wcag_ratio(pair["foreground"], pair["background"]) >= 4.5 for pair in generated["pairs"])
    if tier == "full":
        assert system["typography"]["sizes"]["base"] == "1rem"
        assert list(system["spacing"])[:3] == ["0", "1", "2"]
        assert set(system["radii"]) >= {"sm", "md", "lg", "full"}
        assert len(system["shadows"]["md"]) == 2
    else:
        assert system["spacing"] == {}
        assert system["shadows"] == {}
    assert (system["version"], system["is_public"], system["is_owner"]) == (1, False, True)
    assert generated["credits_charged"] == price
    assert await balance(client, auth) == BONUS - price
    [record] = list(await session.scalars(select(UsageRecord).where(UsageRecord.user_id == user.id)))
    assert (record.action, record.credits, str(record.object_id)) == (
        f"design_system_{tier}",
        int(price * 1000),
        system["id"],
    )
    assert (await client.get(f"{SYSTEMS}/{system['id']}", headers=auth)).json() == system


async def test_generating_from_an_image_takes_its_dominant_colours(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    upload_id = await upload(client, auth, blocks_png([("#f8fafc", 500), ("#be123c", 300), ("#0369a1", 200)]))
    response = await client.post(GENERATE, headers=auth, json={"upload_id": upload_id, "mode": "kmeans"})
    assert response.status_code == 201, response.text
    colors = response.json()["design_system"]["colors"]
    assert (colors["primary"]["DEFAULT"], colors["secondary"]["DEFAULT"]) == ("#be123c", "#0369a1")


async def test_generating_without_credits_is_402_and_saves_nothing(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    poor = await make_user(session, settings.model_copy(update={"signup_bonus_credits": Decimal(2)}))
    headers = bearer(container, poor)
    ledger = await count(session, CreditLedgerEntry)
    body = assert_error(
        await client.post(GENERATE, headers=headers, json={"base_color": "#7c3aed"}),
        402,
        "insufficient_credits",
    )
    assert (body["required"], body["available"]) == (3.0, 2.0)
    assert await count(session, DesignSystem, DesignSystem.user_id == poor.id) == 0
    assert await count(session, UsageRecord, UsageRecord.user_id == poor.id) == 0
    assert await count(session, CreditLedgerEntry) == ledger
    # The colours tier is within reach.
    assert (
        await client.post(GENERATE, headers=headers, json={"base_color": "#7c3aed", "tier": "colors"})
    ).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tier": "full"},
        {"base_color": "#7c3aed", "upload_id": str(uuid.uuid4())},
        {"base_color": "#7c3aed", "tier": "deluxe"},
        {"base_color": "#7c3aed", "mode": "octree"},
        {"base_color": "#7c3aed", "name": ""},
        {"brand_description": "ab"},
    ],
)
async def test_bad_generate_requests_are_422_and_change_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, user: User, body: dict[str, Any]
) -> None:
    assert_error(await client.post(GENERATE, headers=auth, json=body), 422, "validation_error")
    assert await count(session, DesignSystem, DesignSystem.user_id == user.id) == 0
    assert await balance(client, auth) == BONUS


# --- CRUD ----------------------------------------------------------------------------------------------


async def test_a_hand_made_system_is_stored_normalised_and_free(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    system = await create(client, auth)
    assert system["colors"] == {
        "brand": {"DEFAULT": "#0f766e", "50": "#f0fdfa", "900": "#134e4a"},
        "ink": {"DEFAULT": "#111111"},
    }
    assert system["typography"]["sizes"] == {"base": "1rem", "xl": "1.25rem"}
    assert system["shadows"]["md"][0]["color"] == "#0000001a"
    assert system["tags"] == ["minimal", "print"]
    assert (system["source"], system["version"], system["owner"]) == ("manual", 1, None)
    assert await balance(client, auth) == BONUS


async def test_editing_bumps_the_version_once_per_change_and_checks_the_one_sent(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    system = await create(client, auth)
    path = f"{SYSTEMS}/{system['id']}"
    edited = (await client.patch(path, headers=auth, json={"name": "Renamed", "radii": {"md": "8px"}})).json()
    assert (edited["name"], edited["radii"], edited["version"]) == ("Renamed", {"md": "8px"}, 2)
    assert edited["colors"] == system["colors"]  # untouched fields stay
    same = (await client.patch(path, headers=auth, json={"name": "Renamed"})).json()
    assert same["version"] == 2  # nothing changed
    tagged = (await client.patch(path, headers=auth, json={"tags": ["bold"], "version": 2})).json()
    assert (tagged["tags"], tagged["version"]) == (["bold"], 3)
    stale = await client.patch(path, headers=auth, json={"name": "Mine", "version": 2})
    assert assert_error(stale, 409, "version_conflict")["version"] == 3
    assert (await client.get(path, headers=auth)).json()["name"] == "Renamed"


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"colors": {"brand": {"500": "teal"}}}, "validation_error"),
        ({"colors": {"Brand": {"500": "#000000"}}}, "validation_error"),
        ({"colors": {"brand": {}}}, "validation_error"),
        ({"spacing": {"1": "4em"}}, "validation_error"),
        ({"typography": {"families": {"body": ["Inter;}body{color:red"]}}}, "validation_error"),
        (
            {
                "shadows": {
                    "md": [{"x": "0px", "y": "1px", "blur": "-2px", "spread": "0px", "color": "#00000010"}]
                }
            },
            "validation_error",
        ),
        ({"name": None}, "validation_error"),
        ({"owner": "someone"}, "validation_error"),
        (
            {"colors": {"brand-dark": {"500": "#000000"}, "brand": {"dark-500": "#111111"}}},
            "token_name_collision",
        ),
        ({"version": 0}, "validation_error"),
    ],
)
async def test_bad_edits_are_422_and_change_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], patch: dict[str, Any], error: str
) -> None:
    system = await create(client, auth)
    path = f"{SYSTEMS}/{system['id']}"
    assert_error(await client.patch(path, headers=auth, json=patch), 422, error)
    assert (await client.get(path, headers=auth)).json() == system


async def test_own_systems_come_newest_first_in_cursor_pages_and_by_tag(
    client: httpx.AsyncClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    made = [
        (await create(client, auth, name=f"S{index}", tags=["even" if index % 2 == 0 else "odd"]))["id"]
        for index in range(5)
    ]
    await create(client, other_auth)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(SYSTEMS, headers=auth, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    evens = (await client.get(SYSTEMS, headers=auth, params={"tag": "EVEN"})).json()["items"]
    assert [item["id"] for item in evens] == [made[4], made[2], made[0]]
    assert_error(
        await client.get(SYSTEMS, headers=auth, params={"cursor": "nonsense!"}), 400, "invalid_cursor"
    )


async def test_deleting_removes_it(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    system = await create(client, auth)
    assert (await client.delete(f"{SYSTEMS}/{system['id']}", headers=auth)).status_code == 204
    assert_error(await client.get(f"{SYSTEMS}/{system['id']}", headers=auth), 404, "not_found")
    assert await count(session, DesignSystem, DesignSystem.id == uuid.UUID(system["id"])) == 0


async def test_the_per_user_limit_is_409(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    async with app_client(settings.model_copy(update={"design_systems_max_per_user": 1}), database) as client:
        await create(client, auth)
        assert_error(await client.post(SYSTEMS, headers=auth, json=MANUAL), 409, "design_system_limit")
        assert_error(
            await client.post(GENERATE, headers=auth, json={"base_color": "#123456"}),
            409,
            "design_system_limit",
        )
        assert await balance(client, auth) == BONUS


# --- owner only, sharing, the showcase ------------------------------------------------------------------


async def test_another_users_private_system_is_404_everywhere_and_never_in_the_showcase(
    client: httpx.AsyncClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    system = await create(client, other_auth, tags=["secret"])
    path = f"{SYSTEMS}/{system['id']}"
    assert_error(await client.get(path, headers=auth), 404, "not_found")
    assert_error(await client.patch(path, headers=auth, json={"name": "Mine"}), 404, "not_found")
    assert_error(await client.delete(path, headers=auth), 404, "not_found")
    assert_error(await client.post(f"{path}/share", headers=auth), 404, "not_found")
    assert_error(await client.get(f"{path}/export", headers=auth, params={"format": "css"}), 404, "not_found")
    assert (await client.get(SYSTEMS, headers=auth)).json()["items"] == []
    for params in ({}, {"tag": "secret"}):
        assert (await client.get(SHOWCASE, params=params)).json() == {"items": [], "next_cursor": None}
    assert (await client.get(path, headers=other_auth)).json()["name"] == "Hand made"


async def test_a_shared_system_is_readable_by_others_but_only_its_owner_edits_it(
    client: httpx.AsyncClient, auth: dict[str, str], other_auth: dict[str, str], other: User
) -> None:
    system = await create(client, other_auth)
    path = f"{SYSTEMS}/{system['id']}"
    shared = (await client.post(f"{path}/share", headers=other_auth)).json()
    assert shared["is_public"] is True
    assert shared["shared_at"] is not None
    assert shared["version"] == 1
    seen = (await client.get(path, headers=auth)).json()
    assert (seen["is_owner"], seen["owner"]) == (False, {"display_name": other.username})
    assert other.email not in str(seen)
    assert_error(await client.patch(path, headers=auth, json={"name": "Mine"}), 404, "not_found")
    assert_error(await client.delete(f"{path}/share", headers=auth), 404, "not_found")
    [item] = (await client.get(SHOWCASE)).json()["items"]
    assert item["id"] == system["id"]
    assert item["owner"] == {"display_name": other.username}
    assert "user_id" not in item
    assert other.email not in str(item)
    # Taken back: gone from the showcase and private again.
    assert (await client.delete(f"{path}/share", headers=other_auth)).json()["is_public"] is False
    assert (await client.get(SHOWCASE)).json()["items"] == []
    assert_error(await client.get(path, headers=auth), 404, "not_found")


async def test_the_showcase_puts_featured_first_pages_by_cursor_and_filters_by_tag(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    other_auth: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    admin = bearer(container, await make_user(session, settings, role="admin"))
    ids = []
    for index in range(5):
        system = await create(
            client,
            other_auth if index % 2 else auth,
            name=f"P{index}",
            tags=["warm"] if index < 3 else ["cool"],
        )
        owner = other_auth if index % 2 else auth
        await client.post(f"{SYSTEMS}/{system['id']}/share", headers=owner)
        ids.append(system["id"])
    assert_error(await client.put(f"{SYSTEMS}/{ids[1]}/featured", headers=auth), 403, "forbidden")
    assert (await client.put(f"{SYSTEMS}/{ids[1]}/featured", headers=admin)).json()["featured"] is True
    assert (await client.put(f"{SYSTEMS}/{ids[3]}/featured", headers=admin)).status_code == 200
    expected = [ids[3], ids[1], ids[4], ids[2], ids[0]]  # featured (newest shared first), then the rest
    seen: list[str] = []
    cursor = None
    while True:
        page = (
            await client.get(SHOWCASE, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    warm = (await client.get(SHOWCASE, params={"tag": "warm"})).json()["items"]
    assert [item["id"] for item in warm] == [ids[1], ids[2], ids[0]]
    assert_error(await client.get(SHOWCASE, params={"tag": "no spaces"}), 422, "validation_error")
    assert_error(await client.get(SHOWCASE, params={"cursor": "e30"}), 400, "invalid_cursor")


async def test_systems_of_erased_or_banned_accounts_leave_the_showcase(
    client: httpx.AsyncClient, other_auth: dict[str, str], other: User, session: AsyncSession
) -> None:
    system = await create(client, other_auth)
    await client.post(f"{SYSTEMS}/{system['id']}/share", headers=other_auth)
    assert len((await client.get(SHOWCASE)).json()["items"]) == 1
    for closed in ({"is_active": False}, {"is_active": True, "erased_at": datetime.now(UTC)}):
        await session.execute(update(User).where(User.id == other.id).values(**closed))
        await session.flush()
        assert (await client.get(SHOWCASE)).json()["items"] == []


async def test_erasing_the_account_deletes_its_systems_and_their_tags(
    client: httpx.AsyncClient, other_auth: dict[str, str], other: User, session: AsyncSession
) -> None:
    system = await create(client, other_auth, tags=["brand"])
    await client.post(f"{SYSTEMS}/{system['id']}/share", headers=other_auth)

    assert (await client.delete("/api/v1/users/me", headers=other_auth)).status_code == 204

    assert (await client.get(SHOWCASE)).json()["items"] == []
    assert await count(session, DesignSystem, DesignSystem.user_id == other.id) == 0
    assert await count(session, DesignSystemTag) == 0


async def test_the_account_export_carries_the_users_systems(
    client: httpx.AsyncClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    mine = await create(client, auth, name="Mine")
    await create(client, other_auth, name="Theirs")

    exported = (await client.get("/api/v1/users/me/export", headers=auth)).json()

    assert [(s["id"], s["name"], s["colors"]) for s in exported["design_systems"]] == [
        (mine["id"], "Mine", mine["colors"])
    ]


async def test_a_maker_without_a_username_shows_their_name_or_anonymous(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    for name, shown in (("Ada L.", "Ada L."), (None, "Anonymous designer")):
        maker = await make_user(session, settings, name=name)
        headers = bearer(container, maker)
        system = await create(client, headers)
        await client.post(f"{SYSTEMS}/{system['id']}/share", headers=headers)
        items = (await client.get(SHOWCASE)).json()["items"]
        assert items[0]["owner"] == {"display_name": shown}


# --- usage ------------------------------------------------------------------------------------------


async def test_usage_sums_by_action_and_day_within_the_period(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, user: User, other: User
) -> None:
    await client.post(GENERATE, headers=auth, json={"base_color": "#7c3aed", "tier": "colors"})
    await client.post("/api/v1/palettes", headers=auth, json={"base_color": "#7c3aed"})
    await client.post("/api/v1/palettes", headers=auth, json={"base_color": "#7c3aed"})
    # Earlier days, another user's spend, and a failed attempt, recorded as the image endpoints will.
    day_before = datetime.now(UTC) - timedelta(days=1)
    for action, credits, success, owner, moment in (
        (UsageAction.remove_background, 1000, True, user, day_before),
        (UsageAction.vectorize_preview, 200, True, user, day_before),
        (UsageAction.vectorize_preview, 0, False, user, day_before),
        (UsageAction.generate, 1000, True, user, day_before - timedelta(days=40)),
        (UsageAction.palette, 1000, True, other, day_before),
    ):
        await usage.record(
            session, user_id=owner.id, action=action, credits=credits, success=success, at=moment
        )
    today, yesterday = datetime.now(UTC).date(), day_before.date()
    summary = (await client.get(USAGE, headers=auth)).json()
    assert (summary["from"], summary["to"]) == (str(today - timedelta(days=29)), str(today))
    assert summary["days"] == [
        {"day": str(yesterday), "action": "remove_background", "count": 1, "failed": 0, "credits": 1.0},
        {"day": str(yesterday), "action": "vectorize_preview", "count": 1, "failed": 1, "credits": 0.2},
        {"day": str(today), "action": "design_system_colors", "count": 1, "failed": 0, "credits": 1.0},
        {"day": str(today), "action": "palette", "count": 2, "failed": 0, "credits": 2.0},
    ]
    assert summary["credits"] == 4.2
    assert {total["action"]: total["count"] for total in summary["totals"]} == {
        "design_system_colors": 1,
        "palette": 2,
        "remove_background": 1,
        "vectorize_preview": 1,
    }
    only_yesterday = (
        await client.get(USAGE, headers=auth, params={"from": str(yesterday), "to": str(yesterday)})
    ).json()
    assert {day["action"] for day in only_yesterday["days"]} == {"remove_background", "vectorize_preview"}
    longer = (await client.get(USAGE, headers=auth, params={"from": str(today - timedelta(days=60))})).json()
    assert "generate" in {total["action"] for total in longer["totals"]}


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"from": "2026-02-30"}, 422, "validation_error"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, 422, "invalid_period"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, 422, "invalid_period"),
        ({"to": "yesterday"}, 422, "validation_error"),
    ],
)
async def test_a_bad_usage_period_is_422(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str], status: int, error: str
) -> None:
    assert_error(await client.get(USAGE, headers=auth, params=params), status, error)
    assert_error(await client.get(USAGE), 401, "unauthenticated")
