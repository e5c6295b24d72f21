"""`make bench` part "redis": what one hot-path Redis batch costs the client, redis-py's client against the shared
connection the hot paths use (`app_backend/kernel/redis_batch.py`), measured side by side in one run.

Both send the same thing: one EVALSHA of the batch script with a display's three commands (session-revoked
EXISTS, rate-limit INCR, cached facts GET), from 32 concurrent tasks as a busy worker would. Counted: the client
process's CPU time per batch (Redis runs in its own process), median over alternating rounds."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app_backend.kernel.redis_batch import BATCH_SCRIPT, BatchRunner

TASKS = 32


async def _per_batch_us(send: Callable[[int], Awaitable[Any]], batches: int) -> float:
    per_task = batches // TASKS

    async def task(n: int) -> None:
        for i in range(per_task):
            await send(n * per_task + i)

    started = time.process_time()
    await asyncio.gather(*(task(n) for n in range(TASKS)))
    return (time.process_time() - started) / (per_task * TASKS) * 1e6


async def _measure(url: str, rounds: int, batches: int) -> dict[str, list[float]]:
    from app_backend.composition.wiring import create_redis

    client: Redis = create_redis(url, max_connections=TASKS + 8, timeout=1.0)
    script = client.register_script(BATCH_SCRIPT)
    runner = BatchRunner(client)
    prefix = f"bench:{uuid.uuid4().hex}"

    def keys(i: int) -> list[str]:
        return [f"{prefix}:revoked", f"{prefix}:rate:{i % 64}", f"{prefix}:facts"]

    args = ["exists", "incr", "get"]

    async def via_client(i: int) -> Any:
        return await script(keys=keys(i), args=args)

    async def via_shared_connection(i: int) -> Any:
        return await runner.run(keys(i), args)

    sends = {
        "redis-py client (Script call)": via_client,
        "shared connection (BatchRunner)": via_shared_connection,
    }
    for send in sends.values():  # warm: connections made, script loaded
        await _per_batch_us(send, TASKS * 20)
    costs: dict[str, list[float]] = {name: [] for name in sends}
    for _ in range(rounds):
        for name, send in sends.items():
            costs[name].append(await _per_batch_us(send, batches))
    await runner.close()
    await client.aclose()
    return costs


def redis_client_benchmarks(redis_url: str | None, rounds: int = 7, batches: int = 6400) -> dict[str, float]:
    """Median CPU microseconds per batch for each client; starts an embedded Redis when no URL is given."""
    if redis_url:
        costs = asyncio.run(_measure(redis_url, rounds, batches))
    else:
        from app_backend.composition.embedded import EmbeddedServices

        with tempfile.TemporaryDirectory(prefix="tzt-bench-redis-") as folder:
            server = EmbeddedServices(Path(folder))
            server.start(want_postgres=False, want_redis=True, persistent_redis=False)
            try:
                costs = asyncio.run(_measure(server.redis_url, rounds, batches))
            finally:
                server.stop()
    return {name: statistics.median(values) for name, values in costs.items()}
