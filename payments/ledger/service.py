"""The double-entry ledger. Accounts (debits positive, credits negative):

channel_clearing:<channel>   asset: money the channel (Alipay, WeChat Pay) holds for us, as its bill states it
channel_fees:<channel>       expense: what the channel keeps of payments, less what it gives back with refunds
payee_payable:<payee id>     liability: what we owe a department or merchant and have not settled yet
payee_receivable:<payee id>  asset: what a payee owes us (a refund after its money was settled), recovered from
                             its next settlement
payout_due:<payee id>        liability: settled and not yet paid out
payout_bank                  asset: our bank account, from which settlements are paid out
channel_payouts:<channel>    asset contra: what left our balance at the channel by transfer to payees (decision
                             0021); with channel_clearing it states what the channel holds for us. Kept apart
                             from clearing because clearing is compared with the channel's trade bills, which
                             list payments and refunds, never transfers
platform_fees                revenue: the platform's fee per purpose (decision 0019: the platform pays the
                             channels' fees out of it)
rider_receivable:<resident>  asset: fares a rider owes (transit debts)
transit_uncollected:<payee>  liability contra: fares an operator is owed that no rider has paid yet

Every entry has a `value_at`: when the money moved at the channel. Clearing is compared with each channel's bill
by that business day (check_bills).
"""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection
from payments.ledger.repository import LedgerRepository

# How long an entry may wait after a settlement that could have taken it before the check calls it skipped: a
# payment committed while a settlement ran is taken by the next one, not that one.
SETTLEMENT_GRACE = dt.timedelta(minutes=10)
# Money owed back to a rider should leave within a day (the money-back job runs every few minutes).
MONEY_BACK_GRACE = dt.timedelta(hours=24)


def channel_fee(amount_fen: int, rate_ppm: int | None) -> int:
    """What a channel keeps of an amount at its rate (parts per million: 0.6% is 6000), rounded half up to the
    fen; negative for a negative amount (the fee a refund gives back). 0 for a channel without a rate."""
    if not rate_ppm:
        return 0
    whole, rest = divmod(abs(amount_fen) * rate_ppm, 1_000_000)
    fee = whole + (1 if 2 * rest >= 1_000_000 else 0)
    return fee if amount_fen >= 0 else -fee


class Share(msgspec.Struct, frozen=True):
    """A payee's part of an amount (a split order's share, or what a refund takes back from it) and the platform
    fee on that part."""

    payee_id: uuid.UUID
    amount_fen: int
    fee_fen: int


