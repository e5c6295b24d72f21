"""Audit retention: records are kept 185 days (GB/T 22239 asks for at least six months), then purged."""

from __future__ import annotations

from typing import Any

from app_backend.audit.service import AuditTrail
from app_backend.kernel.module import Platform


async def purge_expired_audit_events(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn, conn.transaction():
        return await platform.get(AuditTrail).purge(conn, platform.settings.audit_retention_days)
