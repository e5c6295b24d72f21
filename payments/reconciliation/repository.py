"""All SQL for reconciliation: our side of a day, the stored runs and differences, the scratch pool."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_rows
from payments.reconciliation.schemas import Difference, DifferenceClass

RUN_COLUMNS = """id, day, channel, status, bill_lines, our_items, matched, differences, pooled, resolved, escalated,
                 fee_rule, error, started_at, finished_at"""
DIFFERENCE_COLUMNS = """run_id, class, kind, out_trade_no, out_refund_no, ours_amount_fen, theirs_amount_fen,
                        ours_status, theirs_status, expected_fee_fen, theirs_fee_fen, note"""
# The same columns as DifferenceRow reads them: `class` is a Python keyword.
DIFFERENCE_FIELDS = """run_id, class AS klass, kind, out_trade_no, out_refund_no, ours_amount_fen, theirs_amount_fen,
                       ours_status, theirs_status, expected_fee_fen, theirs_fee_fen, note"""
POOL_COLUMNS = """channel, kind, item_key, origin_day, side, out_trade_no, out_refund_no, amount_fen, fee_fen, status,
                  at, state, settled_day"""
_LOCK_CLASS = 0x7265636F  # "reco": a key space of its own (two-key advisory locks never meet one-key ones)


class PaidOrderRow(msgspec.Struct, frozen=True):
    out_trade_no: str
    amount_fen: int
    status: str  # paid | finished
    paid_at: dt.datetime
    channel_trade_no: str | None


class SucceededRefundRow(msgspec.Struct, frozen=True):
    out_refund_no: str
    amount_fen: int
    status: str
    at: dt.datetime  # when it left pending
    out_trade_no: str


class OrderStateRow(msgspec.Struct, frozen=True):
    out_trade_no: str
    channel: str
    amount_fen: int
    status: str
    paid_at: dt.datetime | None


class RefundStateRow(msgspec.Struct, frozen=True):
    out_refund_no: str
    amount_fen: int
    status: str
    updated_at: dt.datetime
    out_trade_no: str
    channel: str


class NewPoolItem(msgspec.Struct, frozen=True):
    """An item a run puts in the scratch pool (the columns of POOL_COLUMNS a run sets)."""

    channel: str
    kind: str
    item_key: str
    origin_day: dt.date
    side: str
    out_trade_no: str
    out_refund_no: str | None
    amount_fen: int
    fee_fen: int | None
    status: str
    at: dt.datetime | None


class PoolRow(NewPoolItem, frozen=True):
    """POOL_COLUMNS: an item in the scratch pool, and what became of it."""

    state: str
    settled_day: dt.date | None


class NewRun(msgspec.Struct, frozen=True):
    """A run as stored (RUN_COLUMNS without its id and finished_at)."""

    day: dt.date
    channel: str
    status: str  # balanced | differences | failed
    fee_rule: str
    started_at: dt.datetime
    error: str | None = None
    bill_lines: int = 0
    our_items: int = 0
    matched: int = 0
    differences: int = 0
    pooled: int = 0
    resolved: int = 0
    escalated: int = 0
    bill_held_fen: int | None = None


class BookedFeeRow(msgspec.Struct, frozen=True):
    """A payment (kind payment, key out_trade_no) or refund (kind refund, key out_refund_no) of ours with the
    channel fee booked for it (kept, or given back), in the bill's vocabulary of status."""

    kind: str
    key: str
    id: uuid.UUID
    amount_fen: int
    status: str
    fee_fen: int
    at: dt.datetime | None


class RunRow(msgspec.Struct, frozen=True):
    """RUN_COLUMNS."""

    id: uuid.UUID
    day: dt.date
    channel: str
    status: str
    bill_lines: int
    our_items: int
    matched: int
    differences: int
    pooled: int
    resolved: int
    escalated: int
    fee_rule: str
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime


class DifferenceRow(msgspec.Struct, frozen=True):
    """DIFFERENCE_FIELDS."""

    run_id: uuid.UUID
    klass: DifferenceClass
    kind: str
    out_trade_no: str
    out_refund_no: str | None
    ours_amount_fen: int | None
    theirs_amount_fen: int | None
    ours_status: str | None
    theirs_status: str | None
    expected_fee_fen: int | None
    theirs_fee_fen: int | None
    note: str


