"""Housekeeping: the replay ids held in PostgreSQL during a Redis outage are deleted once expired."""

from __future__ import annotations

from typing import Any

from app_backend.kernel.module import Platform
from code_service.verification.repository import ReplayFallbackRepository


async def purge_replay_fallback(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn:
        return await ReplayFallbackRepository().delete_expired(conn)
