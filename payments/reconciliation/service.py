"""Daily reconciliation: every line of each channel's bill for a business day (Asia/Shanghai) matched to our orders
paid and refunds succeeded that day, and every difference classified.

Payments are matched by out_trade_no, refunds by out_refund_no. For a pair, the statuses, the amounts (the
channel's against ours: over or short) and the fee (the bill's against the fee the channel's rate gives on our
amount, rounded half up; a refund gives back the fee of its amount) are compared. An item only one side has is
missing at the channel or missing at the platform; a bill line for an order or refund we hold in another state
(say, an order still waiting) is a status mismatch.

Items near midnight are not reported at once: an item one side has in the last `midnight_window_s` of the day and
the other side does not have that day goes to a scratch pool (the other side may record it just after midnight).
The next day's run looks for it on the other side: found, the pair is compared there (crossed midnight); not
found, it is escalated as a difference on the next day's report. Run the days in order: the pool of day D is
settled by the run of D+1.

Re-running a day replaces its report and first undoes what the earlier run did to the pool, so it is idempotent.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import structlog

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection, Pool
from payments.channels.base import BillLine, PaymentChannel
from payments.ledger.service import Ledger, channel_fee
from payments.reconciliation.repository import (
    DifferenceRow,
    NewPoolItem,
    NewRun,
    OrderStateRow,
    PoolRow,
    ReconciliationRepository,
    RefundStateRow,
)
from payments.reconciliation.schemas import (
    ChannelReport,
    Difference,
    DifferenceClass,
    Item,
    PoolItem,
    ReconciliationReport,
)
from payments.settings import PaymentSettings

_log = structlog.get_logger("payments.reconciliation")

# Our statuses as a bill states them: a finished order was paid.
_PAYMENT_STATUS = {"paid": "paid", "finished": "paid"}
_MONEY_MOVED = {"payment": "paid", "refund": "succeeded"}


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), BUSINESS_TZ)
    return start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), BUSINESS_TZ)


def expected_fee(amount_fen: int, rate_ppm: int) -> int:
    """amount × rate, rounded half up to the fen (rate in parts per million: 0.6% is 6000)."""
    return channel_fee(amount_fen, rate_ppm)


def bill_held(lines: list[BillLine]) -> int:
    """What a day's bill says the channel holds for us from that day: payments less the fees it kept, less
    refunds plus the fees it gave back (a refund line's fee is negative). Lines of money that did not move (a
    revoked payment, a failed refund) hold nothing."""
    held = 0
    for line in lines:
        if line.status != _MONEY_MOVED.get(line.kind):
            continue
        held += line.amount_fen - line.fee_fen if line.kind == "payment" else -line.amount_fen - line.fee_fen
    return held


def fee_rule(rate_ppm: int | None) -> str:
    if rate_ppm is None:
        return "no fee rate configured for this channel: fees not checked"
    return (
        f"expected fee = amount x {rate_ppm / 10_000:g}% rounded half up to the fen; a refund gives back the "
        "same rate of its amount; compared where both sides agree on the status"
    )


def _when(at: dt.datetime | None) -> str:
    return at.astimezone(BUSINESS_TZ).strftime("%Y-%m-%d %H:%M:%S") if at else "no time"


def _bill_item(line: BillLine) -> Item:
    return Item(
        kind=line.kind,
        out_trade_no=line.out_trade_no,
        out_refund_no=line.out_refund_no if line.kind == "refund" else None,
        amount_fen=line.amount_fen,
        status=line.status,
        at=line.at,
        fee_fen=line.fee_fen,
        channel_trade_no=line.channel_trade_no or None,
    )


def _difference(
    klass: DifferenceClass,
    ours: Item | None,
    theirs: Item | None,
    note: str = "",
    expected: int | None = None,
) -> Difference:
    some = ours or theirs
    assert some is not None
    return Difference(
        klass=klass,
        kind=some.kind,
        out_trade_no=some.out_trade_no,
        out_refund_no=some.out_refund_no,
        ours_amount_fen=ours.amount_fen if ours else None,
        theirs_amount_fen=theirs.amount_fen if theirs else None,
        ours_status=ours.status if ours else None,
        theirs_status=theirs.status if theirs else None,
        expected_fee_fen=expected,
        theirs_fee_fen=theirs.fee_fen if theirs else None,
        note=note,
    )


def compare(ours: Item, theirs: Item, rate_ppm: int | None, note: str = "") -> list[Difference]:
    """The differences of one pair; none when it matches."""
    found: list[Difference] = []
    if ours.status != theirs.status:
        found.append(_difference("status_mismatch", ours, theirs, note))
    if theirs.amount_fen > ours.amount_fen:
        found.append(_difference("amount_over", ours, theirs, note))
    elif theirs.amount_fen < ours.amount_fen:
        found.append(_difference("amount_short", ours, theirs, note))
    if rate_ppm is not None and ours.status == theirs.status and theirs.fee_fen is not None:
        expected = expected_fee(ours.amount_fen if ours.kind == "payment" else -ours.amount_fen, rate_ppm)
        if theirs.fee_fen != expected:
            fee_note = f"{ours.amount_fen} fen at the channel's rate is {expected} fen"
            found.append(
                _difference(
                    "fee_mismatch", ours, theirs, f"{fee_note}; {note}" if note else fee_note, expected
                )
            )
    return found


@dataclass
class Matching:
    """What matching one day's two sides (and the pool carried from the day before) gives."""

    differences: list[Difference] = field(default_factory=list)
    matched: int = 0
    pooled: list[tuple[str, Item]] = field(default_factory=list)  # (side, item)
    resolved: list[PoolItem] = field(default_factory=list)
    escalated: list[PoolItem] = field(default_factory=list)
    # Bill lines without a counterpart among ours of the day: classified after looking our records up.
    unknown: list[tuple[Item, str]] = field(default_factory=list)


