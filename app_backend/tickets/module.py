"""Ticket sales as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.events.service import EventsService
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from app_backend.notifications.service import NotificationService
from app_backend.tickets.controllers import (
    HoldController,
    SaleController,
    SaleManageController,
    TicketController,
)
from app_backend.tickets.queue import Queue
from app_backend.tickets.service import TicketService
from app_backend.tickets.tasks import expire_ticket_holds, refund_tickets, tell_ticket_holders
from code_service.container import CodeServices
from payments.container import PaymentServices


async def start(platform: Platform) -> TicketService:
    payments = platform.get(PaymentServices)
    events = platform.get(EventsService)
    tickets = TicketService(
        platform.pool,
        platform.cipher,
        platform.settings,
        platform.get(IdentityServices).directory,
        payments.orders,
        payments.refunds,
        Queue(platform.redis, platform.cipher, platform.batches, platform.breaker),
        platform.get(NotificationService).send_platform,
        events,
    )
    # A hold's order paid confirms its tickets, closed unpaid releases them: in payments' transactions.
    payments.orders.on_paid(tickets.order_paid)
    payments.orders.on_closed(tickets.order_closed)
    # A session delayed or cancelled: in the publishing transaction.
    events.on_session_changed(tickets.session_changed)
    # The one code admits ticket holders in the event scene; a ticket's printed code is signed by code_service.
    codes = platform.get(CodeServices)
    codes.use_admissions(tickets.admissions)
    tickets.use_printed_codes(codes.ticket_codes.issue)
    return tickets


def provide_tickets(state: State) -> TicketService:
    tickets: TicketService = state.tickets
    return tickets


module = DomainModule(
    name="tickets",
    start=start,
    requires=["identity", "payments", "notifications", "events", "codes"],
    routes=[SaleManageController, SaleController, HoldController, TicketController],
    dependencies={"tickets": Provide(provide_tickets, sync_to_thread=False)},
    signature_types=[TicketService],
    jobs=[expire_ticket_holds, refund_tickets, tell_ticket_holders],
    # Unique cron jobs: one run of each at a time. Each step is a compare-and-set or keyed (a refund's key is the
    # ticket), so even two runs at once would not release, refund or message twice.
    cron=[
        CronJob(expire_ticket_holds, cron="* * * * *", timeout=120),
        CronJob(refund_tickets, cron="* * * * *", timeout=300),
        CronJob(tell_ticket_holders, cron="* * * * *", timeout=300),
    ],
    migrations="app_backend.tickets",
)