class ReconciliationRepository:
    async def lock(self, conn: Connection, day: dt.date, channel: str) -> None:
        """One run per (day, channel) at a time; released at the end of the transaction."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, f"{channel}:{day.isoformat()}"
        )

    # -- our side -------------------------------------------------------------------------------------------------

    async def paid_orders(
        self, conn: Connection, channel: str, start: dt.datetime, end: dt.datetime
    ) -> list[PaidOrderRow]:
        return await fetch_rows(
            conn,
            PaidOrderRow,
            """SELECT out_trade_no, amount_fen, status, paid_at, channel_trade_no FROM payments.orders
               WHERE channel = $1 AND paid_at >= $2 AND paid_at < $3 AND status IN ('paid', 'finished')
               ORDER BY paid_at, out_trade_no""",
            channel,
            start,
            end,
        )

    async def succeeded_refunds(
        self, conn: Connection, channel: str, start: dt.datetime, end: dt.datetime
    ) -> list[SucceededRefundRow]:
        """A refund's updated_at is when it left pending (settle is the only update of a refund row)."""
        return await fetch_rows(
            conn,
            SucceededRefundRow,
            """SELECT r.out_refund_no, r.amount_fen, r.status, r.updated_at AS at, o.out_trade_no
               FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id
               WHERE o.channel = $1 AND r.status = 'succeeded' AND r.updated_at >= $2 AND r.updated_at < $3
               ORDER BY r.updated_at, r.out_refund_no""",
            channel,
            start,
            end,
        )

    async def orders_by_out_trade_no(self, conn: Connection, out_trade_nos: list[str]) -> list[OrderStateRow]:
        return await fetch_rows(
            conn,
            OrderStateRow,
            """SELECT out_trade_no, channel, amount_fen, status, paid_at FROM payments.orders
               WHERE out_trade_no = ANY($1::text[])""",
            out_trade_nos,
        )

    async def refunds_by_out_refund_no(
        self, conn: Connection, out_refund_nos: list[str]
    ) -> list[RefundStateRow]:
        return await fetch_rows(
            conn,
            RefundStateRow,
            """SELECT r.out_refund_no, r.amount_fen, r.status, r.updated_at, o.out_trade_no, o.channel
               FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id
               WHERE r.out_refund_no = ANY($1::text[])""",
            out_refund_nos,
        )

    async def booked_fees(
        self, conn: Connection, channel: str, out_trade_nos: list[str], out_refund_nos: list[str]
    ) -> list[BookedFeeRow]:
        return await fetch_rows(
            conn,
            BookedFeeRow,
            """SELECT 'payment' AS kind, out_trade_no AS key, id, amount_fen,
                      CASE WHEN status IN ('paid', 'finished') THEN 'paid' ELSE status END AS status,
                      channel_fee_fen AS fee_fen, paid_at AS at
               FROM payments.orders WHERE channel = $1 AND out_trade_no = ANY($2::text[])
               UNION ALL
               SELECT 'refund', r.out_refund_no, r.id, r.amount_fen, r.status, r.channel_fee_back_fen, r.updated_at
               FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id
               WHERE o.channel = $1 AND r.out_refund_no = ANY($3::text[])""",
            channel,
            out_trade_nos,
            out_refund_nos,
        )

    async def set_booked_fee(self, conn: Connection, kind: str, item_id: uuid.UUID, fee_fen: int) -> None:
        if kind == "payment":
            await conn.execute(
                "UPDATE payments.orders SET channel_fee_fen = $2 WHERE id = $1", item_id, fee_fen
            )
        else:
            await conn.execute(
                "UPDATE payments.refunds SET channel_fee_back_fen = $2 WHERE id = $1", item_id, fee_fen
            )

    # -- the scratch pool -------------------------------------------------------------------------------------------

    async def reopen_pool(self, conn: Connection, channel: str, day: dt.date) -> None:
        """Undoes what an earlier run of this day did to the pool, so a re-run starts from the same place:
        items it settled are pending again, items it pooled that nobody settled yet are gone."""
        await conn.execute(
            """UPDATE payments.reconciliation_pool SET state = 'pending', settled_day = NULL
               WHERE channel = $1 AND settled_day = $2""",
            channel,
            day,
        )
        await conn.execute(
            """DELETE FROM payments.reconciliation_pool
               WHERE channel = $1 AND origin_day = $2 AND state = 'pending'""",
            channel,
            day,
        )

    async def pool_pending(self, conn: Connection, channel: str, origin_day: dt.date) -> list[PoolRow]:
        return await fetch_rows(
            conn,
            PoolRow,
            f"""SELECT {POOL_COLUMNS} FROM payments.reconciliation_pool
                WHERE channel = $1 AND origin_day = $2 AND state = 'pending' ORDER BY kind, item_key""",
            channel,
            origin_day,
        )

    async def pool_add(self, conn: Connection, items: list[NewPoolItem]) -> None:
        """An item a later day's run has already settled keeps its settlement."""
        await conn.executemany(
            """INSERT INTO payments.reconciliation_pool (channel, kind, item_key, origin_day, side, out_trade_no,
                                                          out_refund_no, amount_fen, fee_fen, status, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING""",
            [msgspec.structs.astuple(item) for item in items],
        )

    async def pool_settle(
        self,
        conn: Connection,
        channel: str,
        origin_day: dt.date,
        keys: list[tuple[str, str]],
        state: str,
        day: dt.date,
    ) -> None:
        await conn.executemany(
            """UPDATE payments.reconciliation_pool SET state = $5, settled_day = $6
               WHERE channel = $1 AND origin_day = $2 AND kind = $3 AND item_key = $4""",
            [(channel, origin_day, kind, key, state, day) for kind, key in keys],
        )

    async def pool_for_day(self, conn: Connection, day: dt.date) -> list[PoolRow]:
        """Items pooled by the day's runs and items the day's runs settled."""
        return await fetch_rows(
            conn,
            PoolRow,
            f"""SELECT {POOL_COLUMNS} FROM payments.reconciliation_pool
                WHERE origin_day = $1 OR settled_day = $1 ORDER BY channel, origin_day, kind, item_key""",
            day,
        )

    # -- runs and differences ------------------------------------------------------------------------------------

    async def replace_run(self, conn: Connection, run: NewRun, differences: list[Difference]) -> uuid.UUID:
        """The day's run for the channel, replacing an earlier one and its differences."""
        await conn.execute(
            "DELETE FROM payments.reconciliation_runs WHERE day = $1 AND channel = $2",
            run.day,
            run.channel,
        )
        run_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO payments.reconciliation_runs (day, channel, status, bill_lines, our_items, matched,
                                                         differences, pooled, resolved, escalated, fee_rule, error,
                                                         started_at,
                                                         bill_held_fen)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id""",
            run.day,
            run.channel,
            run.status,
            run.bill_lines,
            run.our_items,
            run.matched,
            run.differences,
            run.pooled,
            run.resolved,
            run.escalated,
            run.fee_rule,
            run.error,
            run.started_at,
            run.bill_held_fen,
        )
        if differences:
            await conn.executemany(
                f"""INSERT INTO payments.reconciliation_differences ({DIFFERENCE_COLUMNS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                [(run_id, *_difference_values(d)) for d in differences],
            )
        return run_id

    async def runs_for_day(self, conn: Connection, day: dt.date) -> list[RunRow]:
        return await fetch_rows(
            conn,
            RunRow,
            f"SELECT {RUN_COLUMNS} FROM payments.reconciliation_runs WHERE day = $1 ORDER BY channel",
            day,
        )

    async def differences_of(self, conn: Connection, run_ids: list[uuid.UUID]) -> list[DifferenceRow]:
        return await fetch_rows(
            conn,
            DifferenceRow,
            f"""SELECT {DIFFERENCE_FIELDS} FROM payments.reconciliation_differences
                WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, id""",
            run_ids,
        )


def _difference_values(d: Difference) -> tuple[str | int | None, ...]:
    """DIFFERENCE_COLUMNS without run_id."""
    return (
        d.klass,
        d.kind,
        d.out_trade_no,
        d.out_refund_no,
        d.ours_amount_fen,
        d.theirs_amount_fen,
        d.ours_status,
        d.theirs_status,
        d.expected_fee_fen,
        d.theirs_fee_fen,
        d.note,
    )
