from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec


class RefundCreate(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: Annotated[int, msgspec.Meta(gt=0, le=100_000_000)]
    reason: Annotated[str, msgspec.Meta(max_length=256)] = ""


class RefundView(msgspec.Struct):
    id: uuid.UUID
    order_id: uuid.UUID
    out_refund_no: str
    amount_fen: int
    status: str
    reason: str
    created_at: dt.datetime
    order_refunded_fen: int
