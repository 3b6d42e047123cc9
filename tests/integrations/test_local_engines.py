"""The local engines against the real model and the real tracer: u2netp (onnxruntime) for background
removal, vtracer for vectorization, on images made in memory by tests/support/images.py."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.integrations.images.base import BackgroundRemover, EngineError, VectorizeOptions, Vectorizer
from app.integrations.images.local_background import LocalBackgroundRemover
from app.integrations.images.local_vectorizer import LocalVectorizer, trace
from tests.support.images import (
    jpeg,
    logo_like,
    pdf_named_png,
    photo_like,
    png_bomb,
    truncated_png,
    webp,
    with_alpha,
)
from tests.support.processes import spawned_children

SVG = "{http://www.w3.org/2000/svg}"
PREVIEW = VectorizeOptions(color_precision=4, filter_speckle=10)


@pytest.fixture(scope="module")
def remover() -> LocalBackgroundRemover:
    return LocalBackgroundRemover()


@pytest.fixture(scope="module")
def vectorizer() -> Iterator[LocalVectorizer]:
    engine = LocalVectorizer()
    yield engine
    engine.close()


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def alpha_of(png: bytes) -> np.ndarray:
    return np.asarray(decode(png).getchannel("A"))


def svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def path_count(svg: str) -> int:
    return len(svg_root(svg).findall(f".//{SVG}path"))


async def max_event_loop_gap(work: Awaitable[Any]) -> tuple[float, int]:
    """Run `work` while a ticker sleeps 10 ms at a time; the longest the loop went without ticking."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done.set()
        await task
    return max(gaps), len(gaps)


# --- background removal --------------------------------------------------------------------------


def test_engines_satisfy_the_protocols(remover: LocalBackgroundRemover, vectorizer: LocalVectorizer) -> None:
    background: BackgroundRemover = remover
    vectors: Vectorizer = vectorizer
    assert background.name == vectors.name == "local"


