"""Background jobs on SAQ (Redis-backed): the composition root registers every domain's tasks here."""

from __future__ import annotations

from typing import Any

from saq import CronJob, Queue, Worker

from app_backend.audit.tasks import purge_expired_audit_events
from app_backend.composition.wiring import Services
from app_backend.identity.tasks import purge_expired_refresh_tokens
from app_backend.kernel.settings import Settings
from payments.orders.tasks import settle_payments
from payments.reconciliation.tasks import reconcile_yesterday
from payments.settlement.tasks import settle_yesterday
from payments.transit.tasks import (
    build_transit_trips,
    check_transit_deductions,
    deduct_transit_fares,
    poll_transit_agreements,
)
from payments.webhooks.tasks import deliver_payee_events

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
        functions=[
            purge_expired_audit_events,
            purge_expired_refresh_tokens,
            settle_payments,
            reconcile_yesterday,
            build_transit_trips,
            deduct_transit_fares,
            check_transit_deductions,
            poll_transit_agreements,
            settle_yesterday,
            deliver_payee_events,
        ],
        cron_jobs=[
            CronJob(purge_expired_audit_events, cron="17 3 * * *"),
            CronJob(purge_expired_refresh_tokens, cron="37 3 * * *"),
            CronJob(settle_payments, cron="* * * * *"),
            # 10:00 Asia/Shanghai (UTC+8, no DST) is 02:00 UTC, the cron timezone of SAQ.
            CronJob(reconcile_yesterday, cron="0 2 * * *", timeout=1800),
            # Yesterday's settlement at 02:30 Asia/Shanghai; payee events every minute.
            CronJob(settle_yesterday, cron="30 18 * * *", timeout=1800),
            CronJob(deliver_payee_events, cron="* * * * *", timeout=300),
            # Transit: taps into trips every 5 minutes, fares deducted hourly, pending deductions and agreements
            # asked of the channel every few minutes (their notifications may never come).
            CronJob(build_transit_trips, cron="*/5 * * * *", timeout=600),
            CronJob(deduct_transit_fares, cron="17 * * * *", timeout=1800),
            CronJob(check_transit_deductions, cron="*/5 * * * *", timeout=600),
            CronJob(poll_transit_agreements, cron="*/2 * * * *", timeout=300),
        ],
        startup=startup,
        shutdown=shutdown,
        concurrency=4,
    )
