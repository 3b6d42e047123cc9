"""What the app sets up for as long as it serves, and gives back when it stops."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from app.main import SERVING_THRESHOLDS


async def test_while_serving_start_up_is_frozen_and_young_collections_are_rarer(app: FastAPI) -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == SERVING_THRESHOLDS
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
