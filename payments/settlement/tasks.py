"""Yesterday's settlement, every morning."""

from __future__ import annotations

import datetime as dt
from typing import Any

from payments.settlement.service import BUSINESS_TZ


async def settle_yesterday(ctx: dict[str, Any]) -> int:
    payments = ctx["services"].payments
    day = dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)
    async with payments.pool.acquire() as conn, conn.transaction():
        return len(await payments.settlement.settle_day(conn, day))
