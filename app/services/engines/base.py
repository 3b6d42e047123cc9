"""What a job kind is: an Engine says what the job costs, which provider runs it, what input it takes,
how a client's options become the job's, and how it runs. The runner (app/tasks/runner.py) does the
rest the same way for every kind: lease, retries, storing the outputs, capture or release."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from app.container import Container
from app.integrations.images.base import IMAGE_EXTENSIONS, EngineError
from app.integrations.storage import ObjectNotFound, StorageError
from app.models import JobKind, UsageAction

# Pillow's format names of the images a job takes by default.
IMAGE_INPUTS = frozenset({"PNG", "JPEG", "WEBP"})


@dataclass(frozen=True)
class JobOutput:
    data: bytes
    content_type: str
    extension: str
    view: str = "main"

    @classmethod
    def image(cls, data: bytes, content_type: str, view: str = "main") -> JobOutput:
        return cls(data, content_type, IMAGE_EXTENSIONS.get(content_type, "bin"), view)


@dataclass(frozen=True)
class JobWork:
    """A claimed job, as its engine sees it."""

    job_id: uuid.UUID
    user_id: uuid.UUID
    input_key: str | None
    options: dict[str, Any]
    # The input's stored bytes when they came with the request: a job run at once need not fetch them.
    source: bytes | None = None

    async def input(self, ctx: Container) -> bytes:
        """The input image's bytes. A deleted input fails the job; an unreadable one is worth a retry."""
        if self.source is not None:
            return self.source
        if self.input_key is None:
            raise EngineError("input_missing", "The job has no input image.", retryable=False)
        try:
            return await ctx.storage.get(self.input_key)
        except ObjectNotFound as exc:
            raise EngineError("input_missing", "The input image was deleted.", retryable=False) from exc
        except StorageError as exc:
            raise EngineError("storage_unavailable", "The input could not be read.", retryable=True) from exc


class Engine(ABC):
    kind: ClassVar[JobKind]
    # Pillow's format names of the input images it takes.
    input_formats: ClassVar[frozenset[str]] = IMAGE_INPUTS

    def options(self, requested: dict[str, Any]) -> dict[str, Any]:
        """The job's options from the client's validated request: normalised, and clamped to what the
        price buys. Stored on the job and read back by `cost` and `execute`."""
        return dict(requested)

    @abstractmethod
    def cost(self, ctx: Container, options: dict[str, Any]) -> int:
        """Millicredits reserved at submission, captured only if the job completes."""

    def captured(self, options: dict[str, Any], reserved: int, outputs: list[JobOutput]) -> int:
        """Millicredits of the `reserved` ones a completed job is charged for its `outputs` (all of them,
        unless the kind charges per output and delivered fewer than it was paid for)."""
        return reserved

    @abstractmethod
    def usage_action(self, options: dict[str, Any]) -> UsageAction:
        """What the user's usage summary calls a run (one record per job, at its end)."""

    @abstractmethod
    def provider(self, ctx: Container) -> str:
        """The name of what runs it (recorded on the job, labels its metrics)."""

    def runs_here(self, ctx: Container) -> bool:
        """Its work is this process's own computation on the input alone: no provider is called and
        nothing is paid for, so a job whose client waits may start it while its credits are being held
        (a refusal then only throws a result away)."""
        return False

    def retention_hours(self, ctx: Container) -> int:
        """How long its results are kept (0: until their owner deletes them)."""
        return 0

    def output_names(self, options: dict[str, Any]) -> list[tuple[str, str]]:
        """(view, extension) of every output a run may store: to clean up after a run that stopped before
        its job recorded them."""
        return [("main", "png")]

    @abstractmethod
    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        """Produce the outputs, or raise EngineError (its `retryable` decides whether the runner tries
        again)."""
