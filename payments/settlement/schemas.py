from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec


class SettlementView(msgspec.Struct):
    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    gross_fen: int
    fees_fen: int
    refunds_fen: int
    net_fen: int
    status: str
    payout_ref: str | None
    created_at: dt.datetime
    paid_at: dt.datetime | None


class Settlements(msgspec.Struct):
    settlements: list[SettlementView]


class PayoutRecord(msgspec.Struct, forbid_unknown_fields=True):
    payout_ref: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="the bank transfer reference")
    ]
