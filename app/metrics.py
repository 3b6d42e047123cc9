"""Prometheus metrics, one registry per application (tests build many apps in one process).

Labels stay bounded: a request is labelled with its route template (`/api/v1/images/{image_id}`), never
its raw path, and an unmatched path is `unmatched`; job errors are our own fixed codes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

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

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def observe_job(
        self, kind: str, provider: str | None, status: str, error_code: str | None, seconds: float | None
    ) -> None:
        self.jobs_finished.labels(kind, provider or "", status, error_code or "").inc()
        if seconds is not None and error_code is None:
            self.job_duration.labels(kind, provider or "").observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
