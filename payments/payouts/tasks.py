"""The payouts job: pending transfers settled by query, due settlements of payees paid by transfer sent, and every
finished transfer confirmed against the channel (reconciliation of payouts)."""

from __future__ import annotations

from typing import Any

from payments.container import payments_of


async def send_payouts(ctx: dict[str, Any]) -> dict[str, int]:
    """Channel calls run between transactions, never inside one (payments/payouts/service.py)."""
    payouts = payments_of(ctx).payouts
    pool = payments_of(ctx).pool
    counts = await payouts.settle_pending(pool)
    counts.update(await payouts.send_due(pool))
    counts.update(await payouts.confirm(pool))
    return counts
