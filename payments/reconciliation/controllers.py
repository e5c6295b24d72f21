"""HTTP for operations staff: the stored reconciliation report of a day (`tzt reconcile --date` runs days)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from litestar import Controller, get
from litestar.params import Parameter

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError
from app_backend.kernel.http import problems
from payments.reconciliation.schemas import ReconciliationReport

if TYPE_CHECKING:
    from app_backend.audit.service import AuditTrail
    from payments.container import PaymentServices


class ReconciliationAdminController(Controller):
    path = "/api/v1/admin/reconciliation"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN, AUDITOR)]
    dependencies = STAFF

    @get(
        "",
        summary="The stored reconciliation report of a business day (Asia/Shanghai)",
        opt={
            **problems(404),
            **audited("admin.reconciliation_view", target_type="reconciliation", target="date"),
        },
    )
    async def report(
        self,
        payments: PaymentServices,
        audit: AuditTrail,
        db: Connection,
        staff: Staff,
        day: dt.date | None = Parameter(query="date", default=None, description="YYYY-MM-DD"),
    ) -> ReconciliationReport:
        if day is None:
            raise DomainError(400, "bad-request", "date is required (YYYY-MM-DD)")
        report = await payments.reconciliation.report(db, day)
        if not report.channels:
            # The request's transaction rolls back with the 404, and the audited view with it: kept detached.
            await audit.record_detached(
                staff.actor,
                "admin.reconciliation_view",
                target_type="reconciliation",
                target_id=day.isoformat(),
            )
            raise DomainError(404, "not-found", f"no reconciliation has run for {day.isoformat()}")
        return report
