"""Yesterday's settlement, every morning."""

from __future__ import annotations

import datetime as dt
from typing import Any

from payments.container import payments_of
from payments.settlement.service import BUSINESS_TZ


async def settle_yesterday(ctx: dict[str, Any]) -> int:
    payments = payments_of(ctx)
    day = dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)
    async with payments.pool.acquire() as conn, conn.transaction():
        return len(await payments.settlement.settle_day(conn, day))
