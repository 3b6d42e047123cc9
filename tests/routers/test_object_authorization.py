"""Object-level authorization (OWASP API1): every route that takes an object's id refuses another user's
object with 404, as if it did not exist, and changes nothing. The test walks the routes the app serves
(hidden ones included), so a route added later fails here until its id is given an owner below."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import User
from tests.factories import access_token, bearer, make_clone_model, make_order, make_user
from tests.support.images import logo_like

_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_ADMIN_PREFIX = "/api/v1/admin/"
# Featuring a design system is an administrator's act: 403 before any lookup.
_NOT_404 = {
    ("PUT", "/api/v1/design-systems/{system_id}/featured"): 403,
    ("DELETE", "/api/v1/design-systems/{system_id}/featured"): 403,
}


def served_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every non-admin operation that takes a path parameter."""
    operations = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for context in contexts() if contexts else []:
            if not _PARAMETER.search(context.path) or context.path.startswith(_ADMIN_PREFIX):
                continue
            operations.update((method, context.path) for method in context.methods or () if method != "HEAD")
    return sorted(operations)


@dataclass
class OwnedObjects:
    """One object of each kind, owned by someone else than the caller, by path parameter name."""

    ids: dict[str, str]

    def fill(self, template: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            assert name in self.ids, f"{template}: give an owned object for {{{name}}} in this test"
            return self.ids[name]

        return _PARAMETER.sub(one, template)


async def _owned_objects(
    client: httpx.AsyncClient, session: AsyncSession, owner: User, headers: dict[str, str]
) -> OwnedObjects:
    png = {"file": ("a.png", logo_like(24), "image/png")}
    upload = await client.post("/api/v1/uploads", headers=headers, files=png)
    key = await client.post("/api/v1/api-keys", headers=headers, json={"name": "owner's"})
    system = await client.post("/api/v1/design-systems", headers=headers, json={"name": "owner's"})
    photos = await client.post(
        "/api/v1/photos", headers=headers, files=[("files", ("p.png", logo_like(32), "image/png"))]
    )
    for response in (upload, key, system, photos):
        assert response.status_code == 201, response.text
    photo_id = photos.json()["items"][0]["id"]
    order = await make_order(session, owner, provider="dodo", status="paid", provider_payment_id="pay_owners")
    model = await make_clone_model(session, owner, [uuid.UUID(photo_id)], status="ready")
    file_key = upload.json()["url"].split("/files/", 1)[1].split("?", 1)[0]
    return OwnedObjects(
        {
            "image_id": upload.json()["id"],
            "key_id": key.json()["id"],
            "system_id": system.json()["id"],
            "photo_id": photo_id,
            "order_id": str(order.id),
            "model_id": str(model.id),
            # A signed file URL is its own authorisation: the stranger guesses the signature.
            "key": f"{file_key}?expires=4102444800&signature={'0' * 64}",
            "upload_id": f"{upload.json()['id']}?sig={'0' * 64}",
            "payment_id": "pay_owners",
        }
    )


async def _owner_view(
    client: httpx.AsyncClient, headers: dict[str, str], objects: OwnedObjects
) -> dict[str, object]:
    """What the owner sees of each object: must be the same after the stranger's attempts."""
    ids = objects.ids
    image = await client.get(f"/api/v1/images/{ids['image_id']}", headers=headers)
    system = await client.get(f"/api/v1/design-systems/{ids['system_id']}", headers=headers)
    model = await client.get(f"/api/v1/models/{ids['model_id']}", headers=headers)
    for response in (image, system, model):
        assert response.status_code == 200, response.text
    keys = (await client.get("/api/v1/api-keys", headers=headers)).json()
    photos = (await client.get("/api/v1/photos", headers=headers)).json()
    orders = (await client.get("/api/v1/payment/orders", headers=headers)).json()
    return {
        "image": {k: v for k, v in image.json().items() if not k.endswith(("url", "outputs"))},
        "system": system.json(),
        "model": model.json(),
        "keys": [(key["id"], key["revoked_at"]) for key in keys],
        "photos": [photo["id"] for photo in photos["items"]],
        "orders": [(order["id"], order["status"]) for order in orders],
    }


async def test_every_id_taking_route_hides_another_users_object_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    owner = await make_user(session, settings)
    owner_headers = bearer(container, owner)
    objects = await _owned_objects(client, session, owner, owner_headers)
    before = await _owner_view(client, owner_headers, objects)
    assert before["keys"]
    assert before["photos"]
    assert before["orders"]
    stranger_user = await make_user(session, settings)
    # Bearer for the native routes, the cookie session and an allowed Origin for the Hair Try-On ones.
    stranger = {**bearer(container, stranger_user), "Origin": settings.cors_origins[0]}
    client.cookies.set("access_token", access_token(container, stranger_user))

    operations = served_operations(app)
    assert ("DELETE", "/api/v1/images/{image_id}") in operations  # the walk sees nested routers
    assert ("GET", "/api/v1/image/status/{image_id}") in operations  # and routes hidden from the docs
    for method, template in operations:
        response = await client.request(method, objects.fill(template), headers=stranger, json={})
        expected = _NOT_404.get((method, template), 404)
        assert response.status_code == expected, (
            f"{method} {template}: {response.status_code} {response.text}"
        )

    assert await _owner_view(client, owner_headers, objects) == before
