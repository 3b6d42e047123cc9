"""Vectorization on this machine with vtracer (Rust, via its Python binding).

The input is decoded by Pillow first (format check, EXIF orientation, pixel limit, the `max_side`
downscale) and handed to vtracer as an uncompressed PNG in RGBA, so vtracer's own decoder only ever
sees one simple, known-good format.

vtracer's binding holds the GIL for the whole trace (seconds on a large photo), so a worker *thread*
would still freeze the event loop: `vectorize` runs each trace in a worker *process* (a spawn-context
pool of `max_concurrency` processes, created on first use, recycled every `max_tasks_per_worker` jobs),
under a semaphore that bounds the jobs in flight. `vectorize_sync` traces in the calling thread, for
benchmarks and scripts.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

import vtracer  # type: ignore[import-untyped]
from PIL import Image, ImageOps, UnidentifiedImageError

from app.integrations.images.base import EngineError, VectorizeOptions

INPUT_FORMATS: Final = ("PNG", "JPEG")
# Twice the 25 MP we promise to handle; uploads are validated before, this is the engine's own guard.
DEFAULT_MAX_PIXELS: Final = 50_000_000
DEFAULT_MAX_TASKS_PER_WORKER: Final = 100

_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


def _open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG bytes fully, upright (EXIF orientation applied), or raise `invalid_image`."""
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise EngineError(
                "invalid_image", f"image is {width}x{height}, more than {max_pixels} pixels", retryable=False
            )
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except EngineError:
        raise
    except UnidentifiedImageError as exc:
        raise EngineError("invalid_image", "not a PNG or JPEG image", retryable=False) from exc
    except _DECODE_ERRORS as exc:
        raise EngineError("invalid_image", f"image could not be decoded: {exc}", retryable=False) from exc
    return image


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down (aspect kept, each side at least 1) so that its longest side is `max_side`;
    unchanged when it already fits."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_options(options: VectorizeOptions) -> None:
    """Refuse knobs outside what vtracer accepts: some (color_precision 0) make it panic, and a Rust panic
    surfaces as a BaseException that no `except Exception` stops."""
    problems = []
    if options.colormode not in ("color", "binary"):
        problems.append(f"colormode {options.colormode!r} is not color or binary")
    if options.mode not in ("spline", "polygon", "none"):
        problems.append(f"mode {options.mode!r} is not spline, polygon or none")
    if not 1 <= options.color_precision <= 8:
        problems.append(f"color_precision {options.color_precision} is not in 1..8")
    if options.filter_speckle < 0:
        problems.append(f"filter_speckle {options.filter_speckle} is negative")
    if not 0 <= options.layer_difference <= 255:
        problems.append(f"layer_difference {options.layer_difference} is not in 0..255")
    if options.max_side < 1:
        problems.append(f"max_side {options.max_side} is not positive")
    if problems:
        raise ValueError("invalid VectorizeOptions: " + "; ".join(problems))


