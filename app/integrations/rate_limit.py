"""Rate limits on the `limits` library (the engine under slowapi), through its asyncio API so a Redis
round trip never blocks the event loop. Memory storage by default, Redis when REDIS_URL is set."""

from __future__ import annotations

import math
import time
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool

log = structlog.get_logger("app.integrations.rate_limit")


class RateLimitExceeded(Exception):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"retry after {retry_after_seconds}s")
        self.retry_after_seconds = retry_after_seconds


class RateLimiter:
    def __init__(self, storage_uri: str, *, enabled: bool = True, key_prefix: str = "pixforge") -> None:
        options: dict[str, Any] = {}
        self._redis_pool: ConnectionPool | None = None
        if storage_uri.startswith("async+redis"):
            # Our own pool, so shutdown can close its connections.
            self._redis_pool = ConnectionPool.from_url(storage_uri.removeprefix("async+"))
            options = {"implementation": "redispy", "connection_pool": self._redis_pool}
        self._storage = storage_from_string(storage_uri, key_prefix=key_prefix, **options)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self.enabled = enabled
        self._parsed: dict[str, RateLimitItem] = {}

    @classmethod
    def for_redis_url(cls, redis_url: str | None, *, enabled: bool = True) -> RateLimiter:
        if redis_url:
            return cls("async+" + redis_url, enabled=enabled)
        return cls("async+memory://", enabled=enabled)

    async def hit(self, limit: str, *identifiers: str) -> None:
        """Count one attempt against `limit` for this identity; raise when it is over the limit."""
        if not self.enabled:
            return
        item = self._parsed.get(limit) or self._parsed.setdefault(limit, parse(limit))
        if await self._limiter.hit(item, *identifiers):
            return
        stats = await self._limiter.get_window_stats(item, *identifiers)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        log.info("rate_limit.exceeded", limit=limit, scope=identifiers[0] if identifiers else None)
        raise RateLimitExceeded(retry_after)

    @property
    def uses_redis(self) -> bool:
        return self._redis_pool is not None

    async def storage_answers(self) -> bool:
        """The storage is reachable (a PING for Redis)."""
        storage = self._storage
        assert isinstance(storage, AsyncStorage)  # "async+" URIs only
        try:
            return bool(await storage.check())
        except Exception:  # noqa: BLE001 - any failure means unreachable, reported as such
            return False

    async def aclose(self) -> None:
        if self._redis_pool is not None:
            await self._redis_pool.aclose()

    async def reset(self) -> None:
        await self._limiter.storage.reset()
