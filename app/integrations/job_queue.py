"""The job queue (JOB_QUEUE=redis|rabbitmq) as the rest of the code sees it: a `JobQueue` that takes a
job id. A message carries one job id and nothing else; the job's row is the truth, so a message
delivered twice, late or never changes nothing a worker would not find in the row anyway.

Dramatiq (app/integrations/dramatiq_queue.py) is imported only when a queue is configured: an inline
deployment never loads it. Broker calls are blocking (redis-py, pika): the API calls them in a thread
(see app/tasks/dispatch.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from app.config import Settings

if TYPE_CHECKING:
    from app.integrations.dramatiq_queue import DramatiqJobQueue


class QueueUnavailable(Exception):
    """The broker could not be reached, or refused the message."""


class JobQueue(Protocol):
    def ping(self) -> None:
        """Raise QueueUnavailable unless the broker answers now."""

    def send(self, job_id: str, delay_seconds: float = 0) -> None:
        """Queue the job's id (delivered after `delay_seconds`); QueueUnavailable if the broker refuses."""

    def close(self) -> None: ...


def build_job_queue(settings: Settings) -> DramatiqJobQueue | None:
    """The queue JOB_QUEUE names, or None for inline (jobs run in the process that accepted them)."""
    if settings.job_queue == "inline":
        return None
    from app.integrations.dramatiq_queue import DramatiqJobQueue, build_broker

    return DramatiqJobQueue(build_broker(settings), settings.job_queue_name)