def prepare(image: bytes, max_side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes vtracer gets: the decoded image, upright, RGBA, scaled to fit `max_side`, as a PNG
    stored without compression (vtracer decodes it at memory speed; it is never kept)."""
    picture = _open_image(image, max_pixels=max_pixels)
    try:
        if picture.mode != "RGBA":
            picture = picture.convert("RGBA")
        size = fit_within(picture.size, max_side)
        if size != picture.size:
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        picture.save(out, format="PNG", compress_level=0)
    except MemoryError as exc:
        raise EngineError("provider_error", "out of memory vectorizing", retryable=True) from exc
    except (OSError, ValueError) as exc:  # a mode Pillow cannot convert, an encoder failure
        raise EngineError("invalid_image", f"image could not be processed: {exc}", retryable=False) from exc
    return out.getvalue()


def trace(image: bytes, options: VectorizeOptions, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Vectorize one PNG/JPEG in the calling thread (holding the GIL throughout); returns the SVG.
    Options outside vtracer's ranges raise ValueError (a caller's bug, checked before any work)."""
    check_options(options)
    prepared = prepare(image, options.max_side, max_pixels=max_pixels)
    try:
        svg: str = vtracer.convert_raw_image_to_svg(
            prepared,
            img_format="png",
            colormode=options.colormode,
            mode=options.mode,
            color_precision=options.color_precision,
            filter_speckle=options.filter_speckle,
            layer_difference=options.layer_difference,
        )
    except MemoryError as exc:
        raise EngineError("provider_error", "out of memory vectorizing", retryable=True) from exc
    except Exception as exc:  # vtracer reports every failure as a bare Exception
        raise EngineError("vectorize_failed", f"vtracer failed: {exc}", retryable=False) from exc
    except BaseException as exc:
        # A Rust panic (pyo3's PanicException derives from BaseException): a failed trace, not a
        # reason to take the worker down. Anything else (KeyboardInterrupt, SystemExit) goes on.
        if type(exc).__name__ != "PanicException":
            raise
        raise EngineError("vectorize_failed", f"vtracer panicked: {exc}", retryable=False) from exc
    return svg


@dataclass(frozen=True)
class _Outcome:
    """What a worker process sends back. EngineError itself does not survive pickling (its
    `retryable` is keyword-only), so a failure travels as its fields."""

    svg: str | None = None
    code: str = ""
    message: str = ""
    retryable: bool = False


def _trace_in_worker(image: bytes, options: VectorizeOptions, max_pixels: int) -> _Outcome:
    try:
        return _Outcome(svg=trace(image, options, max_pixels=max_pixels))
    except EngineError as exc:
        return _Outcome(code=exc.code, message=str(exc), retryable=exc.retryable)


def _ready() -> bool:
    return True


def _init_worker() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the server shuts the pool down itself,
    # the workers need not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalVectorizer:
    """`Vectorizer` running vtracer in worker processes, at most `max_concurrency` traces at once.

    Call `close()` (or `await aclose()`) at shutdown to stop the worker processes."""

    name = "local"

    def __init__(
        self,
        max_concurrency: int = 2,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_tasks_per_worker: int = DEFAULT_MAX_TASKS_PER_WORKER,
    ) -> None:
        if max_concurrency < 1 or max_tasks_per_worker < 1:
            raise ValueError("max_concurrency and max_tasks_per_worker must be at least 1")
        self.max_concurrency = max_concurrency
        self.max_pixels = max_pixels
        self.max_tasks_per_worker = max_tasks_per_worker
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._running: set[asyncio.Future[_Outcome]] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.max_concurrency,
                    # Not fork: the server has threads (onnxruntime's, asyncio's executor) a fork would copy
                    # mid-flight.
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    max_tasks_per_child=self.max_tasks_per_worker,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def vectorize_sync(self, image: bytes, options: VectorizeOptions) -> str:
        """Trace in the calling thread (no worker process): for benchmarks and scripts."""
        return trace(image, options, max_pixels=self.max_pixels)

    async def warm_up(self) -> None:
        """Start the worker processes now rather than on the first request."""
        pool = self._executor()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.max_concurrency)))
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise EngineError("provider_error", "the vectorizer worker process died", retryable=True) from exc

    async def vectorize(self, image: bytes, options: VectorizeOptions) -> str:
        check_options(options)
        await self._semaphore.acquire()
        try:
            pool = self._executor()
            job = asyncio.get_running_loop().run_in_executor(
                pool, _trace_in_worker, image, options, self.max_pixels
            )
        except BaseException:
            self._semaphore.release()
            raise
        # A started trace cannot be stopped: when the caller is cancelled the slot stays taken until the
        # worker is done, so abandoned jobs cannot pile up inputs in the pool's queue.
        self._running.add(job)
        job.add_done_callback(self._job_done)
        try:
            outcome = await asyncio.shield(job)
        except BrokenProcessPool as exc:  # a worker died: killed for memory, most likely
            self._discard(pool)
            raise EngineError("provider_error", "the vectorizer worker process died", retryable=True) from exc
        if outcome.svg is None:
            raise EngineError(outcome.code, outcome.message, retryable=outcome.retryable)
        return outcome.svg

    def _job_done(self, job: asyncio.Future[_Outcome]) -> None:
        self._running.discard(job)
        self._semaphore.release()
        if not job.cancelled():
            job.exception()  # retrieved: an abandoned job's failure is not logged as "never retrieved"

    def close(self) -> None:
        """Stop the worker processes (waits for running traces; queued ones are dropped)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
