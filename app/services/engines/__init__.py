"""The job kinds: one Engine per JobKind (what it costs, which provider runs it, what input it takes,
how a client's options become the job's, how it runs). A new kind is a new engine listed here, plus the
route that submits it."""

from __future__ import annotations

from app.models import JobKind
from app.services.engines.base import Engine, JobOutput, JobWork
from app.services.engines.hairstyle import Hairstyle
from app.services.engines.remove_background import RemoveBackground
from app.services.engines.text_to_image import TextToImage
from app.services.engines.vectorize import Vectorize

ENGINES: dict[JobKind, Engine] = {
    engine.kind: engine for engine in (RemoveBackground(), Vectorize(), Hairstyle(), TextToImage())
}


def engine_for(kind: JobKind | str) -> Engine:
    return ENGINES[JobKind(kind)]


__all__ = ["ENGINES", "Engine", "JobOutput", "JobWork", "engine_for"]
