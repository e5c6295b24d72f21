"""Delivers due payee events; runs every minute."""

from __future__ import annotations

from typing import Any

from payments.container import payments_of


async def deliver_payee_events(ctx: dict[str, Any]) -> dict[str, int]:
    payments = payments_of(ctx)
    async with payments.pool.acquire() as conn, conn.transaction():
        return await payments.webhooks.deliver_due(conn)
