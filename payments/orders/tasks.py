"""Settling what the channels never told us: stale orders and pending refunds, by asking the channel."""

from __future__ import annotations

from typing import Any

from payments.container import payments_of


async def settle_payments(ctx: dict[str, Any]) -> dict[str, int]:
    payments = payments_of(ctx)
    counts = await payments.orders.settle_stale(payments.pool)
    counts["refunds"] = await payments.refunds.settle_pending_refunds(payments.pool)
    return counts
