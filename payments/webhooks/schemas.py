from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec


class WebhookSet(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=512, pattern="^https?://")]


class WebhookRegistered(msgspec.Struct):
    url: str
    secret: str
    note: str = (
        "events are POSTed as JSON with X-Tzt-Event-Signature: hex(HMAC-SHA256(secret, body)); shown once"
    )


class PayeeEvent(msgspec.Struct):
    id: uuid.UUID
    event: str
    status: str
    attempts: int
    last_error: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class PayeeEvents(msgspec.Struct):
    events: list[PayeeEvent]
