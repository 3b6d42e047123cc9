"""Route lookup by the path's first segments. FastAPI finds a request's route by trying every route of
every included router in order, each through its own layers of matching: a route mounted late (the
palettes, the compatibility routes) cost a hundred regular-expression tries before its own. The index
hands FastAPI only the top-level routes that could match the path at all, in their order, so it matches
and answers (405, trailing-slash redirect, 404) exactly as with all of them."""

from __future__ import annotations

import copy
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.routing import APIRouter
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

# How many leading path segments the index tells routes apart by: "/api/v1/<area>" and "/compat/<app>/...".
DEPTH = 3
# Distinct request prefixes whose narrowed router is kept; beyond it (a client walking random paths) the
# narrowing is worked out again per request, which costs about what FastAPI's own walk would.
KEPT = 1024

Prefix = tuple[str, ...]


def _leading(path: str) -> Prefix:
    return tuple(path.split("/")[1 : DEPTH + 1])


def _static_prefix(path_format: str) -> Prefix:
    """The segments before the first path parameter, at most DEPTH."""
    static = []
    for segment in path_format.split("/")[1 : DEPTH + 1]:
        if "{" in segment:
            break
        static.append(segment)
    return tuple(static)


def _paths(route: BaseRoute) -> Iterator[str] | None:
    """Every full path a top-level route answers, or None when it cannot be read (then it is tried for
    every request, as without the index)."""
    contexts = getattr(route, "effective_route_contexts", None)  # an inclusion: its routes, nested ones too
    if callable(contexts):
        return (context.path_format for context in contexts())
    path_format = getattr(route, "path_format", None)
    return iter([path_format]) if isinstance(path_format, str) else None


def _could_match(prefixes: frozenset[Prefix] | None, key: Prefix) -> bool:
    if prefixes is None:
        return True
    # Compared over the shorter of the two: a request one segment short may still be answered (a redirect
    # that adds the trailing slash), and a path parameter may take several segments.
    return any(prefix[: len(key)] == key[: len(prefix)] for prefix in prefixes)


class IndexedRouting:
    """The application router's innermost ASGI app: dispatches each request through a copy of the router
    that holds only the top-level routes that could match its path."""

    def __init__(self, router: APIRouter) -> None:
        self._router = router
        self._routes: list[tuple[BaseRoute, frozenset[Prefix] | None]] = []
        self._narrowed: dict[Prefix, APIRouter] = {}

    def narrowed(self, path: str) -> APIRouter:
        if len(self._routes) != len(self._router.routes):  # a route was mounted since (a test's probe)
            self._routes = [(route, _prefixes(route)) for route in self._router.routes]
            self._narrowed = {}
        key = _leading(path)
        found = self._narrowed.get(key)
        if found is None:
            found = copy.copy(self._router)
            found.routes = [route for route, prefixes in self._routes if _could_match(prefixes, key)]
            if len(self._narrowed) < KEPT:
                self._narrowed[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            # A lifespan, a websocket, or a path under a mount point the index does not strip.
            await self._router.app(scope, receive, send)
            return
        scope.setdefault("router", self._router)  # url_for() looks up the whole application
        await self.narrowed(scope["path"]).app(scope, receive, send)


def _prefixes(route: BaseRoute) -> frozenset[Prefix] | None:
    paths = _paths(route)
    return None if paths is None else frozenset(_static_prefix(path) for path in paths)


def index_routes(app: FastAPI) -> ASGIApp:
    """Route `app`'s requests through the index of its top-level routes."""
    routing = IndexedRouting(app.router)
    app.router.middleware_stack = routing
    return routing
