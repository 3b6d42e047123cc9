"""At most MAX_ACTIVE_REQUESTS requests run at once; the others wait in arrival order, and past
MAX_QUEUED_REQUESTS waiting a request is answered 503 `overloaded` at once (app/admission.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.admission import AdmissionGate, Overloaded
from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.integrations.job_queue import JobQueue
from app.main import IMAGE_WORK_PATHS, create_app, image_work_paths
from tests.conftest import make_settings
from tests.support.probe_routes import held_open, probe_router

# The gate sits in front of the routes and never touches the database: one run, on SQLite.
pytestmark = pytest.mark.any_database


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url, max_active_requests=1, max_queued_requests=2, admission_lease_seconds=30
    )


@pytest.fixture
async def gated(
    settings: Settings, database: Database, container: Container
) -> AsyncIterator[httpx.AsyncClient]:
    held_open.clear()
    app: FastAPI = create_app(settings, database, container)
    app.include_router(probe_router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client
    for event in held_open.values():
        event.set()


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        # Whether a request got in shows in the app's own state; no event is set on the way in.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def holding(*names: str) -> bool:
    return all(name in held_open for name in names)


async def test_waiting_requests_run_in_arrival_order_and_past_the_queue_limit_the_answer_is_503(
    gated: httpx.AsyncClient,
) -> None:
    first = asyncio.create_task(gated.get("/probe/held/first"))
    await until(lambda: holding("first"))
    second = asyncio.create_task(gated.get("/probe/held/second"))
    await asyncio.sleep(0.05)
    third = asyncio.create_task(gated.get("/probe/held/third"))
    await asyncio.sleep(0.05)
    assert not holding("second")  # queued, not running
    assert not holding("third")

    refused = await gated.get("/probe/held/fourth", headers={"X-Request-ID": "over-the-limit"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": "overloaded",
        "detail": "The server is at its queue limit; retry shortly.",
        "request_id": "over-the-limit",
    }
    assert "fourth" not in held_open
    assert (await gated.get("/healthz")).status_code == 200  # probes are never queued

    held_open["first"].set()
    assert (await first).json() == {"released": "first"}
    await until(lambda: holding("second"))
    await asyncio.sleep(0.05)
    assert not holding("third")  # the second came first, and one runs at a time
    held_open["second"].set()
    await until(lambda: holding("third"))
    held_open["third"].set()
    assert [(await task).status_code for task in (second, third)] == [200, 200]


class Scripted:
    """An ASGI app whose requests each wait for their own event: before answering, or (`stream`) after
    the answer has started. `before_answer` is called with a request's name right before it answers."""

    def __init__(self, before_answer: Callable[[str], object] | None = None) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.entered: list[str] = []
        self.before_answer = before_answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"].strip("/")
        self.entered.append(name)
        event = self.events.setdefault(name, asyncio.Event())
        if scope["query_string"] == b"stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await event.wait()
        else:
            await event.wait()
            if self.before_answer is not None:
                self.before_answer(name)
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})


def request(gate: AdmissionGate, path: str) -> asyncio.Task[None]:
    path, _, query = path.partition("?")
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": []}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    return asyncio.create_task(gate(scope, receive, send))


async def test_a_request_whose_answer_has_started_streaming_gives_its_slot_to_the_next() -> None:
    app = Scripted()
    gate = AdmissionGate(app, max_active=1, max_queued=10, lease_seconds=30)
    feed = request(gate, "/feed?stream")
    await until(lambda: "feed" in app.entered)
    other = request(gate, "/other")
    await until(lambda: "other" in app.entered)  # while the feed still flows
    app.events["other"].set()
    await other
    app.events["feed"].set()
    await feed
    assert (gate.active, gate.queued) == (0, 0)


