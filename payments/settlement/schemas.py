from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

SettlementStatus = Literal["due", "paid", "nothing-due", "carried"]


class TransferSummary(msgspec.Struct):
    """The settlement's latest channel transfer (payees paid by Alipay or WeChat transfer, decision 0021)."""

    channel: str
    out_biz_no: str
    status: Annotated[
        Literal["pending", "succeeded", "failed"],
        msgspec.Meta(description="failed: the channel refused it (see failure); the settlement stays due"),
    ]
    failure: str | None


class SettlementView(msgspec.Struct):
    """One settlement of a payee: the movements of its money not settled before and made before `cutoff`, less
    what it owed us from earlier settlements. `net_fen` is paid out when positive (`payout_fen`); when negative,
    the payee owes it to us (`owed_after_fen`) and it is recovered from the next settlement."""

    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    seq: Annotated[
        int, msgspec.Meta(description="1 for the day's first settlement of this payee, then 2, ...")
    ]
    cutoff: dt.datetime
    gross_fen: int
    fees_fen: int
    refunds_fen: int
    owed_before_fen: Annotated[
        int, msgspec.Meta(description="what the payee owed us from earlier settlements")
    ]
    net_fen: int
    payout_fen: int
    owed_after_fen: int
    status: SettlementStatus
    payout_ref: str | None
    created_at: dt.datetime
    paid_at: dt.datetime | None
    recovered_at_payout_fen: Annotated[
        int,
        msgspec.Meta(
            description=(
                "kept back from the payout: what the payee owed us when it was paid (a refund after its money "
                "was settled); the money sent was payout_fen minus this"
            )
        ),
    ] = 0
    transfer: TransferSummary | None = None


class Settlements(msgspec.Struct):
    settlements: list[SettlementView]


class PayoutRecord(msgspec.Struct, forbid_unknown_fields=True):
    payout_ref: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="the bank transfer reference")
    ]
