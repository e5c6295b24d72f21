"""payments as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.kernel.module import DomainModule, Platform
from app_backend.organisations.service import OrganisationServices
from code_service.container import CodeServices
from payments.auth import provide_payee_client, provide_payer
from payments.channels.configured import build_channels
from payments.container import PaymentServices
from payments.notifications.controllers import NotifyController
from payments.orders.controllers import OrderController, PayeeOrderController
from payments.orders.tasks import settle_payments
from payments.payouts.controllers import PayoutAccountAdminController, PayoutAdminController
from payments.payouts.tasks import send_payouts
from payments.reconciliation.controllers import ReconciliationAdminController
from payments.reconciliation.tasks import reconcile_yesterday
from payments.settings import PaymentSettings
from payments.settlement.controllers import SettlementAdminController, SettlementController
from payments.settlement.tasks import settle_yesterday
from payments.transit.controllers import TransitController
from payments.transit.tasks import (
    build_transit_trips,
    check_transit_deductions,
    deduct_transit_fares,
    poll_transit_agreements,
    return_overpayments,
)
from payments.webhooks.controllers import WebhookController
from payments.webhooks.tasks import deliver_payee_events


async def start(platform: Platform) -> PaymentServices:
    """The configured channels: the local sandboxes in dev (started by `tzt serve`), the real gateways in
    production. A channel without configuration is simply absent (orders for it get a 400)."""
    settings = platform.settings
    codes = platform.get(CodeServices)
    return PaymentServices.create(
        platform.pool,
        build_channels(settings.payment_config),
        platform.get(OrganisationServices).organisations,
        PaymentSettings(notify_base_url=settings.public_base_url, allow_local_webhooks=settings.is_dev),
        platform.cipher,
        codes.transit_gates,
        codes.facts,
        (settings.mask_name.head, settings.mask_name.tail),
    )


def provide_payments(state: State) -> PaymentServices:
    payments: PaymentServices = state.payments
    return payments


module = DomainModule(
    name="payments",
    start=start,
    requires=["organisations", "codes"],
    routes=[
        OrderController,
        PayeeOrderController,
        NotifyController,
        SettlementController,
        WebhookController,
        TransitController,
        SettlementAdminController,
        ReconciliationAdminController,
        PayoutAccountAdminController,
        PayoutAdminController,
    ],
    dependencies={
        "payments": Provide(provide_payments, sync_to_thread=False),
        "payer": Provide(provide_payer, sync_to_thread=False),
        "payee_client": Provide(provide_payee_client),
    },
    signature_types=[PaymentServices],
    jobs=[
        settle_payments,
        reconcile_yesterday,
        settle_yesterday,
        deliver_payee_events,
        build_transit_trips,
        deduct_transit_fares,
        check_transit_deductions,
        poll_transit_agreements,
        return_overpayments,
        send_payouts,
    ],
    cron=[
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
        CronJob(return_overpayments, cron="* * * * *", timeout=300),
        # Payouts by channel transfer every 5 minutes: pending ones settled by query, due ones sent (the daily
        # settlement makes them due at 02:30), finished ones confirmed against the channel.
        CronJob(send_payouts, cron="*/5 * * * *", timeout=600),
    ],
    migrations="payments",
    append_only=["payments.ledger_entries", "payments.ledger_postings"],
)
