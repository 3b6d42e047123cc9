"""Latency of the local palette modes (no LLM), two ways:

- compute: the service's own work in this process (decode + sample + quantize + palette for an image;
  harmony + ramps + contrast repairs for a colour), p50/p95 over N runs;
- HTTP: POST /api/v1/palettes through the whole app (authentication, the credit spend and its usage
  record, the stored upload read back), in process on a throw-away SQLite database with local storage.

Images are a 2 MP (1632x1224) photo-like picture, as PNG and as JPEG (quality 90).

    .venv/bin/python -m bench.design [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from PIL import Image

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.main import create_app
from app.models import LedgerReason
from app.services import credits
from app.services.design import palettes
from app.services.design.colors import HARMONIES
from app.services.design.dominant import IMAGE_MODES, dominant_colors
from app.services.users import create_user
from tests.support.databases import migrate
from tests.support.images import photo_like_image

WIDTH, HEIGHT = 1632, 1224  # 2.0 MP
BASE_COLOR = "#3b82f6"


def encoded(image: Image.Image, fmt: str) -> bytes:
    output = io.BytesIO()
    image.save(output, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return output.getvalue()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def timed(runs: int, work: Callable[[], object]) -> list[float]:
    work()  # warm-up (imports, caches)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return samples


async def timed_async(runs: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    await work()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - start)
    return samples


def image_palette(data: bytes, mode: str) -> palettes.Palette:
    dominant = dominant_colors(data, mode)  # type: ignore[arg-type]
    roles = palettes.roles_from_dominant(dominant)
    assert roles is not None
    return palettes.build(*roles, source=palettes.DesignSource.image, mode=mode, dominant=dominant)


def compute(runs: int, images: dict[str, bytes]) -> None:
    print(f"compute (in process, {runs} runs each)")
    for mode in HARMONIES:
        samples = timed(runs, lambda mode=mode: palettes.from_color(BASE_COLOR, mode))
        print(f"  colour {BASE_COLOR} {mode:<20} {percentiles(samples)}")
    for name, data in images.items():
        for mode in IMAGE_MODES:
            samples = timed(runs, lambda data=data, mode=mode: image_palette(data, mode))
            print(f"  2 MP {name:<4} {mode:<20}      {percentiles(samples)}")


async def over_http(runs: int, images: dict[str, bytes], folder: Path) -> None:
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await asyncio.to_thread(migrate, url)
    settings = Settings(_env_file=None, database_url=url, data_dir=folder / "data", log_level="WARNING")  # type: ignore[call-arg]
    database = Database.from_settings(settings)
    async with database.session_scope() as session:
        user = await create_user(session, settings, email="design@bench.test", email_verified_at=utcnow())
        await credits.grant(session, user.id, 10**9, LedgerReason.admin_adjustment, key="bench:design")
    container = Container.build(settings, database)
    app = create_app(settings, database, container)
    headers = {"Authorization": f"Bearer {container.tokens.issue(user.id, 'access')[0]}"}
    print(f"HTTP POST /api/v1/palettes (in process, SQLite, local storage, {runs} runs each)")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:

            async def post(body: dict[str, object]) -> None:
                response = await client.post("/api/v1/palettes", headers=headers, json=body)
                assert response.status_code == 200, response.text

            for mode in HARMONIES:
                samples = await timed_async(
                    runs, lambda mode=mode: post({"base_color": BASE_COLOR, "mode": mode})
                )
                print(f"  colour {BASE_COLOR} {mode:<20} {percentiles(samples)}")
            for name, data in images.items():
                files = {"file": (f"photo.{name.lower()}", data, f"image/{name.lower()}")}
                uploaded = await client.post("/api/v1/uploads", headers=headers, files=files)
                upload_id = uploaded.json()["id"]
                for mode in IMAGE_MODES:
                    samples = await timed_async(
                        runs,
                        lambda upload_id=upload_id, mode=mode: post({"upload_id": upload_id, "mode": mode}),
                    )
                    print(f"  2 MP {name:<4} {mode:<20}      {percentiles(samples)}")
    finally:
        await container.aclose()
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    photo = photo_like_image(WIDTH, HEIGHT)
    images = {"PNG": encoded(photo, "PNG"), "JPEG": encoded(photo.convert("RGB"), "JPEG")}
    sizes = ", ".join(f"{name} {len(data) // 1024} KiB" for name, data in images.items())
    print(f"2 MP image: {WIDTH}x{HEIGHT}; {sizes}")
    compute(args.runs, images)
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(over_http(args.runs, images, Path(folder)))


if __name__ == "__main__":
    main()
