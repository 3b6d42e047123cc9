"""The text-to-image engine and the input its submission builds: the price per image, every image a run
may store is among what the cleanup deletes, the trigger word woven in once, and which inputs go to the
default model and which to a personal one."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from app.integrations.images.base import IMAGE_EXTENSIONS
from app.models import CloneModel, Job, JobKind
from app.services import images
from app.services.clones.generations import GenerationRequest, Prepared, model_input, weave_trigger_word
from app.services.engines import engine_for
from app.services.engines.text_to_image import output_view
from tests.conftest import make_settings

VERSION = "6f4f2a8abc023d2358bbb1518800e3dbbf3343c2087fbf5e1908c4b3f47bb88d"


@pytest.mark.parametrize(("count", "millicredits"), [(1, 1250), (3, 3750), (4, 5000)])
def test_each_image_asked_for_is_paid_for(count: int, millicredits: int) -> None:
    engine = engine_for(JobKind.generation)
    ctx: Any = SimpleNamespace(settings=make_settings(generation_cost_credits="1.25"))
    assert engine.cost(ctx, engine.options({"num_outputs": count})) == millicredits


@pytest.mark.parametrize("content_type", sorted(IMAGE_EXTENSIONS))
def test_every_image_a_run_may_store_is_cleaned_up(content_type: str) -> None:
    job = Job(
        id=uuid.uuid4(), user_id=uuid.uuid4(), kind=JobKind.generation.value, options={"num_outputs": 3}
    )
    cleaned = set(images.possible_output_keys(job))
    for index in range(3):
        key = images.output_key(job.user_id, job.id, output_view(index), IMAGE_EXTENSIONS[content_type])
        assert key in cleaned


@pytest.mark.parametrize(
    ("prompt", "woven"),
    [
        ("me as an astronaut", "TOK42, me as an astronaut"),
        ("TOK42 as an astronaut", "TOK42 as an astronaut"),
        ("a photo of tok42, smiling", "a photo of tok42, smiling"),
        ("TOK42s on parade", "TOK42, TOK42s on parade"),  # part of another word is not the trigger word
        ("xTOK42 on parade", "TOK42, xTOK42 on parade"),
    ],
)
def test_the_trigger_word_is_woven_in_once(prompt: str, woven: str) -> None:
    assert weave_trigger_word(prompt, "TOK42") == woven


def prepared(**fields: Any) -> Prepared:
    request = GenerationRequest(**{"prompt": "a cat", **fields})
    return Prepared(request, request.prompt, request.negative_prompt, None)


def test_the_default_model_gets_guidance_and_a_negative_prompt_only_under_the_names_it_takes() -> None:
    ask = prepared(guidance=4.0, negative_prompt="blurry", seed=7, num_outputs=2, aspect_ratio="3:2")
    reference, prompt, payload = model_input(make_settings(), ask, None)
    assert (reference, prompt) == ("black-forest-labs/flux-schnell", "a cat")
    assert payload == {
        "prompt": "a cat",
        "aspect_ratio": "3:2",
        "num_outputs": 2,
        "output_format": "webp",
        "seed": 7,
    }
    flux_dev = make_settings(
        text_to_image_model="black-forest-labs/flux-dev",
        text_to_image_guidance_input="guidance",
        text_to_image_negative_prompt_input="negative_prompt",
        generation_output_format="png",
    )
    reference, _, payload = model_input(flux_dev, ask, None)
    assert reference == "black-forest-labs/flux-dev"
    assert (payload["guidance"], payload["negative_prompt"], payload["output_format"]) == (
        4.0,
        "blurry",
        "png",
    )


@pytest.mark.parametrize("stored", [VERSION, f"acme/clone-1:{VERSION}"])
def test_a_personal_model_runs_its_version_with_its_own_inputs(stored: str) -> None:
    model = CloneModel(
        id=uuid.uuid4(), trigger_word="zq1", provider_model="acme/clone-1", provider_version=stored
    )
    ask = prepared(guidance=2.0, negative_prompt="blurry")
    settings = make_settings(text_to_image_negative_prompt_input="negative_prompt", generation_lora_scale=0.8)
    reference, prompt, payload = model_input(settings, ask, model)
    assert reference == f"acme/clone-1:{VERSION}"
    assert prompt == payload["prompt"] == "zq1, a cat"
    assert (payload["guidance_scale"], payload["lora_scale"]) == (2.0, 0.8)
    assert "negative_prompt" not in payload
    # An enhanced prompt is the one sent, with the trigger word woven in.
    enhanced = Prepared(ask.request, "a cat", None, "A fluffy cat on a windowsill at dawn.")
    assert model_input(settings, enhanced, model)[1] == "zq1, A fluffy cat on a windowsill at dawn."
