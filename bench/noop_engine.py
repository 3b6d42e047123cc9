"""A background-removal engine that does next to nothing, for bench.mixed: imported by the queue workers
that bench starts (`pixforge worker bench.noop_engine`), it takes the place of the real one in the
engine registry, so a job costs what the job machinery costs (claim, lease, store the output, capture the
credits) and not what inference costs. The API process keeps the real engine: it only prices and queues
the job. Its output is a fixed 1x1 transparent PNG, stored like any result."""

from __future__ import annotations

import base64

from app.container import Container
from app.models import JobKind
from app.services.engines import ENGINES, JobOutput, JobWork
from app.services.engines.remove_background import RemoveBackground

PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class NoopRemoveBackground(RemoveBackground):
    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        return [JobOutput.image(PIXEL_PNG, "image/png")]


ENGINES[JobKind.remove_background] = NoopRemoveBackground()