def match(
    day: dt.date,
    ours: list[Item],
    theirs: list[Item],
    carried: list[PoolItem],
    rate_ppm: int | None,
    window: dt.timedelta,
) -> Matching:
    """Pure: pairs same-day items, settles the pool carried from the day before, pools what crossed midnight."""
    result = Matching()
    ours_by: dict[tuple[str, str], Item] = {}
    for item in ours:
        ours_by[item.key] = item
    theirs_by: dict[tuple[str, str], Item] = {}
    for line in theirs:
        if line.key in theirs_by:
            result.differences.append(
                _difference("missing_at_platform", None, line, "the bill lists this item more than once")
            )
            continue
        theirs_by[line.key] = line

    for key in [k for k in ours_by if k in theirs_by]:
        found = compare(ours_by.pop(key), theirs_by.pop(key), rate_ppm)
        result.differences += found
        result.matched += not found

    for pooled in carried:
        if pooled.side == "ours":
            billed = theirs_by.pop(pooled.key, None)
            if billed is None:
                note = (
                    f"ours {_when(pooled.at)}, pooled on {pooled.origin_day}: in neither the "
                    f"{pooled.origin_day} nor the {day} bill"
                )
                result.differences.append(_difference("missing_at_channel", pooled.item(), None, note))
                result.escalated.append(pooled)
                continue
            note = f"crossed midnight: ours {_when(pooled.at)}, billed {_when(billed.at)}"
            found = compare(pooled.item(), billed, rate_ppm, note)
        else:
            recorded = ours_by.pop(pooled.key, None)
            if recorded is None:
                note = (
                    f"billed {_when(pooled.at)}, pooled on {pooled.origin_day}: not among our records of "
                    f"{pooled.origin_day} nor {day}"
                )
                result.unknown.append((pooled.item(), note))
                result.escalated.append(pooled)
                continue
            note = f"crossed midnight: billed {_when(pooled.at)}, ours {_when(recorded.at)}"
            found = compare(recorded, pooled.item(), rate_ppm, note)
        result.resolved.append(pooled)
        result.differences += found
        result.matched += not found

    end = day_bounds(day)[1]
    for item in ours_by.values():
        if item.at is not None and item.at >= end - window:
            result.pooled.append(("ours", item))
        else:
            result.differences.append(_difference("missing_at_channel", item, None))
    for line in theirs_by.values():
        if line.at is not None and line.at >= end - window:
            result.pooled.append(("theirs", line))
        else:
            result.unknown.append((line, ""))
    return result


