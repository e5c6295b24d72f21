"""Housekeeping for sessions: spent and expired refresh tokens are deleted daily."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app_backend.identity.repository import SessionRepository
from app_backend.kernel.module import Platform


async def purge_expired_refresh_tokens(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn, conn.transaction():
        return await SessionRepository().delete_expired(conn, dt.datetime.now(dt.UTC))
