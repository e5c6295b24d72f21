"""The audit domain as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.controllers import AuditAdminController
from app_backend.audit.service import AuditTrail
from app_backend.audit.tasks import purge_expired_audit_events
from app_backend.kernel.module import DomainModule, Platform


async def start(platform: Platform) -> AuditTrail:
    # Failures that roll a request back are recorded on the side pool, never waiting on the request pool.
    return AuditTrail(platform.side_pool)


def provide_audit(state: State) -> AuditTrail:
    audit: AuditTrail = state.audit
    return audit


module = DomainModule(
    name="audit",
    start=start,
    routes=[AuditAdminController],
    dependencies={"audit": Provide(provide_audit, sync_to_thread=False)},
    signature_types=[AuditTrail],
    jobs=[purge_expired_audit_events],
    cron=[CronJob(purge_expired_audit_events, cron="17 3 * * *")],
    migrations="app_backend.audit",
    append_only=["audit.events"],
    migrated_as={
        "0001_audit.sql": ("app_backend", "0002_audit.sql"),
        "0002_audit_truncate.sql": ("app_backend", "0003_audit_truncate.sql"),
    },
)
