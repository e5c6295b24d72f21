"""Audit retention: records are kept 185 days (GB/T 22239 asks for at least six months), then purged."""

from __future__ import annotations

from typing import Any


async def purge_expired_audit_events(ctx: dict[str, Any]) -> int:
    services = ctx["services"]
    async with services.pool.acquire() as conn, conn.transaction():
        return int(await services.audit.purge(conn, services.settings.audit_retention_days))
