from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

Purpose = Literal["utility_bill", "non_tax_fee", "ticket", "venue_booking", "other"]


class Split(msgspec.Struct, forbid_unknown_fields=True):
    """Another payee's share of the payment, settled to it (an event ticket: the venue's part)."""

    payee_id: uuid.UUID
    amount_fen: Annotated[int, msgspec.Meta(gt=0, le=100_000_000, description="integer fen")]


class OrderCreate(msgspec.Struct, forbid_unknown_fields=True):
    purpose: Purpose
    amount_fen: Annotated[
        int, msgspec.Meta(gt=0, le=100_000_000, description="integer fen, at most 1,000,000 yuan")
    ]
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    payee_id: uuid.UUID
    channel: Literal["alipay", "wechat"]
    method: Literal["app", "mini", "jsapi", "native"]
    payer_channel_id: (
        Annotated[str, msgspec.Meta(max_length=128, description="Alipay buyer open id or WeChat openid")]
        | None
    ) = None
    splits: Annotated[
        list[Split],
        msgspec.Meta(
            max_length=10,
            description=(
                "other payees' shares; `payee_id` is owed what they leave (at least 1 fen). The platform fee is "
                "taken from each share in proportion, and refunds take back from each share in proportion"
            ),
        ),
    ] = []


class PayInstructions(msgspec.Struct):
    channel: str
    method: str
    params: dict[str, Any]


class OrderView(msgspec.Struct):
    id: uuid.UUID
    out_trade_no: str
    status: str
    purpose: str
    subject: str
    amount_fen: int
    refunded_fen: int
    payee_id: uuid.UUID
    channel: str
    method: str
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None
    pay: PayInstructions | None = None


class OrderRefund(msgspec.Struct):
    """One refund of an order as its payee sees it; `updated_at` is when its status last moved."""

    id: uuid.UUID
    out_refund_no: str
    amount_fen: int
    status: str
    reason: str
    created_at: dt.datetime
    updated_at: dt.datetime


class ShareView(msgspec.Struct):
    payee_id: uuid.UUID
    amount_fen: int
    fee_fen: int


class PayeeOrderView(msgspec.Struct):
    """An order as its payee sees it: no pay instructions (those are the payer's), with every refund."""

    id: uuid.UUID
    out_trade_no: str
    status: str
    purpose: str
    subject: str
    amount_fen: int
    fee_fen: int
    refunded_fen: int
    channel: str
    method: str
    channel_trade_no: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None
    refunds: list[OrderRefund]
    # Who is owed what: the order's payee first, then the splits (one share when the order is not split).
    shares: list[ShareView] = []
