"""The job kinds' registry (app/services/engines): every kind has its engine, each prices its jobs from
settings, and whatever a run may store is among what the recovery and the erasure delete after a run
that stopped before its job recorded it."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from app.integrations.images.base import IMAGE_EXTENSIONS, VectorizeOptions
from app.models import Job, JobKind
from app.services import images
from app.services.engines import ENGINES, JobWork, engine_for
from tests.conftest import make_settings


def test_every_job_kind_has_its_engine() -> None:
    assert {kind: engine.kind for kind, engine in ENGINES.items()} == {kind: kind for kind in JobKind}


@pytest.mark.parametrize(
    ("kind", "requested", "millicredits"),
    [
        pytest.param(JobKind.remove_background, {}, 1500, id="remove-background"),
        pytest.param(JobKind.vectorize, {"mode": "preview"}, 250, id="vectorize-preview"),
        pytest.param(JobKind.vectorize, {"mode": "full"}, 1750, id="vectorize-full"),
        pytest.param(JobKind.vectorize, {}, 1750, id="vectorize-default-full"),
        pytest.param(
            JobKind.generate, {"views": ["front", "left", "front"]}, 2 * 1125, id="generate-per-distinct-view"
        ),
    ],
)
def test_a_job_costs_what_the_settings_say(
    kind: JobKind, requested: dict[str, Any], millicredits: int
) -> None:
    settings = make_settings(
        remove_background_cost_credits="1.5",
        vectorize_preview_cost_credits="0.25",
        vectorize_full_cost_credits="1.75",
        generate_cost_credits="1.125",
    )
    engine = engine_for(kind)
    assert engine.cost(SimpleNamespace(settings=settings), engine.options(requested)) == millicredits  # type: ignore[arg-type]


class _Remover:
    name = "fake"
    max_input_pixels = None

    async def remove_background(self, image: bytes) -> bytes:
        return b"\x89PNG cut out"


class _Vectorizer:
    name = "fake"

    async def vectorize(self, image: bytes, options: VectorizeOptions) -> str:
        return "<svg/>"


@pytest.mark.parametrize(
    ("kind", "requested"),
    [
        pytest.param(JobKind.remove_background, {}, id="remove-background"),
        pytest.param(JobKind.vectorize, {"mode": "preview"}, id="vectorize"),
    ],
)
async def test_what_a_local_run_stores_is_cleaned_up_after_it(
    kind: JobKind, requested: dict[str, Any]
) -> None:
    engine = engine_for(kind)
    ctx: Any = SimpleNamespace(background_remover=_Remover(), vectorizer=_Vectorizer())
    job = Job(id=uuid.uuid4(), user_id=uuid.uuid4(), kind=kind.value, options=engine.options(requested))
    outputs = await engine.execute(ctx, JobWork(job.id, job.user_id, None, job.options, source=b"input"))
    stored = {images.output_key(job.user_id, job.id, output.view, output.extension) for output in outputs}
    assert len(stored) == 1
    assert stored <= set(images.possible_output_keys(job))


@pytest.mark.parametrize("content_type", sorted(IMAGE_EXTENSIONS))
def test_every_generated_view_is_cleaned_up_whatever_type_the_provider_returned(content_type: str) -> None:
    job = Job(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        kind=JobKind.generate.value,
        options={"views": ["front", "back"]},
    )
    cleaned = set(images.possible_output_keys(job))
    for view in ("front", "back"):
        key = images.output_key(job.user_id, job.id, view, IMAGE_EXTENSIONS[content_type])
        assert key in cleaned
