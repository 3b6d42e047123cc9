"""What the app sets up for as long as it serves, and gives back when it stops."""

from __future__ import annotations

import gc

import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db.session import Database
from app.main import SERVING_THRESHOLDS, create_app
from tests.conftest import make_settings
from tests.support.processes import spawned_children

# What start-up sets for serving does not depend on the database.
pytestmark = pytest.mark.any_database


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url, compute_processes=1)


async def test_while_serving_start_up_is_frozen_and_young_collections_are_rarer(app: FastAPI) -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == SERVING_THRESHOLDS
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_the_compute_workers_are_up_before_the_first_request(app: FastAPI) -> None:
    before = spawned_children()
    async with app.router.lifespan_context(app):
        # Started (and their modules imported) by the start-up, not by a first palette.
        assert spawned_children() - before


async def test_the_cut_out_workers_are_up_before_the_first_request_and_gone_after(
    database_url: str, database: Database
) -> None:
    settings = make_settings(
        database_url=database_url, local_engine_processes=True, local_engine_concurrency=2
    )
    app = create_app(settings, database)  # its own container, closed when it stops
    before = spawned_children()
    async with app.router.lifespan_context(app):
        started = spawned_children() - before
        assert len(started) == 2  # LOCAL_ENGINE_CONCURRENCY, their model loaded by the start-up
    assert not spawned_children() & started
