"""Dramatiq on Redis or RabbitMQ: the only module that speaks to the job queue's broker (see
app/integrations/job_queue.py for what the rest of the code sees)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

from app.config import Settings
from app.integrations.job_queue import QueueUnavailable

# The one actor: run the job whose id the message carries.
RUN_JOB = "run_job"
# A broker that does not answer within this many seconds counts as down (a 503, not a hung request).
BROKER_TIMEOUT_SECONDS = 5.0


class DramatiqJobQueue:
    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name

    def ping(self) -> None:
        try:
            if isinstance(self.broker, RedisBroker):
                self.broker.client.ping()
            elif isinstance(self.broker, RabbitmqBroker) and not self.broker.channel.is_open:
                # This thread's connection, opened if it had none; reopened if the broker dropped it.
                del self.broker.connection
                self.broker.channel  # noqa: B018 - reconnects, or raises
        # Any failure to reach the broker means the same here (redis-py, pika and Dramatiq each raise
        # their own errors).
        except Exception as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: the job queue's broker is unreachable") from exc

    def send(self, job_id: str, delay_seconds: float = 0) -> None:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=self.queue_name, actor_name=RUN_JOB, args=(job_id,), kwargs={}, options={}
        )
        delay = int(delay_seconds * 1000) if delay_seconds > 0 else None
        try:
            self.broker.enqueue(message, delay=delay)
        except Exception as exc:  # as in ping
            raise QueueUnavailable(f"{type(exc).__name__}: the job could not be queued") from exc

    def close(self) -> None:
        self.broker.close()


def build_broker(settings: Settings) -> dramatiq.Broker:
    """The broker JOB_QUEUE names, with the middleware that runs async actors on an event loop."""
    broker: dramatiq.Broker
    if settings.job_queue == "redis":
        url = settings.resolved_job_queue_redis_url
        assert url is not None  # the settings refuse JOB_QUEUE=redis without one
        client = redis.Redis.from_url(
            url, socket_connect_timeout=BROKER_TIMEOUT_SECONDS, socket_timeout=BROKER_TIMEOUT_SECONDS
        )
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=client,
            namespace=f"pixforge:{settings.job_queue_name}",
            heartbeat_timeout=int(settings.job_queue_heartbeat_timeout_seconds * 1000),
            maintenance_chance=settings.job_queue_maintenance_chance,
        )
    elif settings.job_queue == "rabbitmq":
        # Publisher confirms: a send that returned is on the broker's disk, not in a socket buffer.
        broker = RabbitmqBroker(url=settings.rabbitmq_url, confirm_delivery=True)
    else:
        raise ValueError("JOB_QUEUE=inline has no broker")
    broker.add_middleware(AsyncIO())
    return broker


class _Lifecycle(Middleware):
    """Builds the worker process's collaborators when it boots and closes them when it stops, on the
    event loop the async actor runs on."""

    def __init__(self, on_boot: Callable[[], None], on_shutdown: Callable[[], Awaitable[None]]) -> None:
        self.on_boot = on_boot
        self.on_shutdown = on_shutdown

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Before the worker threads start: a message already waiting is taken the moment they do, and
        # must find the collaborators built (after_worker_boot came too late: such a run failed and
        # waited for Dramatiq's retry).
        self.on_boot()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Runs before AsyncIO's own after_worker_shutdown (it is added in front), so the loop still runs.
        from dramatiq.asyncio import get_event_loop_thread

        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(self.on_shutdown())


def declare_job_actor(
    queue: DramatiqJobQueue,
    run: Callable[[str], Awaitable[None]],
    *,
    time_limit_seconds: float,
    max_retries: int,
    on_boot: Callable[[], None],
    on_shutdown: Callable[[], Awaitable[None]],
) -> None:
    """Make `run(job_id)` the queue's actor, for a worker process. A run that raises (the database
    down) is retried by Dramatiq with backoff, `max_retries` times; a worker that dies mid-run leaves
    its message unacknowledged, so the broker delivers it again."""
    queue.broker.add_middleware(_Lifecycle(on_boot, on_shutdown), before=AsyncIO)
    declare = dramatiq.actor(
        broker=queue.broker,
        actor_name=RUN_JOB,
        queue_name=queue.queue_name,
        max_retries=max_retries,
        min_backoff=1000,
        max_backoff=60_000,
        time_limit=int(time_limit_seconds * 1000),
    )
    declare(run)
