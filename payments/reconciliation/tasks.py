"""Yesterday's reconciliation, every morning once the channels' bills are out (10:00 Asia/Shanghai)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from payments.container import payments_of
from payments.reconciliation.service import BUSINESS_TZ


async def reconcile_yesterday(ctx: dict[str, Any]) -> dict[str, int]:
    """Differences per channel (-1 when the channel's bill could not be had)."""
    day = dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)
    report = await payments_of(ctx).reconciliation.run(day)
    return {c.channel: (-1 if c.status == "failed" else c.difference_count) for c in report.channels}
