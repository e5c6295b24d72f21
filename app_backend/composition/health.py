"""Liveness, readiness and metrics of the process (what a load balancer and Prometheus ask)."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

if TYPE_CHECKING:
    from app_backend.kernel.module import Platform


class HealthController(Controller):
    tags = ["ops"]
    include_in_schema = True

    @get("/healthz", summary="The process is alive")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="PostgreSQL and Redis are reachable")
    async def readyz(self, platform: Platform) -> Response[dict[str, Any]]:
        checks: dict[str, str] = {}

        async def postgres() -> None:
            async with platform.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")

        for name, probe in (("postgres", postgres), ("redis", platform.redis.ping)):
            try:
                await asyncio.wait_for(probe(), timeout=2)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return Response(
            {"status": "ready" if ready else "not-ready", "checks": checks}, status_code=200 if ready else 503
        )

    @get("/api/v1/ping", summary="A trivial JSON endpoint (the benchmark baseline)")
    async def ping(self) -> dict[str, str]:
        return {"pong": "ok"}


class MetricsController(Controller):
    """Prometheus' text format, declared as such in the OpenAPI document (Litestar's own controller declares JSON)."""

    path = "/metrics"
    tags = ["ops"]

    @get(media_type=CONTENT_TYPE_LATEST, summary="Prometheus metrics of every worker of this node")
    async def metrics(self) -> Response[bytes]:
        registry = REGISTRY
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
