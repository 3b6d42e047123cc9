"""Vectorization on this machine with vtracer (Rust, via its Python binding).

The input is decoded by Pillow first (format check, EXIF orientation, pixel limit, the `max_side`
downscale) and handed to vtracer as an uncompressed PNG in RGBA, so vtracer's own decoder only ever
sees one simple, known-good format.

vtracer's binding holds the GIL for the whole trace (seconds on a large photo) and cannot be
interrupted, so a worker *thread* would freeze the event loop and could never be stopped: `vectorize`
runs each trace in a worker *process* (a pebble spawn-context pool of `max_concurrency` processes,
created on first use, recycled every `max_tasks_per_worker` jobs), under a semaphore that bounds the
jobs in flight, and kills the process of a trace that runs too long or whose caller went away.
`trace` is the same work in the calling thread, for benchmarks and scripts.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import signal
import threading
from typing import Final

import vtracer  # type: ignore[import-untyped]
from pebble import ProcessExpired, ProcessPool
from PIL import Image, ImageOps, UnidentifiedImageError

from app.integrations.images.base import EngineError, VectorizeOptions

INPUT_FORMATS: Final = ("PNG", "JPEG")
# Twice the 25 MP we promise to handle; uploads are validated before, this is the engine's own guard.
DEFAULT_MAX_PIXELS: Final = 50_000_000
DEFAULT_MAX_TASKS_PER_WORKER: Final = 100
# A 2048 px photo at full settings traces in 13-16 s on one core of the reference machine.
DEFAULT_TIMEOUT_SECONDS: Final = 60.0

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


def fit_within(size: tuple[int, int], max_side: int, downscale: int = 1) -> tuple[int, int]:
    """`size` scaled down (aspect kept, each side at least 1) so that its longest side is at most
    `max_side` and at most 1/`downscale` of what it was; unchanged when it already fits."""
    width, height = size
    longest = max(width, height)
    target = min(max_side, max(1, longest // downscale))
    if longest <= target:
        return size
    scale = target / longest
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
    if options.downscale < 1:
        problems.append(f"downscale {options.downscale} is not positive")
    if problems:
        raise ValueError("invalid VectorizeOptions: " + "; ".join(problems))


def prepare(
    image: bytes, max_side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, downscale: int = 1
) -> bytes:
    """The bytes vtracer gets: the decoded image, upright, RGBA, scaled to fit `max_side` (and divided by
    `downscale`), as a PNG stored without compression (vtracer decodes it at memory speed; it is never
    kept)."""
    picture = _open_image(image, max_pixels=max_pixels)
    try:
        if picture.mode != "RGBA":
            picture = picture.convert("RGBA")
        size = fit_within(picture.size, max_side, downscale)
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
    prepared = prepare(image, options.max_side, max_pixels=max_pixels, downscale=options.downscale)
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


def _ready() -> bool:
    return True


def _init_worker() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the server shuts the pool down itself,
    # the workers need not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalVectorizer:
    """`Vectorizer` running vtracer in worker processes, at most `max_concurrency` traces at once.

    A trace runs for at most `timeout_seconds`: past that its worker process is killed (pebble replaces
    it) and the job fails with `image_too_complex`, since the same input would take as long again. A
    caller that goes away (cancelled) kills its trace the same way, so an abandoned request never
    keeps a core busy. Call `close()` (or `await aclose()`) at shutdown to stop the worker processes."""

    name = "local"

    def __init__(
        self,
        max_concurrency: int = 2,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_tasks_per_worker: int = DEFAULT_MAX_TASKS_PER_WORKER,
    ) -> None:
        if max_concurrency < 1 or max_tasks_per_worker < 1:
            raise ValueError("max_concurrency and max_tasks_per_worker must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.max_concurrency = max_concurrency
        self.timeout_seconds = timeout_seconds
        self.max_pixels = max_pixels
        self.max_tasks_per_worker = max_tasks_per_worker
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._pool: ProcessPool | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ProcessPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPool(
                    max_workers=self.max_concurrency,
                    max_tasks=self.max_tasks_per_worker,
                    initializer=_init_worker,
                    # Not fork: the server has threads (onnxruntime's, asyncio's executor) a fork would copy
                    # mid-flight.
                    context=multiprocessing.get_context("spawn"),
                )
            return self._pool

    async def warm_up(self) -> None:
        """Start the worker processes now rather than on the first request."""
        pool = self._executor()
        try:
            await asyncio.gather(
                *(asyncio.wrap_future(pool.schedule(_ready)) for _ in range(self.max_concurrency))
            )
        except ProcessExpired as exc:
            raise EngineError("provider_error", "the vectorizer worker process died", retryable=True) from exc

    async def vectorize(self, image: bytes, options: VectorizeOptions) -> str:
        check_options(options)
        async with self._semaphore:
            # An EngineError raised in the worker (an undecodable image) reaches us as itself.
            job = self._executor().schedule(
                trace,
                args=(image, options),
                kwargs={"max_pixels": self.max_pixels},
                timeout=self.timeout_seconds,
            )
            try:
                # Cancelling this await cancels `job`, and pebble kills a running job's worker.
                svg: str = await asyncio.wrap_future(job)
            except TimeoutError as exc:
                raise EngineError(
                    "image_too_complex",
                    f"The image is too detailed to vectorize within {self.timeout_seconds:g} s; "
                    "try preview mode, fewer colours, or a smaller image.",
                    retryable=False,
                ) from exc
            except ProcessExpired as exc:  # a worker died: killed for memory, most likely
                raise EngineError(
                    "provider_error", "the vectorizer worker process died", retryable=True
                ) from exc
        return svg

    def close(self) -> None:
        """Stop the worker processes at once; a trace still running is killed (its request is being
        cancelled by the shutdown anyway)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]  # pebble leaves it unannotated
            pool.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
