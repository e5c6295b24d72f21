"""Reconciliation shapes: one channel's run for a business day, its classified differences, the scratch pool."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import msgspec

DifferenceClass = Literal[
    "missing_at_channel",  # we have it, the channel's bill does not
    "missing_at_platform",  # the bill has it, we do not
    "status_mismatch",
    "amount_over",  # the channel's amount is more than ours
    "amount_short",  # the channel's amount is less than ours
    "fee_mismatch",  # the bill's fee differs from the fee the channel's rate gives
]
DIFFERENCE_CLASSES: tuple[str, ...] = (
    "missing_at_channel",
    "missing_at_platform",
    "status_mismatch",
    "amount_over",
    "amount_short",
    "fee_mismatch",
)


def item_key(kind: str, out_trade_no: str, out_refund_no: str | None) -> tuple[str, str]:
    """Payments are matched by out_trade_no, refunds by out_refund_no."""
    return (kind, (out_refund_no or out_trade_no) if kind == "refund" else out_trade_no)


class Item(msgspec.Struct, frozen=True):
    """One payment or refund as one side records it, in fen. Statuses are provider-neutral: payments `paid`
    (or what the bill says instead), refunds `succeeded` / `pending` / `failed`. `fee_fen` is the bill's fee
    (positive when charged, negative when a refund gives it back); None on our side."""

    kind: str  # payment | refund
    out_trade_no: str
    out_refund_no: str | None
    amount_fen: int
    status: str
    at: dt.datetime | None = None
    fee_fen: int | None = None
    channel_trade_no: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return item_key(self.kind, self.out_trade_no, self.out_refund_no)


class Difference(msgspec.Struct, frozen=True):
    klass: DifferenceClass = msgspec.field(name="class")
    kind: str
    out_trade_no: str
    out_refund_no: str | None = None
    ours_amount_fen: int | None = None
    theirs_amount_fen: int | None = None
    ours_status: str | None = None
    theirs_status: str | None = None
    expected_fee_fen: int | None = None
    theirs_fee_fen: int | None = None
    note: str = ""


class PoolItem(msgspec.Struct, frozen=True):
    """An item that crossed midnight: `side` had it near the end of `origin_day`, the other side did not."""

    side: str  # ours | theirs
    kind: str
    out_trade_no: str
    out_refund_no: str | None
    amount_fen: int
    status: str
    at: dt.datetime | None
    fee_fen: int | None
    origin_day: dt.date
    state: str  # pending | resolved | escalated
    settled_day: dt.date | None = None

    @property
    def key(self) -> tuple[str, str]:
        return item_key(self.kind, self.out_trade_no, self.out_refund_no)

    def item(self) -> Item:
        return Item(
            self.kind,
            self.out_trade_no,
            self.out_refund_no,
            self.amount_fen,
            self.status,
            self.at,
            self.fee_fen,
        )


class ChannelReport(msgspec.Struct):
    """One channel's run. `matched`: items both sides have, with no difference. `pooled`: items this run put in
    the scratch pool; `resolved` / `escalated`: pool items of the day before that this run settled."""

    run_id: uuid.UUID
    day: dt.date
    channel: str
    status: str  # balanced | differences | failed
    bill_lines: int
    our_items: int
    matched: int
    difference_count: int
    pooled: int
    resolved: int
    escalated: int
    fee_rule: str
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    differences: list[Difference]
    pool: list[PoolItem]  # put in the pool by this run (origin_day = day), with how they stand now
    carried: list[PoolItem]  # from the day before, settled by this run


class ReconciliationReport(msgspec.Struct):
    day: dt.date
    timezone: str
    channels: list[ChannelReport]
