"""Housekeeping: the nonces held in PostgreSQL during a Redis outage are deleted once expired."""

from __future__ import annotations

from typing import Any

from app_backend.kernel.module import Platform
from app_backend.organisations.repository import UsedNonceRepository


async def purge_used_nonces(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn:
        return await UsedNonceRepository().delete_expired(conn)