@pytest.mark.parametrize(("width", "height"), [(320, 400), (640, 360)])
async def test_photo_gets_an_opaque_subject_on_a_transparent_background(
    remover: LocalBackgroundRemover, width: int, height: int
) -> None:
    source = photo_like(width, height)

    result = decode(await remover.remove_background(source))

    assert result.size == (width, height)
    assert result.mode == "RGBA"
    alpha = np.asarray(result.getchannel("A"))
    assert (alpha >= 250).mean() > 0.15, "the figure is opaque"
    assert (alpha <= 5).mean() > 0.4, "the background is transparent"
    assert alpha[int(height * 0.75), width // 2] >= 250, "the body"
    assert alpha[int(height * 0.30), width // 2] >= 250, "the head"
    for y, x in [(2, 2), (2, width - 3), (height // 2, 3), (height // 2, width - 4)]:
        assert alpha[y, x] <= 5, f"the background at {(x, y)}"
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    assert np.array_equal(np.asarray(result.convert("RGB")), original), "colours are untouched"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(jpeg(400, 300), id="jpeg"),
        pytest.param(jpeg(400, 300, progressive=True, quality=70), id="progressive-jpeg"),
        pytest.param(jpeg(400, 300, mode="L"), id="greyscale-jpeg"),
        pytest.param(jpeg(400, 300, mode="CMYK"), id="cmyk-jpeg"),
        pytest.param(webp(400, 300), id="webp"),
    ],
)
async def test_jpeg_and_webp_inputs(remover: LocalBackgroundRemover, source: bytes) -> None:
    result = decode(await remover.remove_background(source))

    assert (result.size, result.mode) == ((400, 300), "RGBA")
    alpha = np.asarray(result.getchannel("A"))
    assert (alpha >= 250).any()
    assert (alpha <= 5).any()
    assert alpha[225, 200] >= 250
    assert alpha[5, 5] <= 5


async def test_exif_rotated_jpeg_comes_out_upright(remover: LocalBackgroundRemover) -> None:
    source = jpeg(400, 300, orientation=6)  # stored as 300x400, displayed as 400x300
    assert Image.open(io.BytesIO(source)).size == (300, 400)

    alpha = alpha_of(await remover.remove_background(source))

    assert alpha.shape == (300, 400)
    assert alpha[225, 200] >= 250, "the body, where a viewer sees it"


async def test_input_transparency_is_kept(remover: LocalBackgroundRemover) -> None:
    alpha = alpha_of(await remover.remove_background(with_alpha(photo_like(320, 320), transparent_border=40)))

    assert alpha.shape == (320, 320)
    assert (alpha[:, :40] == 0).all()
    assert (alpha[-40:, :] == 0).all()
    assert alpha[240, 160] >= 250


def test_infer_mask_and_raw_inference(remover: LocalBackgroundRemover) -> None:
    image = Image.open(io.BytesIO(photo_like(256, 192))).convert("RGB")

    batch = remover.preprocess(image)
    raw = remover.raw_inference(batch)
    mask = remover.infer_mask(image)

    assert batch.shape == (1, 3, 320, 320)
    assert batch.dtype == np.float32
    assert raw.shape == (1, 1, 320, 320)  # u2netp.onnx has a fixed batch of one
    assert (mask.mode, mask.size) == ("L", (256, 192))
    assert np.array_equal(np.asarray(mask), np.asarray(remover.mask_from_prediction(raw[0, 0], (256, 192))))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"definitely not an image", id="garbage"),
        pytest.param(truncated_png(), id="truncated-png"),
        pytest.param(pdf_named_png(), id="pdf"),
        pytest.param(png_bomb(20000, 20000), id="png-bomb"),
        pytest.param(b"GIF89a" + bytes(64), id="gif"),
    ],
)
async def test_corrupt_input_is_invalid_image(remover: LocalBackgroundRemover, source: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        await remover.remove_background(source)

    assert caught.value.code == "invalid_image"
    assert caught.value.retryable is False


async def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    engine = LocalBackgroundRemover(max_pixels=100 * 100)

    with pytest.raises(EngineError) as caught:
        await engine.remove_background(photo_like(128, 128))

    assert caught.value.code == "invalid_image"
    assert engine._session is None, "refused before the model was even loaded"


class CountingRun:
    """Stands in for the onnxruntime session's `run`: counts the calls running at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.active = self.peak = self.calls = 0
        self.started = threading.Event()
        self.prediction = np.random.default_rng(1).random((1, 1, 320, 320), dtype=np.float32)

    def __call__(self, output_names: Any, feed: Any, *args: Any) -> list[np.ndarray]:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        self.started.set()
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return [self.prediction]


async def test_at_most_max_concurrency_inferences_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LocalBackgroundRemover(max_concurrency=2)
    run = CountingRun(0.1)
    monkeypatch.setattr(engine.session, "run", run)

    results = await asyncio.gather(*(engine.remove_background(photo_like(64, 64)) for _ in range(6)))

    assert run.calls == 6
    assert run.peak == 2
    assert all(decode(result).size == (64, 64) for result in results)


async def test_a_cancelled_caller_keeps_its_slot_until_the_thread_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = LocalBackgroundRemover(max_concurrency=1)
    run = CountingRun(0.3)
    monkeypatch.setattr(engine.session, "run", run)
    abandoned = asyncio.create_task(engine.remove_background(photo_like(64, 64)))
    assert await asyncio.to_thread(run.started.wait, 10)

    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    await engine.remove_background(photo_like(64, 64))

    assert run.calls == 2
    assert run.peak == 1


async def test_event_loop_keeps_running_during_inference(remover: LocalBackgroundRemover) -> None:
    source = photo_like(1024, 1024)

    gap, ticks = await max_event_loop_gap(remover.remove_background(source))

    assert ticks >= 10
    assert gap < 0.2


async def test_model_loads_once_under_concurrent_first_use() -> None:
    engine = LocalBackgroundRemover()

    sessions = await asyncio.gather(*(asyncio.to_thread(lambda: engine.session) for _ in range(4)))

    assert all(session is sessions[0] for session in sessions)


# --- background removal in worker processes ---------------------------------------------------------


@asynccontextmanager
async def in_processes(max_concurrency: int = 1, **options: Any) -> AsyncIterator[LocalBackgroundRemover]:
    engine = LocalBackgroundRemover(max_concurrency, worker_processes=True, **options)
    try:
        yield engine
    finally:
        await engine.aclose()


async def test_worker_processes_cut_out_exactly_what_a_thread_does(remover: LocalBackgroundRemover) -> None:
    sources = [
        photo_like(320, 240),
        jpeg(400, 300, orientation=6),
        with_alpha(photo_like(160, 160), transparent_border=20),
    ]
    before = spawned_children()
    seen: list[tuple[str, float]] = []
    async with in_processes(2, observe=lambda task, cpu: seen.append((task, cpu))) as engine:
        await engine.warm_up()
        workers = spawned_children() - before
        assert len(workers) == 2
        results = await asyncio.gather(*(engine.remove_background(source) for source in sources))
        assert spawned_children() - before == workers  # the same two, each with its model loaded once
    assert spawned_children() - before == set()  # stopped with the engine
    assert results == [await remover.remove_background(source) for source in sources]
    cut_outs = [cpu for task, cpu in seen if task.endswith(".cut_out_in_worker")]
    assert len(cut_outs) == 3
    assert len([task for task, _ in seen if task.endswith(".load_model_in_worker")]) == 2  # each worker
    assert all(cpu > 0 for cpu in cut_outs)


async def test_a_refused_image_in_a_worker_process_is_the_same_engine_error() -> None:
    async with in_processes(max_pixels=100 * 100) as engine:
        for source in (truncated_png(), photo_like(128, 128)):
            with pytest.raises(EngineError) as caught:
                await engine.remove_background(source)
            assert (caught.value.code, caught.value.retryable) == ("invalid_image", False)


async def test_a_worker_process_that_died_fails_its_cut_out_as_retryable_and_the_next_gets_a_new_one() -> (
    None
):
    before = spawned_children()
    async with in_processes() as engine:
        await engine.warm_up()
        (worker,) = spawned_children() - before
        os.kill(worker, signal.SIGKILL)  # the OOM killer, say
        with pytest.raises(EngineError) as caught:
            await engine.remove_background(photo_like(64, 64))
        assert (caught.value.code, caught.value.retryable) == ("provider_error", True)
        assert decode(await engine.remove_background(photo_like(64, 64))).size == (64, 64)
        assert worker not in spawned_children()


async def test_the_event_loop_keeps_running_while_worker_processes_cut_out() -> None:
    async with in_processes() as engine:
        await engine.warm_up()
        gap, ticks = await max_event_loop_gap(engine.remove_background(photo_like(1024, 1024)))
    assert ticks >= 10
    assert gap < 0.2


# --- vectorization --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(VectorizeOptions(), id="default"),
        pytest.param(VectorizeOptions(colormode="binary"), id="binary"),
        pytest.param(VectorizeOptions(mode="polygon"), id="polygon"),
    ],
)
async def test_logo_becomes_an_svg_with_paths(vectorizer: LocalVectorizer, options: VectorizeOptions) -> None:
    svg = await vectorizer.vectorize(logo_like(200), options)

    root = svg_root(svg)
    assert (root.get("width"), root.get("height")) == ("200", "200")
    assert path_count(svg) >= (2 if options.colormode == "binary" else 6)


async def test_jpeg_logo_is_vectorized(vectorizer: LocalVectorizer) -> None:
    svg = await vectorizer.vectorize(jpeg(160, kind="logo", quality=95), VectorizeOptions())

    assert path_count(svg) >= 6


async def test_preview_options_give_no_more_paths_than_full(vectorizer: LocalVectorizer) -> None:
    source = photo_like(256, 256)

    full, preview = await asyncio.gather(
        vectorizer.vectorize(source, VectorizeOptions()), vectorizer.vectorize(source, PREVIEW)
    )

    assert 0 < path_count(preview) <= path_count(full)


@pytest.mark.parametrize(
    ("source", "max_side", "downscale", "size"),
    [
        pytest.param(logo_like(600), 150, 1, ("150", "150"), id="square"),
        pytest.param(photo_like(600, 300), 200, 1, ("200", "100"), id="landscape"),
        pytest.param(jpeg(240, 480, kind="photo"), 120, 1, ("60", "120"), id="portrait-jpeg"),
        pytest.param(logo_like(100), 150, 1, ("100", "100"), id="already-small"),
        pytest.param(logo_like(100), 150, 2, ("50", "50"), id="small-halved"),
        pytest.param(photo_like(600, 300), 200, 2, ("200", "100"), id="max-side-below-half"),
        pytest.param(photo_like(300, 150), 200, 2, ("150", "75"), id="half-below-max-side"),
    ],
)
async def test_inputs_over_max_side_are_scaled_down(
    vectorizer: LocalVectorizer, source: bytes, max_side: int, downscale: int, size: tuple[str, str]
) -> None:
    options = VectorizeOptions(max_side=max_side, downscale=downscale)
    root = svg_root(await vectorizer.vectorize(source, options))

    assert (root.get("width"), root.get("height")) == size


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(b"definitely not an image", id="garbage"),
        pytest.param(truncated_png(), id="truncated-png"),
        pytest.param(pdf_named_png(), id="pdf"),
        pytest.param(png_bomb(20000, 20000), id="png-bomb"),
        pytest.param(webp(64, 64), id="webp-not-accepted"),
    ],
)
async def test_vectorizer_refuses_corrupt_input(vectorizer: LocalVectorizer, source: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        await vectorizer.vectorize(source, VectorizeOptions())

    assert caught.value.code == "invalid_image"
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "options",
    [
        VectorizeOptions(color_precision=0),  # would make vtracer panic
        VectorizeOptions(color_precision=9),
        VectorizeOptions(layer_difference=256),
        VectorizeOptions(filter_speckle=-1),
        VectorizeOptions(max_side=0),
        VectorizeOptions(downscale=0),
    ],
)
async def test_out_of_range_options_are_refused(
    vectorizer: LocalVectorizer, options: VectorizeOptions
) -> None:
    with pytest.raises(ValueError, match="invalid VectorizeOptions"):
        await vectorizer.vectorize(logo_like(64), options)


def test_vtracer_failure_is_vectorize_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> str:
        raise Exception("Failed to decode img_bytes.")  # what vtracer raises, a bare Exception

    monkeypatch.setattr("app.integrations.images.local_vectorizer.vtracer.convert_raw_image_to_svg", failing)

    with pytest.raises(EngineError) as caught:
        trace(logo_like(64), VectorizeOptions())

    assert (caught.value.code, caught.value.retryable) == ("vectorize_failed", False)


async def test_event_loop_keeps_running_during_a_trace(vectorizer: LocalVectorizer) -> None:
    # vtracer holds the GIL while it traces: only a worker process keeps the loop free.
    await vectorizer.warm_up()
    source = photo_like(640, 640)

    gap, ticks = await max_event_loop_gap(vectorizer.vectorize(source, VectorizeOptions()))

    assert ticks >= 5
    assert gap < 0.2


async def test_trace_in_this_thread_matches_the_worker(vectorizer: LocalVectorizer) -> None:
    source = logo_like(120)

    assert trace(source, VectorizeOptions()) == await vectorizer.vectorize(source, VectorizeOptions())


async def _worker_pid(vectorizer: LocalVectorizer) -> int:
    # One worker (max_concurrency=1): whichever runs this is the one that traces.
    return int(await asyncio.wrap_future(vectorizer._executor().schedule(os.getpid)))


async def test_a_trace_past_its_time_limit_is_stopped_and_the_engine_goes_on() -> None:
    engine = LocalVectorizer(max_concurrency=1, timeout_seconds=0.3)
    try:
        await engine.warm_up()
        before = await _worker_pid(engine)
        with pytest.raises(EngineError) as caught:
            await engine.vectorize(photo_like(1024, 1024), VectorizeOptions())
        assert (caught.value.code, caught.value.retryable) == ("image_too_complex", False)
        assert "0.3 s" in str(caught.value)
        assert await _worker_pid(engine) != before  # the stuck worker was killed and replaced
        assert "<path" in await engine.vectorize(logo_like(32), PREVIEW)
    finally:
        engine.close()


async def test_a_cancelled_trace_kills_its_worker() -> None:
    engine = LocalVectorizer(max_concurrency=1)
    try:
        await engine.warm_up()
        before = await _worker_pid(engine)
        trace = asyncio.ensure_future(engine.vectorize(photo_like(1024, 1024), VectorizeOptions()))
        await asyncio.sleep(0.5)  # the worker is now inside vtracer, holding its GIL
        trace.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trace
        assert await _worker_pid(engine) != before
        assert "<path" in await engine.vectorize(logo_like(32), PREVIEW)
    finally:
        engine.close()
