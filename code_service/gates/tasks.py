"""Housekeeping: refused taps are kept for the operators' reports for REFUSED_TAPS_KEPT, then deleted."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app_backend.kernel.module import Platform
from code_service.gates.repository import TapRepository

# Long enough for an operator's monthly reconciliation and a dispute after it; a refused tap was never billed.
REFUSED_TAPS_KEPT = dt.timedelta(days=90)


async def purge_refused_taps(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn:
        return await TapRepository().delete_refused_before(conn, dt.datetime.now(dt.UTC) - REFUSED_TAPS_KEPT)
