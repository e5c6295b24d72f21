"""Housekeeping for sessions: spent and expired refresh tokens are deleted daily."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app_backend.identity.repository import SessionRepository


async def purge_expired_refresh_tokens(ctx: dict[str, Any]) -> int:
    services = ctx["services"]
    async with services.pool.acquire() as conn, conn.transaction():
        return await SessionRepository().delete_expired(conn, dt.datetime.now(dt.UTC))
