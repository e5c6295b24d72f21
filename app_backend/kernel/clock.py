"""The city's business time: days, settlements, reconciliations and OTP quotas all turn over at midnight in
Asia/Shanghai (UTC+8 all year, no daylight saving)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

BUSINESS_TZ = ZoneInfo("Asia/Shanghai")


def now() -> dt.datetime:
    """The current instant, timezone-aware (UTC)."""
    return dt.datetime.now(dt.UTC)


def business_day(at: dt.datetime | None = None) -> dt.date:
    """The business day an instant falls on (today when omitted)."""
    return (at or now()).astimezone(BUSINESS_TZ).date()
