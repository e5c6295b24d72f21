"""Background jobs on SAQ (Redis-backed): every module's jobs and cron jobs, run with the started platform in
each job's context (`ctx["platform"]`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saq import Queue, Worker

from app_backend.composition.modules import MODULES
from app_backend.composition.wiring import start_platform, stop_platform
from app_backend.kernel.module import DomainModule
from app_backend.kernel.settings import Settings

QUEUE_NAME = "taizhou-tong"


def build_worker(settings: Settings, modules: Sequence[DomainModule] = MODULES) -> Worker:
    queue = Queue.from_url(settings.redis_url, name=QUEUE_NAME)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["platform"] = await start_platform(settings, modules)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "platform" in ctx:
            await stop_platform(ctx["platform"], modules)

    return Worker(
        queue,
        functions=[job for module in modules for job in module.jobs],
        cron_jobs=[cron for module in modules for cron in module.cron],
        startup=startup,
        shutdown=shutdown,
        concurrency=4,
    )