def classify_unknown(
    line: Item, note: str, ours: Item | None, ours_day: dt.date | None, rate_ppm: int | None
) -> list[Difference]:
    """A bill line without a counterpart among our records of the day. `ours` is our record of the same payment
    or refund on any day (None when we have none for this channel)."""
    if ours is None:
        return [_difference("missing_at_platform", None, line, note)]
    if ours.status == _MONEY_MOVED[ours.kind]:  # we have it, on another day
        where = f"ours records it on {ours_day}" if ours_day else "ours records it on another day"
        return [_difference("missing_at_platform", ours, line, f"{note}; {where}" if note else where)]
    return compare(ours, line, rate_ppm, note)


class ReconciliationService:
    def __init__(
        self,
        pool: Pool,
        channels: dict[str, PaymentChannel],
        settings: PaymentSettings | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._pool = pool
        self._ledger = ledger or Ledger()
        self._channels = channels  # the same dict the other services use: whatever is configured at run time
        self._settings = settings or PaymentSettings()
        self._repo = ReconciliationRepository()

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(seconds=self._settings.reconcile_midnight_window_s)

    def rate_ppm(self, channel: str) -> int | None:
        return self._settings.channel_fee_ppm.get(channel)

    async def run(self, day: dt.date, channels: list[str] | None = None) -> ReconciliationReport:
        """Reconciles the day for each configured channel (or the named ones) and returns the stored report."""
        for name in sorted(channels if channels is not None else self._channels):
            await self.run_channel(day, name)
        async with self._pool.acquire() as conn:
            return await self.report(conn, day)

    async def run_channel(self, day: dt.date, name: str) -> None:
        started = dt.datetime.now(dt.UTC)
        rate = self.rate_ppm(name)
        channel = self._channels.get(name)
        try:
            if channel is None:
                raise LookupError(f"no channel {name!r} is configured")
            lines = await channel.download_bill(day)
        except Exception as exc:  # one channel's failure is reported; the others still run
            _log.warning("bill download failed", channel=name, day=str(day), error=repr(exc))
            async with self._pool.acquire() as conn, conn.transaction():
                await self._repo.lock(conn, day, name)
                failed = NewRun(
                    day, name, "failed", fee_rule(rate), started, error=f"{type(exc).__name__}: {exc}"
                )
                await self._repo.replace_run(conn, failed, [])
            return
        theirs = [_bill_item(line) for line in lines]
        start, end = day_bounds(day)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._repo.lock(conn, day, name)
            await self._repo.reopen_pool(conn, name, day)
            ours = [
                Item(
                    "payment",
                    r.out_trade_no,
                    None,
                    r.amount_fen,
                    _PAYMENT_STATUS[r.status],
                    r.paid_at,
                )
                for r in await self._repo.paid_orders(conn, name, start, end)
            ] + [
                Item("refund", r.out_trade_no, r.out_refund_no, r.amount_fen, r.status, r.at)
                for r in await self._repo.succeeded_refunds(conn, name, start, end)
            ]
            carried = [
                _pool_item(r) for r in await self._repo.pool_pending(conn, name, day - dt.timedelta(days=1))
            ]
            result = match(day, ours, theirs, carried, rate, self.window)
            differences = result.differences + await self._classify(conn, name, result.unknown, rate)
            differences.sort(key=lambda d: (d.kind, d.out_trade_no, d.out_refund_no or "", d.klass))
            origin = day - dt.timedelta(days=1)
            await self._repo.pool_settle(
                conn, name, origin, [p.key for p in result.resolved], "resolved", day
            )
            await self._repo.pool_settle(
                conn, name, origin, [p.key for p in result.escalated], "escalated", day
            )
            await self._repo.pool_add(conn, [_pooled(name, day, side, item) for side, item in result.pooled])
            await self._true_up_fees(conn, name, lines)
            run = NewRun(
                day,
                name,
                "differences" if differences else "balanced",
                fee_rule(rate),
                started,
                bill_lines=len(theirs),
                our_items=len(ours),
                matched=result.matched,
                differences=len(differences),
                pooled=len(result.pooled),
                resolved=len(result.resolved),
                escalated=len(result.escalated),
                bill_held_fen=bill_held(lines),
            )
            await self._repo.replace_run(conn, run, differences)
        _log.info(
            "reconciled", channel=name, day=str(day), differences=len(differences), pooled=len(result.pooled)
        )

    async def _true_up_fees(self, conn: Connection, channel: str, lines: list[BillLine]) -> None:
        """The ledger books a channel's fee at its rate when the money moves; the bill says what it kept. Where
        they differ for a payment or refund both sides agree on (same amount, money moved), the difference is
        posted (clearing against channel fees, on the item's own value day) and the booked fee updated, so
        clearing states what the channel holds. The difference is still reported (fee_mismatch)."""
        moved = [line for line in lines if line.status == _MONEY_MOVED.get(line.kind)]
        if not moved:
            return
        booked = await self._repo.booked_fees(
            conn,
            channel,
            [line.out_trade_no for line in moved if line.kind == "payment"],
            [line.out_refund_no for line in moved if line.kind == "refund" and line.out_refund_no],
        )
        ours = {(b.kind, b.key): b for b in booked}
        for line in moved:
            key = line.out_trade_no if line.kind == "payment" else line.out_refund_no or ""
            mine = ours.get((line.kind, key))
            if mine is None or mine.amount_fen != line.amount_fen or mine.status != line.status:
                continue
            billed = line.fee_fen if line.kind == "payment" else -line.fee_fen  # kept, or given back
            if billed == mine.fee_fen:
                continue
            kept_more = billed - mine.fee_fen if line.kind == "payment" else mine.fee_fen - billed
            await self._ledger.post(
                conn,
                f"channel_fee:{line.kind}:{mine.id}:{billed}",
                "channel_fee",
                [(f"channel_clearing:{channel}", -kept_more), (f"channel_fees:{channel}", kept_more)],
                memo=f"the {line.day} bill: {billed} fen, booked {mine.fee_fen}",
                value_at=mine.at,
            )
            await self._repo.set_booked_fee(conn, line.kind, mine.id, billed)
            _log.info("channel fee trued up", channel=channel, kind=line.kind, key=key, fen=kept_more)

    async def _classify(
        self, conn: Connection, channel: str, unknown: list[tuple[Item, str]], rate: int | None
    ) -> list[Difference]:
        if not unknown:
            return []
        orders: dict[str, OrderStateRow] = {
            r.out_trade_no: r
            for r in await self._repo.orders_by_out_trade_no(
                conn, [line.out_trade_no for line, _ in unknown if line.kind == "payment"]
            )
        }
        refunds: dict[str, RefundStateRow] = {
            r.out_refund_no: r
            for r in await self._repo.refunds_by_out_refund_no(
                conn,
                [line.out_refund_no for line, _ in unknown if line.kind == "refund" and line.out_refund_no],
            )
        }
        found: list[Difference] = []
        for line, note in unknown:
            ours: Item | None = None
            at: dt.datetime | None = None
            if line.kind == "payment":
                order = orders.get(line.out_trade_no)
                if order is not None and order.channel == channel:
                    at = order.paid_at
                    status = _PAYMENT_STATUS.get(order.status, order.status)
                    ours = Item("payment", order.out_trade_no, None, order.amount_fen, status, at)
            else:
                refund = refunds.get(line.out_refund_no or "")
                if refund is not None and refund.channel == channel:
                    at = refund.updated_at if refund.status == "succeeded" else None
                    ours = Item(
                        "refund",
                        refund.out_trade_no,
                        refund.out_refund_no,
                        refund.amount_fen,
                        refund.status,
                        at,
                    )
            day = at.astimezone(BUSINESS_TZ).date() if at else None
            found += classify_unknown(line, note, ours, day, rate)
        return found

    async def report(self, conn: Connection, day: dt.date) -> ReconciliationReport:
        runs = await self._repo.runs_for_day(conn, day)
        differences: dict[uuid.UUID, list[Difference]] = {r.id: [] for r in runs}
        for row in await self._repo.differences_of(conn, list(differences)):
            differences[row.run_id].append(_stored_difference(row))
        pool_rows = await self._repo.pool_for_day(conn, day)
        channels = []
        for r in runs:
            mine = [row for row in pool_rows if row.channel == r.channel]
            channels.append(
                ChannelReport(
                    run_id=r.id,
                    day=r.day,
                    channel=r.channel,
                    status=r.status,
                    bill_lines=r.bill_lines,
                    our_items=r.our_items,
                    matched=r.matched,
                    difference_count=r.differences,
                    pooled=r.pooled,
                    resolved=r.resolved,
                    escalated=r.escalated,
                    fee_rule=r.fee_rule,
                    error=r.error,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    differences=differences[r.id],
                    pool=[_pool_item(row) for row in mine if row.origin_day == day],
                    carried=[_pool_item(row) for row in mine if row.settled_day == day],
                )
            )
        return ReconciliationReport(day=day, timezone=str(BUSINESS_TZ), channels=channels)


def _stored_difference(row: DifferenceRow) -> Difference:
    return Difference(
        klass=row.klass,
        kind=row.kind,
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        ours_amount_fen=row.ours_amount_fen,
        theirs_amount_fen=row.theirs_amount_fen,
        ours_status=row.ours_status,
        theirs_status=row.theirs_status,
        expected_fee_fen=row.expected_fee_fen,
        theirs_fee_fen=row.theirs_fee_fen,
        note=row.note,
    )


def _pooled(channel: str, day: dt.date, side: str, item: Item) -> NewPoolItem:
    kind, key = item.key
    return NewPoolItem(
        channel=channel,
        kind=kind,
        item_key=key,
        origin_day=day,
        side=side,
        out_trade_no=item.out_trade_no,
        out_refund_no=item.out_refund_no,
        amount_fen=item.amount_fen,
        fee_fen=item.fee_fen,
        status=item.status,
        at=item.at,
    )


def _pool_item(row: PoolRow) -> PoolItem:
    return PoolItem(
        side=row.side,
        kind=row.kind,
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        amount_fen=row.amount_fen,
        status=row.status,
        at=row.at,
        fee_fen=row.fee_fen,
        origin_day=row.origin_day,
        state=row.state,
        settled_day=row.settled_day,
    )


def _amount(fen: int | None) -> str:
    return "-" if fen is None else f"{fen}"


def render_text(report: ReconciliationReport) -> str:
    """The report as `tzt reconcile` prints it."""
    out = [f"Reconciliation of {report.day} ({report.timezone})"]
    if not report.channels:
        out.append("  no channel reconciled")
    for c in report.channels:
        out.append(
            f"{c.channel}: {c.status} - bill lines {c.bill_lines}, ours {c.our_items}, matched {c.matched}, "
            f"differences {c.difference_count}, pooled {c.pooled}, resolved {c.resolved}, escalated {c.escalated}"
        )
        if c.error:
            out.append(f"  error: {c.error}")
        out.append(f"  fees: {c.fee_rule}")
        for d in c.differences:
            ref = d.out_trade_no + (f" / {d.out_refund_no}" if d.out_refund_no else "")
            out.append(
                f"  {d.klass:<19} {d.kind:<7} {ref}  ours {_amount(d.ours_amount_fen)} {d.ours_status or '-'}"
                f"  theirs {_amount(d.theirs_amount_fen)} {d.theirs_status or '-'}"
                + (
                    f"  fee expected {d.expected_fee_fen} billed {d.theirs_fee_fen}"
                    if d.klass == "fee_mismatch"
                    else ""
                )
                + (f"  ({d.note})" if d.note else "")
            )
        for p in c.pool:
            ref = p.out_trade_no + (f" / {p.out_refund_no}" if p.out_refund_no else "")
            out.append(
                f"  pooled ({p.side} only, {_when(p.at)}): {p.kind} {ref} {p.amount_fen} fen, {p.state}"
            )
        for p in c.carried:
            ref = p.out_trade_no + (f" / {p.out_refund_no}" if p.out_refund_no else "")
            out.append(
                f"  from the pool of {p.origin_day} ({p.side} only, {_when(p.at)}): {p.kind} {ref} "
                f"{p.amount_fen} fen, {p.state}"
            )
    return "\n".join(out)
