"""notifications as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.service import AuditTrail
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from app_backend.notifications.controllers import (
    MachineMessagesController,
    MessageRegionsAdminController,
    ResidentMessagesController,
)
from app_backend.notifications.push import RecordingPushProvider
from app_backend.notifications.service import NotificationService, check_template_kinds
from app_backend.notifications.tasks import deliver_messages, write_broadcasts
from app_backend.oidc.service import OidcService
from app_backend.organisations.service import OrganisationServices
from code_service.container import CodeServices
from mini_programs.service import MiniProgramService
from payments.container import PaymentServices


async def start(platform: Platform) -> NotificationService:
    """No push provider is wired for production yet: dev and tests record pushes, production sends none. The
    platform's own senders (payments' transit debts, code_service's status changes) get `send_platform` here: they
    cannot import this service, which imports payments and mini_programs (app_backend/kernel/messages.py)."""
    mini = platform.get(MiniProgramService)
    check_template_kinds(
        (channel, app_id, kind)
        for channel, app_id in mini.apps.names()
        for kind in mini.templates(channel, app_id)
    )
    push = RecordingPushProvider() if platform.settings.is_dev else None
    payments = platform.get(PaymentServices)
    service = NotificationService(
        platform.pool,
        mini,
        payments.orders,
        platform.cipher,
        push,
        residents=platform.get(IdentityServices).directory,
        organisations=platform.get(OrganisationServices).organisations,
        audit=platform.get(AuditTrail),
        one_login=platform.get(OidcService),
        tile_days=platform.settings.tiles.broadcast_days,
        tile_max_days=platform.settings.tiles.broadcast_max_days,
    )
    # Who paid an organisation's order used its service: from then on it may message them.
    payments.orders.on_paid(service.record_paid_order)
    payments.transit.use_messages(service.send_platform)
    platform.get(CodeServices).use_messages(service.send_platform)
    return service


def provide_notifications(state: State) -> NotificationService:
    notifications: NotificationService = state.notifications
    return notifications


module = DomainModule(
    name="notifications",
    start=start,
    requires=["audit", "identity", "organisations", "mini_programs", "payments", "codes", "oidc"],
    routes=[ResidentMessagesController, MachineMessagesController, MessageRegionsAdminController],
    dependencies={"notifications": Provide(provide_notifications, sync_to_thread=False)},
    signature_types=[NotificationService],
    jobs=[deliver_messages, write_broadcasts],
    cron=[
        CronJob(deliver_messages, cron="* * * * *", timeout=300),
        # Each run writes for about 50 s; a run still going when the next starts shares the work batch by batch.
        CronJob(write_broadcasts, cron="* * * * *", timeout=300),
    ],
    migrations="app_backend.notifications",
)
