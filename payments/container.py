"""payments' object graph, built by the composition root from what it is handed."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from payments.channels.base import PaymentChannel
from payments.ledger.service import Ledger
from payments.notifications.controllers import NotifyController
from payments.notifications.service import NotificationService
from payments.orders.controllers import OrderController
from payments.orders.service import OrderService
from payments.ports import PayeeDirectory, PaymentSettings, TransitPorts
from payments.reconciliation.service import ReconciliationService
from payments.refunds.service import RefundService
from payments.settlement.controllers import SettlementController
from payments.settlement.service import SettlementService
from payments.transit.controllers import TransitController
from payments.transit.service import TransitService
from payments.webhooks.controllers import WebhookController
from payments.webhooks.service import SecretBox, WebhookService

ROUTES: list[type] = [
    OrderController,
    NotifyController,
    SettlementController,
    WebhookController,
    TransitController,
]


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

    @classmethod
    def create(
        cls,
        pool: asyncpg.Pool,
        channels: dict[str, PaymentChannel],
        payees: PayeeDirectory,
        settings: PaymentSettings,
        box: SecretBox,
        transit_ports: TransitPorts | None = None,
    ) -> PaymentServices:
        ledger = Ledger()
        webhooks = WebhookService(box, allow_local=settings.allow_local_webhooks)
        orders = OrderService(channels, payees, ledger, settings, webhooks)
        transit = TransitService(channels, orders, ledger, settings, transit_ports or TransitPorts())
        return cls(
            pool=pool,
            channels=channels,
            ledger=ledger,
            orders=orders,
            refunds=RefundService(orders, ledger),
            notifications=NotificationService(orders, transit),
            settlement=SettlementService(ledger),
            webhooks=webhooks,
            reconciliation=ReconciliationService(pool, channels, settings),
            transit=transit,
        )
