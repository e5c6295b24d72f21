from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

from payments.orders.schemas import OrderView


class AgreementCreate(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["alipay", "wechat"]
    payer_channel_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=128,
            description="WeChat openid, or the account Alipay shows the rider (external_logon_id)",
        ),
    ]


class AgreementView(msgspec.Struct):
    id: uuid.UUID
    channel: str
    status: str  # pending | active | ended
    external_agreement_no: str
    created_at: dt.datetime
    activated_at: dt.datetime | None
    ended_at: dt.datetime | None
    end_reason: str = ""
    sign_params: dict[str, Any] | None = None  # what the client opens to sign (while pending)


class TripView(msgspec.Struct):
    id: uuid.UUID
    operator_id: uuid.UUID
    kind: str  # paired | single | open_entry | open_exit
    started_at: dt.datetime
    ended_at: dt.datetime | None
    line_in: str | None
    station_in: str | None
    line_out: str | None
    station_out: str | None
    day: dt.date
    fare_fen: int
    charged_fen: int  # after the daily cap
    status: str  # unbilled | waived | billing | paid | debt | repaid


class DebtView(msgspec.Struct):
    id: uuid.UUID
    operator_id: uuid.UUID
    amount_fen: int
    failure: str  # refused | unanswered | no-agreement
    created_at: dt.datetime
    trips: list[TripView]


class MoneyBack(msgspec.Struct):
    """Money paid for debts already repaid, which the platform returns through the channel it came from."""

    order_id: uuid.UUID  # the order that paid too much, as GET /api/v1/payments/orders/{id} shows it
    out_trade_no: str
    amount_fen: int
    status: str  # refunding | refunded | failed (operations follow a failed one up)
    created_at: dt.datetime


class DebtSummary(msgspec.Struct):
    total_fen: int
    debts: list[DebtView]
    money_back: list[MoneyBack] = msgspec.field(default_factory=list)  # newest first


class RepayCreate(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["alipay", "wechat"]
    method: Literal["app", "mini", "jsapi", "native"]
    payer_channel_id: (
        Annotated[str, msgspec.Meta(max_length=128, description="Alipay buyer open id or WeChat openid")]
        | None
    ) = None


class Repayment(msgspec.Struct):
    order: OrderView  # the order to pay, as GET /api/v1/payments/orders/{id} shows it
    debt_fen: int  # what this order clears
    remaining_fen: int  # debts to other operators, repaid with further orders
