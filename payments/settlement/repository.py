"""All SQL for settlements."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

SETTLEMENT_COLUMNS = (
    "id, payee_id, day, gross_fen, fees_fen, refunds_fen, net_fen, status, payout_ref, created_at, paid_at"
)


class SettlementRepository:
    async def day_figures(self, conn: Any, start: dt.datetime, end: dt.datetime) -> list[Any]:
        """Per payee: payments and refunds whose ledger entries fall in [start, end)."""
        rows: list[Any] = await conn.fetch(
            """SELECT o.payee_id,
                      coalesce(sum(o.amount_fen) FILTER (WHERE e.kind = 'payment'), 0) AS gross,
                      coalesce(sum(o.fee_fen) FILTER (WHERE e.kind = 'payment'), 0) AS fees,
                      coalesce(sum(-p.amount_fen) FILTER (WHERE e.kind = 'payment'), 0) AS paid_net,
                      coalesce(sum(r.amount_fen) FILTER (WHERE e.kind = 'refund'), 0) AS refunds,
                      coalesce(sum(p.amount_fen) FILTER (WHERE e.kind = 'refund'), 0) AS refunds_net
               FROM payments.ledger_entries e
               JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account LIKE 'payee_payable:%'
               LEFT JOIN payments.refunds r ON e.kind = 'refund' AND e.ref = 'refund:' || r.id::text
               JOIN payments.orders o ON o.id = CASE WHEN e.kind = 'payment' THEN substr(e.ref, 9)::uuid
                                                     ELSE r.order_id END
               WHERE e.at >= $1 AND e.at < $2 AND e.kind IN ('payment', 'refund')
               GROUP BY o.payee_id""",
            start,
            end,
        )
        return rows

    async def insert(
        self, conn: Any, payee_id: uuid.UUID, day: dt.date, gross: int, fees: int, refunds: int, net: int
    ) -> Any:
        return await conn.fetchrow(
            f"""INSERT INTO payments.settlements (payee_id, day, gross_fen, fees_fen, refunds_fen, net_fen, status)
                VALUES ($1, $2, $3, $4, $5, $6::bigint, CASE WHEN $6::bigint > 0 THEN 'due' ELSE 'nothing-due' END)
                ON CONFLICT (payee_id, day) DO NOTHING RETURNING {SETTLEMENT_COLUMNS}""",
            payee_id,
            day,
            gross,
            fees,
            refunds,
            net,
        )

    async def for_day(self, conn: Any, day: dt.date, payee_id: uuid.UUID | None = None) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"""SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements
                WHERE day = $1 AND ($2::uuid IS NULL OR payee_id = $2) ORDER BY payee_id""",
            day,
            payee_id,
        )
        return rows

    async def get(self, conn: Any, settlement_id: uuid.UUID) -> Any:
        return await conn.fetchrow(
            f"SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements WHERE id = $1", settlement_id
        )

    async def mark_paid(self, conn: Any, settlement_id: uuid.UUID, payout_ref: str) -> Any:
        return await conn.fetchrow(
            f"""UPDATE payments.settlements SET status = 'paid', payout_ref = $2, paid_at = now()
                WHERE id = $1 AND status = 'due' RETURNING {SETTLEMENT_COLUMNS}""",
            settlement_id,
            payout_ref,
        )

    async def statement_lines(
        self, conn: Any, payee_id: uuid.UUID, start: dt.datetime, end: dt.datetime
    ) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT e.at, e.kind, o.out_trade_no, r.out_refund_no, o.subject, o.channel,
                      CASE WHEN e.kind = 'payment' THEN o.amount_fen ELSE -r.amount_fen END AS amount_fen,
                      CASE WHEN e.kind = 'payment' THEN o.fee_fen ELSE 0 END AS fee_fen,
                      -p.amount_fen AS net_fen
               FROM payments.ledger_entries e
               JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account = 'payee_payable:' || $1::uuid::text
               LEFT JOIN payments.refunds r ON e.kind = 'refund' AND e.ref = 'refund:' || r.id::text
               JOIN payments.orders o ON o.id = CASE WHEN e.kind = 'payment' THEN substr(e.ref, 9)::uuid
                                                     ELSE r.order_id END
               WHERE e.at >= $2 AND e.at < $3 AND e.kind IN ('payment', 'refund') ORDER BY e.at""",
            payee_id,
            start,
            end,
        )
        return rows
