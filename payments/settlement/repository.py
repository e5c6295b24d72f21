"""All SQL for settlements."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

SETTLEMENT_COLUMNS = (
    "id, payee_id, day, gross_fen, fees_fen, refunds_fen, net_fen, status, payout_ref, created_at, paid_at"
)


class DayFiguresRow(msgspec.Struct, frozen=True):
    """One payee's business day as the ledger has it, in fen: `paid_net` is what its payments credited it,
    `refunds_net` what its refunds took back."""

    payee_id: uuid.UUID
    gross: int
    fees: int
    paid_net: int
    refunds: int
    refunds_net: int


class SettlementRow(msgspec.Struct, frozen=True):
    """SETTLEMENT_COLUMNS."""

    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    gross_fen: int
    fees_fen: int
    refunds_fen: int
    net_fen: int
    status: str  # due | paid | nothing-due
    payout_ref: str | None
    created_at: dt.datetime
    paid_at: dt.datetime | None


class StatementLineRow(msgspec.Struct, frozen=True):
    at: dt.datetime
    kind: str  # payment | refund
    out_trade_no: str
    out_refund_no: str | None
    subject: str
    channel: str
    amount_fen: int
    fee_fen: int
    net_fen: int


class SettlementRepository:
    async def day_figures(
        self, conn: Connection, start: dt.datetime, end: dt.datetime
    ) -> list[DayFiguresRow]:
        """Per payee: payments and refunds whose ledger entries fall in [start, end). Sums of bigint are numeric
        in PostgreSQL: cast back to bigint (fen sums fit)."""
        return await fetch_rows(
            conn,
            DayFiguresRow,
            """SELECT o.payee_id,
                      coalesce(sum(o.amount_fen) FILTER (WHERE e.kind = 'payment'), 0)::bigint AS gross,
                      coalesce(sum(o.fee_fen) FILTER (WHERE e.kind = 'payment'), 0)::bigint AS fees,
                      coalesce(sum(-p.amount_fen) FILTER (WHERE e.kind = 'payment'), 0)::bigint AS paid_net,
                      coalesce(sum(r.amount_fen) FILTER (WHERE e.kind = 'refund'), 0)::bigint AS refunds,
                      coalesce(sum(p.amount_fen) FILTER (WHERE e.kind = 'refund'), 0)::bigint AS refunds_net
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

    async def insert(
        self,
        conn: Connection,
        payee_id: uuid.UUID,
        day: dt.date,
        gross: int,
        fees: int,
        refunds: int,
        net: int,
    ) -> SettlementRow | None:
        """None when the payee's day was settled before."""
        return await fetch_row(
            conn,
            SettlementRow,
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

    async def for_day(
        self, conn: Connection, day: dt.date, payee_id: uuid.UUID | None = None
    ) -> list[SettlementRow]:
        return await fetch_rows(
            conn,
            SettlementRow,
            f"""SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements
                WHERE day = $1 AND ($2::uuid IS NULL OR payee_id = $2) ORDER BY payee_id""",
            day,
            payee_id,
        )

    async def get(self, conn: Connection, settlement_id: uuid.UUID) -> SettlementRow | None:
        return await fetch_row(
            conn,
            SettlementRow,
            f"SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements WHERE id = $1",
            settlement_id,
        )

    async def mark_paid(
        self, conn: Connection, settlement_id: uuid.UUID, payout_ref: str
    ) -> SettlementRow | None:
        """Compare-and-set: only a due settlement is paid."""
        return await fetch_row(
            conn,
            SettlementRow,
            f"""UPDATE payments.settlements SET status = 'paid', payout_ref = $2, paid_at = now()
                WHERE id = $1 AND status = 'due' RETURNING {SETTLEMENT_COLUMNS}""",
            settlement_id,
            payout_ref,
        )

    async def statement_lines(
        self, conn: Connection, payee_id: uuid.UUID, start: dt.datetime, end: dt.datetime
    ) -> list[StatementLineRow]:
        return await fetch_rows(
            conn,
            StatementLineRow,
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
