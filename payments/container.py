"""payments' public services: one object per process, started by payments' module (payments/module.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from app_backend.kernel.crypto import FieldCipher
from app_backend.organisations.service import OrganisationService
from code_service.codes.service import FactsService
from code_service.gates.service import TransitGates
from payments.channels.base import PaymentChannel
from payments.ledger.service import Ledger
from payments.notifications.service import NotificationService
from payments.orders.service import OrderService
from payments.payouts.service import PayoutService
from payments.reconciliation.service import ReconciliationService
from payments.refunds.service import RefundService
from payments.settings import PaymentSettings
from payments.settlement.service import SettlementService
from payments.transit.service import TransitService
from payments.webhooks.service import WebhookService


@dataclass
class PaymentServices:
    pool: asyncpg.Pool
    channels: dict[str, PaymentChannel]
    ledger: Ledger
    orders: OrderService
    refunds: RefundService
    notifications: NotificationService
    settlement: SettlementService
    webhooks: WebhookService
    reconciliation: ReconciliationService
    transit: TransitService
    payouts: PayoutService

    @classmethod
    def create(
        cls,
        pool: asyncpg.Pool,
        channels: dict[str, PaymentChannel],
        payees: OrganisationService,
        settings: PaymentSettings,
        box: FieldCipher,
        gates: TransitGates,
        facts: FactsService,
        name_rule: tuple[int, int] = (1, 0),
    ) -> PaymentServices:
        ledger = Ledger()
        webhooks = WebhookService(box, allow_local=settings.allow_local_webhooks)
        orders = OrderService(channels, payees, ledger, settings, webhooks)
        refunds = RefundService(orders, ledger)
        transit = TransitService(channels, orders, refunds, ledger, settings, gates, facts)
        settlement = SettlementService(ledger)
        return cls(
            pool=pool,
            channels=channels,
            ledger=ledger,
            orders=orders,
            refunds=refunds,
            notifications=NotificationService(orders, transit),
            settlement=settlement,
            webhooks=webhooks,
            reconciliation=ReconciliationService(pool, channels, settings, ledger),
            transit=transit,
            payouts=PayoutService(channels, payees, settlement, box, name_rule),
        )


def payments_of(ctx: dict[str, Any]) -> PaymentServices:
    """payments' services in a job: the worker puts the started platform in every job's context."""
    return ctx["platform"].get(PaymentServices)