async def test_a_request_unanswered_past_its_lease_runs_on_without_holding_up_the_line() -> None:
    app = Scripted()
    gate = AdmissionGate(app, max_active=1, max_queued=10, lease_seconds=0.05)
    slow = request(gate, "/slow")
    await until(lambda: "slow" in app.entered)
    quick = request(gate, "/quick")
    await asyncio.sleep(0.01)
    assert app.entered == ["slow"]
    await until(lambda: "quick" in app.entered)  # once the lease ran out
    app.events["quick"].set()
    app.events["slow"].set()
    await asyncio.gather(quick, slow)
    assert (gate.active, gate.queued) == (0, 0)


@pytest.mark.parametrize("line", ["others", "image work"])
async def test_a_request_whose_client_left_while_it_waited_leaves_its_line(line: str) -> None:
    """Whichever line it waited in; and both lines count to the queue limit."""
    app = Scripted()
    gate = AdmissionGate(app, max_active=1, max_queued=2, lease_seconds=30, first_paths=frozenset({"/cut"}))
    running = request(gate, "/running")
    await until(lambda: "running" in app.entered)
    gone, next_one = request(gate, "/cut" if line == "image work" else "/gone"), request(gate, "/next")
    await until(lambda: gate.queued == 2)
    for path in ("/cut", "/other"):
        with pytest.raises(Overloaded):
            await request(gate, path)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert gate.queued == 1
    app.events["running"].set()
    await until(lambda: "next" in app.entered)
    app.events["next"].set()
    await asyncio.gather(running, next_one)
    assert app.entered == ["running", "next"]
    assert (gate.active, gate.active_first, gate.queued) == (0, 0, 0)


def four_slots_one_beside_image_work(app: Scripted, *image_paths: str) -> AdmissionGate:
    return AdmissionGate(
        app,
        max_active=4,
        max_queued=10,
        lease_seconds=30,
        first_paths=frozenset(image_paths),
        max_beside_first=1,
    )


async def test_a_waiter_whose_client_left_as_its_slot_came_free_is_passed_over() -> None:
    """The client of the first in line leaves in the very step the running request answers (before the
    waiter's task has run again to leave its line): the slot goes to the next one, and the answering
    request is not the one that fails."""
    waiting: dict[str, asyncio.Task[None]] = {}
    app = Scripted(before_answer=lambda name: name == "running" and waiting["gone"].cancel())
    gate = AdmissionGate(app, max_active=1, max_queued=10, lease_seconds=30)
    running = request(gate, "/running")
    await until(lambda: "running" in app.entered)
    waiting["gone"], waiting["next"] = request(gate, "/gone"), request(gate, "/next")
    await until(lambda: gate.queued == 2)
    app.events["running"].set()
    await running  # answered, not failed by the slot it gave back
    with pytest.raises(asyncio.CancelledError):
        await waiting["gone"]
    await until(lambda: "next" in app.entered)
    app.events["next"].set()
    await waiting["next"]
    assert app.entered == ["running", "next"]
    assert (gate.active, gate.active_first, gate.queued) == (0, 0, 0)


async def test_image_work_takes_past_its_half_the_slots_the_others_may_not_take() -> None:
    app = Scripted()
    gate = four_slots_one_beside_image_work(app, "/cut", "/cut2", "/cut3")
    running = {name: request(gate, f"/{name}") for name in ("cut", "other")}
    await until(lambda: app.entered == ["cut", "other"])
    running["waiting"] = request(gate, "/waiting")  # one other beside the cut-out already
    await until(lambda: gate.queued == 1)
    for name in ("cut2", "cut3"):  # the third past the lane's half of four: nobody else could take it
        running[name] = request(gate, f"/{name}")
        await until(lambda name=name: app.entered[-1] == name)
    assert gate.queued == 1
    for name in ("cut", "cut2", "cut3", "other"):
        app.events[name].set()
    await until(lambda: "waiting" in app.entered)
    app.events["waiting"].set()
    await asyncio.gather(*running.values())
    assert (gate.active, gate.active_first, gate.queued) == (0, 0, 0)


async def test_without_a_limit_every_request_runs_at_once() -> None:
    app = Scripted()
    gate = AdmissionGate(app, max_active=0, max_queued=0, lease_seconds=30)
    tasks = [request(gate, f"/r{n}") for n in range(5)]
    await until(lambda: len(app.entered) == 5)
    for event in app.events.values():
        event.set()
    await asyncio.gather(*tasks)


