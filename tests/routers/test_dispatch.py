"""The route index: every route is still reached through it, and what FastAPI answers when no route
matches (404, 405 with every allowed method, the trailing-slash redirect) is unchanged."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute

from app.routers.dispatch import IndexedRouting
from tests.support.http import assert_error


def routes_by_path(app: FastAPI) -> list[tuple[str, BaseRoute]]:
    """Each path any top-level route answers (a path parameter filled in), with that route."""
    found = []
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        paths = [context.path_format for context in contexts()] if contexts else [route.path_format]  # type: ignore[attr-defined]
        found += [(re.sub(r"\{[^}]+\}", "x", path), route) for path in paths]
    return found


def test_every_route_is_among_those_tried_for_its_own_path(app: FastAPI) -> None:
    routing = app.router.middleware_stack
    assert isinstance(routing, IndexedRouting)
    paths = routes_by_path(app)
    assert len(paths) > 100
    for path, route in paths:
        for variant in (path, path.rstrip("/") + "/", path.rstrip("/") or "/"):
            assert route in routing.narrowed(variant).routes, variant


def test_a_path_is_only_tried_against_the_routes_that_could_match_it(app: FastAPI) -> None:
    routing = app.router.middleware_stack
    assert isinstance(routing, IndexedRouting)
    narrowed = routing.narrowed("/api/v1/palettes").routes
    assert 1 <= len(narrowed) < len(app.router.routes) / 4
    # In the application's order.
    assert narrowed == [route for route in app.router.routes if route in narrowed]


async def test_answers_without_a_route_are_unchanged(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await client.get("/api/v1/palettes"), 405, "method_not_allowed")
    redirected = await client.get("/api/v1/users/credits/")
    assert redirected.status_code == 307
    assert redirected.headers["location"].endswith("/api/v1/users/credits")


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
async def test_routes_outside_the_api_prefix_still_answer(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


async def test_a_route_mounted_after_the_app_was_built_is_found(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/late-probe")).status_code == 404

    async def probe() -> dict[str, bool]:
        return {"ok": True}

    app.add_api_route("/late-probe", probe)
    assert (await client.get("/late-probe")).json() == {"ok": True}
