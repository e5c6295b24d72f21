"""HTTP for auditors: searching the audit trail (the search itself is audited)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Controller, get
from litestar.params import Parameter

from app_backend.audit.schemas import AuditPage
from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.kernel.db import Connection

if TYPE_CHECKING:
    from app_backend.audit.service import AuditTrail


class AuditAdminController(Controller):
    path = "/api/v1/admin/audit"
    tags = ["admin"]
    guards = [staff_only(AUDITOR, OPS_ADMIN)]
    dependencies = STAFF

    @get(
        "",
        summary="Search the audit trail",
        opt=audited("admin.audit_search", detail=("actor_id", "target_id", "action")),
    )
    async def search(
        self,
        audit: AuditTrail,
        db: Connection,
        staff: Staff,
        actor_id: str | None = Parameter(query="actor_id", default=None, max_length=64),
        target_id: str | None = Parameter(query="target_id", default=None, max_length=64),
        action: str | None = Parameter(query="action", default=None, max_length=64),
        before_id: int | None = Parameter(query="before_id", default=None, ge=1, le=2**63 - 1),
        limit: int = Parameter(query="limit", default=100, ge=1, le=500),
    ) -> AuditPage:
        events = await audit.search(
            db, actor_id=actor_id, target_id=target_id, action=action, before_id=before_id, limit=limit
        )
        return AuditPage(events=events)
