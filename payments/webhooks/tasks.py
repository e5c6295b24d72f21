"""Delivers due payee events; runs every minute."""

from __future__ import annotations

from typing import Any


async def deliver_payee_events(ctx: dict[str, Any]) -> dict[str, int]:
    payments = ctx["services"].payments
    async with payments.pool.acquire() as conn, conn.transaction():
        return await payments.webhooks.deliver_due(conn)
