from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec


class AuditEvent(msgspec.Struct):
    id: int
    at: dt.datetime
    actor_type: str
    actor_id: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    request_id: str
    ip: str
    detail: dict[str, Any]


class AuditPage(msgspec.Struct):
    events: list[AuditEvent]
