"""All SQL for reconciliation: our side of a day, the stored runs and differences, the scratch pool."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

RUN_COLUMNS = """id, day, channel, status, bill_lines, our_items, matched, differences, pooled, resolved, escalated,
                 fee_rule, error, started_at, finished_at"""
DIFFERENCE_COLUMNS = """run_id, class, kind, out_trade_no, out_refund_no, ours_amount_fen, theirs_amount_fen,
                        ours_status, theirs_status, expected_fee_fen, theirs_fee_fen, note"""
POOL_COLUMNS = """channel, kind, item_key, origin_day, side, out_trade_no, out_refund_no, amount_fen, fee_fen, status,
                  at, state, settled_day"""
_LOCK_CLASS = 0x7265636F  # "reco": a key space of its own (two-key advisory locks never meet one-key ones)


class ReconciliationRepository:
    async def lock(self, conn: Any, day: dt.date, channel: str) -> None:
        """One run per (day, channel) at a time; released at the end of the transaction."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, f"{channel}:{day.isoformat()}"
        )

    # -- our side -------------------------------------------------------------------------------------------------

    async def paid_orders(self, conn: Any, channel: str, start: dt.datetime, end: dt.datetime) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT out_trade_no, amount_fen, status, paid_at, channel_trade_no FROM payments.orders
               WHERE channel = $1 AND paid_at >= $2 AND paid_at < $3 AND status IN ('paid', 'finished')
               ORDER BY paid_at, out_trade_no""",
            channel,
            start,
            end,
        )
        return rows

    async def succeeded_refunds(
        self, conn: Any, channel: str, start: dt.datetime, end: dt.datetime
    ) -> list[Any]:
        """A refund's updated_at is when it left pending (settle is the only update of a refund row)."""
        rows: list[Any] = await conn.fetch(
            """SELECT r.out_refund_no, r.amount_fen, r.status, r.updated_at AS at, o.out_trade_no
               FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id
               WHERE o.channel = $1 AND r.status = 'succeeded' AND r.updated_at >= $2 AND r.updated_at < $3
               ORDER BY r.updated_at, r.out_refund_no""",
            channel,
            start,
            end,
        )
        return rows

    async def orders_by_out_trade_no(self, conn: Any, out_trade_nos: list[str]) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT out_trade_no, channel, amount_fen, status, paid_at FROM payments.orders
               WHERE out_trade_no = ANY($1::text[])""",
            out_trade_nos,
        )
        return rows

    async def refunds_by_out_refund_no(self, conn: Any, out_refund_nos: list[str]) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT r.out_refund_no, r.amount_fen, r.status, r.updated_at, o.out_trade_no, o.channel
               FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id
               WHERE r.out_refund_no = ANY($1::text[])""",
            out_refund_nos,
        )
        return rows

    # -- the scratch pool -------------------------------------------------------------------------------------------

    async def reopen_pool(self, conn: Any, channel: str, day: dt.date) -> None:
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

    async def pool_pending(self, conn: Any, channel: str, origin_day: dt.date) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"""SELECT {POOL_COLUMNS} FROM payments.reconciliation_pool
                WHERE channel = $1 AND origin_day = $2 AND state = 'pending' ORDER BY kind, item_key""",
            channel,
            origin_day,
        )
        return rows

    async def pool_add(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """(channel, kind, item_key, origin_day, side, out_trade_no, out_refund_no, amount_fen, fee_fen, status,
        at). An item a later day's run has already settled keeps its settlement."""
        await conn.executemany(
            """INSERT INTO payments.reconciliation_pool (channel, kind, item_key, origin_day, side, out_trade_no,
                                                          out_refund_no, amount_fen, fee_fen, status, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING""",
            rows,
        )

    async def pool_settle(
        self,
        conn: Any,
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

    async def pool_for_day(self, conn: Any, day: dt.date) -> list[Any]:
        """Items pooled by the day's runs and items the day's runs settled."""
        rows: list[Any] = await conn.fetch(
            f"""SELECT {POOL_COLUMNS} FROM payments.reconciliation_pool
                WHERE origin_day = $1 OR settled_day = $1 ORDER BY channel, origin_day, kind, item_key""",
            day,
        )
        return rows

    # -- runs and differences ------------------------------------------------------------------------------------

    async def replace_run(
        self, conn: Any, run: dict[str, Any], differences: list[tuple[Any, ...]]
    ) -> uuid.UUID:
        """The day's run for the channel, replacing an earlier one and its differences. `differences` are rows of
        DIFFERENCE_COLUMNS without run_id."""
        await conn.execute(
            "DELETE FROM payments.reconciliation_runs WHERE day = $1 AND channel = $2",
            run["day"],
            run["channel"],
        )
        run_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO payments.reconciliation_runs (day, channel, status, bill_lines, our_items, matched,
                                                         differences, pooled, resolved, escalated, fee_rule, error,
                                                         started_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id""",
            run["day"],
            run["channel"],
            run["status"],
            run["bill_lines"],
            run["our_items"],
            run["matched"],
            run["differences"],
            run["pooled"],
            run["resolved"],
            run["escalated"],
            run["fee_rule"],
            run["error"],
            run["started_at"],
        )
        if differences:
            await conn.executemany(
                f"""INSERT INTO payments.reconciliation_differences ({DIFFERENCE_COLUMNS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                [(run_id, *row) for row in differences],
            )
        return run_id

    async def runs_for_day(self, conn: Any, day: dt.date) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM payments.reconciliation_runs WHERE day = $1 ORDER BY channel", day
        )
        return rows

    async def differences_of(self, conn: Any, run_ids: list[uuid.UUID]) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"""SELECT {DIFFERENCE_COLUMNS} FROM payments.reconciliation_differences
                WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, id""",
            run_ids,
        )
        return rows