def split_order(
    payee_id: uuid.UUID, amount_fen: int, fee_bp: int, splits: list[tuple[uuid.UUID, int]]
) -> list[Share]:
    """The shares of an order: each split its amount and the platform fee on it (rounded down), the order's own
    payee what the splits leave and the rest of the order's fee, so the shares add up to the order exactly."""
    others = [Share(p, a, a * fee_bp // 10_000) for p, a in splits]
    rest = amount_fen - sum(s.amount_fen for s in others)
    fee = amount_fen * fee_bp // 10_000 - sum(s.fee_fen for s in others)
    return [Share(payee_id, rest, fee), *others]


def take_back(shares: list[Share], order_fen: int, before_fen: int, refund_fen: int) -> list[Share]:
    """What a refund of `refund_fen`, after `before_fen` refunded earlier, takes back from each share (and the
    platform fee on it): each in proportion to its size, cumulatively rounded down, so a full refund takes back
    every share exactly; the first share (the order's own payee) takes the rounding."""
    after_fen = before_fen + refund_fen

    def part(whole: int) -> int:
        return whole * after_fen // order_fen - whole * before_fen // order_fen

    others = [Share(s.payee_id, part(s.amount_fen), part(s.fee_fen)) for s in shares[1:]]
    first = shares[0]
    order_fee = sum(s.fee_fen for s in shares)
    return [
        Share(
            first.payee_id,
            refund_fen - sum(s.amount_fen for s in others),
            part(order_fee) - sum(s.fee_fen for s in others),
        ),
        *others,
    ]


class ChannelDay(msgspec.Struct, frozen=True):
    """One channel's business day: what our clearing account moved by, against what its bill says it holds."""

    channel: str
    day: dt.date
    ledger_fen: int
    bill_fen: int

    @property
    def differs(self) -> bool:
        return self.ledger_fen != self.bill_fen


class LedgerCheck(msgspec.Struct):
    ok: bool
    unbalanced_entries: list[str]
    drifted_balances: list[str]
    negative_payables: list[str]
    # Days whose final bill (reconciled after the day ended) disagrees with clearing.
    channel_days: list[str] = msgspec.field(default_factory=list)
    # Days compared and found equal, for the report.
    channel_days_checked: int = 0
    # Money movements of a payee that a settlement made after them skipped.
    unsettled: list[str] = msgspec.field(default_factory=list)
    # Settlements whose payout or carried debt disagrees with their own entries.
    settlements: list[str] = msgspec.field(default_factory=list)
    # Money owed back to riders for a day and more.
    money_back: list[str] = msgspec.field(default_factory=list)
    # Channel transfers (payouts) where the ledger and what the channel says disagree.
    payouts: list[str] = msgspec.field(default_factory=list)


def business_day(at: dt.datetime) -> dt.date:
    return at.astimezone(BUSINESS_TZ).date()


class Ledger:
    def __init__(self) -> None:
        self._repo = LedgerRepository()

    async def post(
        self,
        conn: Connection,
        ref: str,
        kind: str,
        postings: list[tuple[str, int]],
        memo: str = "",
        value_at: dt.datetime | None = None,
    ) -> bool:
        """Posts once per `ref` (False when it was posted before). Postings must balance. `value_at` is when the
        money moved at the channel (now when not given)."""
        postings = [(account, amount) for account, amount in postings if amount != 0]
        if sum(amount for _, amount in postings) != 0 or len(postings) < 2:
            raise ValueError(f"ledger entry {ref} does not balance: {postings}")
        merged: dict[str, int] = {}
        for account, amount in postings:
            merged[account] = merged.get(account, 0) + amount
        entry_id = await self._repo.add_entry(conn, ref, kind, memo, value_at)
        if entry_id is None:
            return False
        await self._repo.add_postings(conn, entry_id, [(a, v) for a, v in merged.items() if v != 0])
        return True

    async def carry_payee_debt(self, conn: Connection, payee_id: uuid.UUID, ref: str) -> int:
        """After an entry that took money back from a payee (a refund): what its payable no longer covers (its
        money was settled already) becomes its debt to us, recovered from its next settlement. Called in the
        entry's transaction. The balance is in shards (migration 0016): a lock on the payable until the commit
        makes a concurrent refund's carry wait and then read this one's posting, so debts are carried once.
        Returns the debt carried (0 when the payable covered it)."""
        await self._repo.lock_account(conn, f"payee_payable:{payee_id}")
        over = await self._repo.balance(conn, f"payee_payable:{payee_id}")
        if over <= 0:
            return 0
        await self.post(
            conn,
            f"payee_debt:{ref}",
            "payee_debt",
            [(f"payee_payable:{payee_id}", -over), (f"payee_receivable:{payee_id}", over)],
            memo=ref,
        )
        return over

    async def balance(self, conn: Connection, account: str) -> int:
        return await self._repo.balance(conn, account)

    async def entry_id(self, conn: Connection, ref: str) -> int | None:
        return await self._repo.entry_id(conn, ref)

    async def check(self, conn: Connection, *, against_bills: bool = False) -> LedgerCheck:
        """The ledger's own invariants; with `against_bills`, also each channel's final bills (what `tzt ledger
        check` runs): per channel and business day, clearing moved by what the bill says the channel holds."""
        unbalanced = [
            f"entry {r.id} ({r.ref}) sums to {r.total} over {r.postings} postings"
            for r in await self._repo.unbalanced_entries(conn)
        ]
        drifted = [
            f"{r.account}: stored {r.stored}, postings {r.computed}"
            for r in await self._repo.drifted_balances(conn)
        ]
        negative = [
            f"{r.account}: {r.balance_fen}"
            + (
                " (owed by the payee: should have been carried to its receivable)"
                if "payable" in r.account
                else ""
            )
            for r in await self._repo.wrong_side_balances(conn)
        ]
        unsettled = [
            f"entry {r.entry_id} ({r.ref}) of payee {r.payee_id} at {r.at.isoformat()} was skipped by settlement "
            f"{r.settlement_id} (cutoff {r.cutoff.isoformat()})"
            for r in await self._repo.skipped_by_settlement(conn, SETTLEMENT_GRACE)
        ]
        settlements = [
            f"settlement {r.id} of payee {r.payee_id} ({r.day} #{r.seq}): {r.problem}"
            for r in await self._repo.settlements_disagreeing(conn)
        ]
        money_back = [
            f"{r.amount_fen} fen of order {r.order_id} owed back to a rider since {r.created_at.isoformat()} "
            f"({r.status})"
            for r in await self._repo.money_back_overdue(conn, MONEY_BACK_GRACE)
        ]
        payouts = [
            f"{r.ref} ({r.channel} transfer {r.out_biz_no}, {r.amount_fen} fen): {r.problem}"
            for r in await self._repo.payouts_disagreeing(conn)
        ]
        days: list[ChannelDay] = await self.channel_days(conn) if against_bills else []
        differing = [
            f"{d.channel} {d.day}: clearing moved {d.ledger_fen} fen, the bill says {d.bill_fen} fen "
            f"(off by {d.ledger_fen - d.bill_fen}; see that day's reconciliation differences)"
            for d in days
            if d.differs
        ]
        return LedgerCheck(
            ok=not (
                unbalanced
                or drifted
                or negative
                or differing
                or unsettled
                or settlements
                or money_back
                or payouts
            ),
            unbalanced_entries=unbalanced,
            drifted_balances=drifted,
            negative_payables=negative,
            channel_days=differing,
            channel_days_checked=len(days),
            unsettled=unsettled,
            settlements=settlements,
            money_back=money_back,
            payouts=payouts,
        )

    async def channel_days(self, conn: Connection) -> list[ChannelDay]:
        """Every channel day with a final bill (reconciled after the day ended): clearing by value day against
        the bill. A bill fetched during its day is a snapshot, not a statement, and is not compared."""
        return [
            ChannelDay(channel=r.channel, day=r.day, ledger_fen=r.ledger_fen, bill_fen=r.bill_fen)
            for r in await self._repo.clearing_against_bills(conn)
        ]