async def test_image_work_goes_first_but_to_at_most_half_the_slots_while_others_wait() -> None:
    app = Scripted()
    gate = AdmissionGate(app, max_active=2, max_queued=10, lease_seconds=30, first_paths=frozenset({"/cut"}))
    running = {name: request(gate, f"/{name}") for name in ("a", "b")}
    await until(lambda: app.entered == ["a", "b"])
    for name in ("c", "d"):
        running[name] = request(gate, f"/{name}")
    await until(lambda: gate.queued == 2)
    running["cut"] = request(gate, "/cut")  # came last
    await until(lambda: gate.queued == 3)

    async def end(name: str, then: str) -> None:
        app.events[name].set()
        await running.pop(name)
        await until(lambda: app.entered[-1] == then)

    await end("a", then="cut")  # ahead of the two that waited longer
    running["cut2"] = request(gate, "/cut2")
    await until(lambda: gate.queued == 3)
    await end("b", then="c")  # the lane holds its half: the others get the slot
    await end("c", then="d")
    await end("d", then="cut2")  # nobody else waits: the lane may take more than its half
    assert app.entered == ["a", "b", "cut", "c", "d", "cut2"]
    for name in ("cut", "cut2"):
        app.events[name].set()
    await asyncio.gather(*running.values())
    assert (gate.active, gate.active_first, gate.queued) == (0, 0, 0)


async def test_while_image_work_runs_the_others_run_at_most_their_share_beside_it() -> None:
    app = Scripted()
    gate = four_slots_one_beside_image_work(app, "/cut", "/cut2")
    running = {"cut": request(gate, "/cut")}
    await until(lambda: app.entered == ["cut"])
    for name in ("a", "b", "c"):
        running[name] = request(gate, f"/{name}")
    await until(lambda: app.entered == ["cut", "a"] and gate.queued == 2)

    async def end(name: str) -> None:
        app.events[name].set()
        await running.pop(name)

    await end("cut")
    await until(lambda: app.entered == ["cut", "a", "b", "c"])  # every slot again once it ends
    running["cut2"] = request(gate, "/cut2")
    await until(lambda: app.entered[-1] == "cut2")  # a free slot: image work goes in beside three others
    running["d"] = request(gate, "/d")
    for name in ("a", "b"):
        await end(name)
        await asyncio.sleep(0.01)
        assert "d" not in app.entered  # one other is still running beside the cut-out
    await end("c")
    await until(lambda: app.entered[-1] == "d")
    for name in ("cut2", "d"):
        await end(name)
    assert (gate.active, gate.active_first, gate.queued) == (0, 0, 0)


async def test_the_image_work_lane_names_the_apps_own_image_routes(gated: httpx.AsyncClient) -> None:
    for path in sorted(IMAGE_WORK_PATHS):
        # Not 404 or 405: a route that takes a POST there (and, without a credential, refuses it).
        assert (await gated.post(path)).status_code == 401, path


@pytest.mark.parametrize(
    ("provider", "queued", "lane"),
    [
        ("local", False, IMAGE_WORK_PATHS),
        ("clipdrop", False, frozenset({"/api/v1/images/vectorize"})),  # a hosted cut-out only waits
        ("local", True, frozenset()),  # the queue's workers do the work
    ],
)
async def test_the_image_work_lane_holds_only_the_routes_whose_work_this_process_does(
    database: Database, provider: str, queued: bool, lane: frozenset[str]
) -> None:
    settings = make_settings(
        database_url=str(database.engine.url),
        background_removal_provider=provider,
        clipdrop_api_key="clipdrop-key" if provider == "clipdrop" else None,
    )
    built = Container.build(settings, database)
    container = replace(built, job_queue=cast(JobQueue, object())) if queued else built
    try:
        assert image_work_paths(settings, container) == lane
        unordered = settings.model_copy(update={"admission_image_work_first": False})
        assert image_work_paths(unordered, container) == frozenset()
    finally:
        await built.aclose()
