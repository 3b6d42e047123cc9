"""Prometheus metrics, one registry per application (tests build many apps in one process).

Labels stay bounded: a request is labelled with its route template (`/api/v1/images/{image_id}`), never
its raw path, and an unmatched path is `unmatched`; job errors are our own fixed codes."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "ProviderOutages", "ReadinessRecord"]

# Seconds: API calls are milliseconds, image jobs are seconds, generation is minutes.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "pixforge_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "pixforge_http_request_duration_seconds",
            "Time from the request's arrival to its last byte, by route template.",
            ["method", "route"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "pixforge_jobs_finished",
            "AI jobs that reached a terminal state (error_code is empty for completed ones).",
            ["kind", "provider", "status", "error_code"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "pixforge_job_duration_seconds",
            "Run time of AI jobs that completed, retries included.",
            ["kind", "provider"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "pixforge_webhook_events",
            "Provider webhook deliveries, by provider and what became of them.",
            ["provider", "outcome"],
            registry=self.registry,
        )

        self.compute_tasks = Counter(
            "pixforge_compute_tasks",
            "Tasks the compute pool ran (COMPUTE_PROCESSES), by task function.",
            ["task"],
            registry=self.registry,
        )
        self.compute_cpu = Counter(
            "pixforge_compute_cpu_seconds",
            "CPU time the compute pool's tasks took where they ran, by task function.",
            ["task"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def observe_job(
        self, kind: str, provider: str | None, status: str, error_code: str | None, seconds: float | None
    ) -> None:
        self.jobs_finished.labels(kind, provider or "", status, error_code or "").inc()
        if seconds is not None and error_code is None:
            self.job_duration.labels(kind, provider or "").observe(seconds)

    def observe_compute(self, task: str, cpu_seconds: float) -> None:
        self.compute_tasks.labels(task).inc()
        self.compute_cpu.labels(task).inc(cpu_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ProviderOutages:
    """When each provider last answered a 5xx, timed out or could not be reached, in this process: what
    the provider alert counts. In memory on purpose: the failure is seen by the process that called, and
    writing a row per failed call would load the database exactly when things go wrong. Each process
    judges its own calls; the alert's claim in the database keeps the message to one per window."""

    def __init__(self, keep: timedelta = timedelta(hours=1), max_per_provider: int = 10_000) -> None:
        self._keep = keep
        self._max = max_per_provider
        self._failures: dict[str, deque[datetime]] = {}

    def record(self, provider: str, at: datetime) -> None:
        failures = self._failures.setdefault(provider, deque(maxlen=self._max))
        failures.append(at)
        while failures and failures[0] < at - self._keep:
            failures.popleft()

    def counts_since(self, since: datetime) -> dict[str, int]:
        """Failures per provider at or after `since` (providers without any are left out)."""
        counts = {
            provider: sum(1 for at in failures if at >= since)
            for provider, failures in self._failures.items()
        }
        return {provider: count for provider, count in counts.items() if count}


class ReadinessRecord:
    """What the housekeeping loop's readiness checks found, in this process: since when they have
    failed without a pass in between (None while they pass), and why, for the readiness alert."""

    def __init__(self) -> None:
        self.failing_since: datetime | None = None
        self.explanation: str = ""

    def record(self, failing: bool, explanation: str, at: datetime) -> None:
        if not failing:
            self.failing_since, self.explanation = None, ""
            return
        if self.failing_since is None:
            self.failing_since = at
        self.explanation = explanation
