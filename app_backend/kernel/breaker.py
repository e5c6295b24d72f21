"""A circuit breaker for Redis: when it stops answering, the hot paths stop waiting for it.

Without one, every request during an outage would spend the whole socket timeout on Redis before falling back,
and the connection pool would fill with requests waiting on a dead server. Open, the breaker sends everything to
the fallback at once; after `cooldown` seconds one request (the probe) tries Redis again while the others keep to
the fallback, and the first success closes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter, Gauge
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

_log = structlog.get_logger("redis")
_OPENED = Counter(
    "tzt_redis_breaker_opened_total", "Times Redis was found unavailable and the breaker opened"
)
_OPEN = Gauge(
    "tzt_redis_breaker_open", "1 while this worker treats Redis as unavailable", multiprocess_mode="max"
)

# What "Redis is not answering" looks like through redis-py; anything else (a ResponseError) is a bug, not an outage.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    OSError,
    asyncio.TimeoutError,
)


class RedisBreaker:
    unavailable = REDIS_UNAVAILABLE

    def __init__(self, cooldown: float = 2.0, probe_timeout: float = 2.0) -> None:
        self._cooldown = cooldown
        self._probe_timeout = probe_timeout
        self._open_until = 0.0
        self._probe_until = 0.0
        self._on_recovery: list[Callable[[], Awaitable[None]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def on_recovery(self, handler: Callable[[], Awaitable[None]]) -> None:
        """Runs `handler` (in the background) each time Redis answers again after this breaker opened: what was
        held elsewhere meanwhile (single-use claims in PostgreSQL) goes back into Redis."""
        self._on_recovery.append(handler)

    async def _recovered(self, handler: Callable[[], Awaitable[None]]) -> None:
        try:
            await handler()
        except (
            Exception
        ) as exc:  # a failed hand-back is logged; the claims stay in PostgreSQL until they expire
            _log.warning("handing claims back to redis failed", error=type(exc).__name__)

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    @property
    def recovering(self) -> bool:
        """Redis answers again, but what was claimed in PostgreSQL meanwhile is still being handed back: until it
        is, a single-use claim that Redis granted must also be claimed in PostgreSQL."""
        return bool(self._running)

    def allow(self) -> bool:
        """May this call use Redis? Closed: yes. Open: no, except one probe per cooldown."""
        if not self._open_until:
            return True
        now = time.monotonic()
        if now < self._open_until or now < self._probe_until:
            return False
        self._probe_until = now + self._probe_timeout
        return True

    def failed(self, error: BaseException | None = None) -> None:
        if not self._open_until:
            _OPENED.inc()
            _OPEN.set(1)
            name = type(error).__name__ if error else ""
            _log.warning("redis unavailable; degraded mode", error=name, cooldown=self._cooldown)
        self._open_until = time.monotonic() + self._cooldown
        self._probe_until = 0.0

    def succeeded(self) -> None:
        if self._open_until:
            _OPEN.set(0)
            _log.info("redis answering again; degraded mode over")
            for handler in self._on_recovery:
                task = asyncio.get_running_loop().create_task(self._recovered(handler))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        self._open_until = 0.0
        self._probe_until = 0.0

    async def settled(self) -> None:
        """Waits for the hand-backs under way (tests, and a clean shutdown)."""
        while self._running:
            await asyncio.gather(*self._running)
