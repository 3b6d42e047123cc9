"""A job whose client waits and whose engine is this process's own work (the local cut-out model, the
vectorizer) starts that work on its validated input while the job is stored and its credits held: the
bookkeeping's database round trips no longer come before the engine. A job refused meanwhile throws
the result away: nothing stored, nothing charged. A hosted provider is never called before the job's
credits are held."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.integrations.images.base import EngineError, VectorizeOptions
from app.models import Job, JobKind, Upload, User
from app.services import job_submission, uploads
from app.tasks import waited
from tests.conftest import make_settings
from tests.fakes.clipdrop import FakeClipDrop
from tests.support.http import assert_error
from tests.support.images import logo_like

BONUS = 10.0
CUT_OUT = "/api/v1/images/remove-background"
VECTORIZE = "/api/v1/images/vectorize"
# (route, form fields, the engine's method on the container, its price in credits)
ROUTES = [
    pytest.param(CUT_OUT, {}, "background_remover.remove_background", 1.0, id="cut-out"),
    pytest.param(VECTORIZE, {"mode": "preview"}, "vectorizer.vectorize", 0.2, id="vectorize-preview"),
]


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Storage of the test's own: the files it finds are its own."""
    return make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


def _patch_engine(
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    wrap: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
) -> None:
    owner_name, name = method.split(".")
    owner = getattr(container, owner_name)
    monkeypatch.setattr(owner, name, wrap(getattr(owner, name)))


def _store_waits_for(started: asyncio.Event, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Storing a job's input first waits (up to 5 s) for its engine to start; the list tells whether it
    had, each time."""
    seen: list[bool] = []
    store_clean = uploads.store_clean

    async def store_after_the_engine_started(*args: Any, **kwargs: Any) -> uploads.StoredUpload:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(started.wait(), 5)
        seen.append(started.is_set())
        return await store_clean(*args, **kwargs)

    monkeypatch.setattr(uploads, "store_clean", store_after_the_engine_started)
    return seen


async def _balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get("/api/v1/users/credits", headers=auth)).json()["credits"])


async def _rows(session: AsyncSession) -> tuple[int, int]:
    jobs_made = await session.scalar(select(func.count()).select_from(Job))
    uploads_made = await session.scalar(select(func.count()).select_from(Upload))
    return int(jobs_made or 0), int(uploads_made or 0)


@pytest.mark.parametrize(("route", "form", "method", "price"), ROUTES)
async def test_a_local_engine_works_while_its_job_is_stored_and_charged_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    form: dict[str, str],
    method: str,
    price: float,
) -> None:
    started = asyncio.Event()

    def marking(run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def marked(*args: Any) -> Any:
            started.set()
            return await run(*args)

        return marked

    _patch_engine(container, monkeypatch, method, marking)
    engine_had_started = _store_waits_for(started, monkeypatch)

    response = await client.post(route, headers=auth, files={"file": ("a.png", logo_like(48))}, data=form)

    assert response.status_code == 200, response.text
    assert engine_had_started == [True]
    assert await _balance(client, auth) == pytest.approx(BONUS - price)
    image = await client.get(f"/api/v1/images/{response.json()['image_id']}", headers=auth)
    assert image.status_code == 200, image.text


@pytest.mark.parametrize("engine_outcome", ["succeeds", "fails"])
@pytest.mark.parametrize(("route", "form", "method", "price"), ROUTES)
async def test_a_job_refused_after_its_engine_started_keeps_nothing_and_charges_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    container: Container,
    session: AsyncSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    form: dict[str, str],
    method: str,
    price: float,
    engine_outcome: str,
) -> None:
    """The engine's result (or its failure) is not what the client is told: the refusal is."""
    started = asyncio.Event()

    def instant(run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def answered(*args: Any) -> Any:
            started.set()
            if engine_outcome == "fails":
                raise EngineError("invalid_image", "The engine refused it.", retryable=False)
            return "<svg/>" if method.startswith("vectorizer") else logo_like(48)

        return answered

    _patch_engine(container, monkeypatch, method, instant)
    engine_had_started = _store_waits_for(started, monkeypatch)
    # Every price above the balance: the user's credits cannot cover the job.
    container.settings = container.settings.model_copy(
        update={
            "remove_background_cost_credits": Decimal(11),
            "vectorize_preview_cost_credits": Decimal(11),
        }
    )
    rows_before = await _rows(session)
    files_before = sorted(settings.storage_dir.rglob("*.*"))

    response = await client.post(route, headers=auth, files={"file": ("a.png", logo_like(48))}, data=form)

    assert_error(response, 402, "insufficient_credits")
    assert engine_had_started == [True]
    assert await _rows(session) == rows_before
    assert sorted(settings.storage_dir.rglob("*.*")) == files_before
    assert await _balance(client, auth) == BONUS


async def test_a_request_that_goes_away_while_its_job_is_stored_stops_its_engine(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def vectorize_until_stopped(image: bytes, options: VectorizeOptions) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        raise AssertionError("never finishes")

    async def store_never(*args: Any, **kwargs: Any) -> uploads.StoredUpload:
        await asyncio.Event().wait()
        raise AssertionError("never stores")

    monkeypatch.setattr(container.vectorizer, "vectorize", vectorize_until_stopped)
    monkeypatch.setattr(uploads, "store_clean", store_never)
    job = job_submission.request(JobKind.vectorize, logo_like(48), None, {"mode": "preview"})
    rows_before = await _rows(session)
    request = asyncio.create_task(waited.run_now(container, user.id, job))
    await asyncio.wait_for(started.wait(), 5)

    request.cancel()  # the client hung up

    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(stopped.wait(), 5)
    assert await _rows(session) == rows_before


class TestHostedProvider:
    @pytest.fixture
    def clipdrop(self, outside_http: Any) -> FakeClipDrop:
        return FakeClipDrop(outside_http)

    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path_factory: pytest.TempPathFactory, clipdrop: FakeClipDrop
    ) -> Settings:
        return make_settings(
            database_url=database_url,
            data_dir=tmp_path_factory.mktemp("data"),
            clipdrop_api_key=clipdrop.api_key,
            remove_background_cost_credits=Decimal(11),
        )

    async def test_a_refused_cut_out_never_reaches_clipdrop(
        self, client: httpx.AsyncClient, auth: dict[str, str], clipdrop: FakeClipDrop
    ) -> None:
        response = await client.post(CUT_OUT, headers=auth, files={"file": ("a.png", logo_like(48))})

        assert_error(response, 402, "insufficient_credits")
        assert clipdrop.uploads == []
