"""Background jobs on SAQ (Redis-backed): the composition root registers every domain's tasks here."""

from __future__ import annotations

from typing import Any

from saq import CronJob, Queue, Worker

from app_backend.audit.tasks import purge_expired_audit_events
from app_backend.identity.tasks import purge_expired_refresh_tokens
from app_backend.services import Services
from app_backend.settings import Settings
from payments.orders.tasks import settle_payments

QUEUE_NAME = "taizhou-tong"


def build_worker(settings: Settings) -> Worker:
    queue = Queue.from_url(settings.redis_url, name=QUEUE_NAME)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["services"] = await Services.create(settings)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "services" in ctx:
            await ctx["services"].close()

    return Worker(
        queue,
        functions=[purge_expired_audit_events, purge_expired_refresh_tokens, settle_payments],
        cron_jobs=[
            CronJob(purge_expired_audit_events, cron="17 3 * * *"),
            CronJob(purge_expired_refresh_tokens, cron="37 3 * * *"),
            CronJob(settle_payments, cron="* * * * *"),
        ],
        startup=startup,
        shutdown=shutdown,
        concurrency=4,
    )
