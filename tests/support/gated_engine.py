"""Imported by the queue workers the fault tests start (`pixforge worker tests.support.gated_engine`):
the vectorize engine becomes one that marks its start in GATE_DIR, then waits for GATE_DIR/open to
appear, so a test can kill or stop a worker while a job is surely in flight, and count the runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from app.container import Container
from app.models import JobKind
from app.services.engines import ENGINES, JobOutput, JobWork
from app.services.engines.vectorize import Vectorize
from tests.support.queue_worker import GATE_DIR_VARIABLE

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


class GatedVectorize(Vectorize):
    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        gate = Path(os.environ[GATE_DIR_VARIABLE])
        # One marker per process that runs it (the test kills that process), a line in it per run.
        with (gate / f"started-{work.job_id}-{os.getpid()}").open("a") as marker:
            marker.write("run\n")
        while not (gate / "open").exists():  # noqa: ASYNC110 - another process opens it: a file, polled
            await asyncio.sleep(0.05)
        return [JobOutput(SVG, "image/svg+xml", "svg")]


# Only in a worker the fault tests started: never in the test process (nor under another test's name).
if GATE_DIR_VARIABLE in os.environ:
    ENGINES[JobKind.vectorize] = GatedVectorize()
