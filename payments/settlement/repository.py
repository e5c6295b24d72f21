"""All SQL for settlements."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

SETTLEMENT_COLUMNS = """id, payee_id, day, seq, cutoff, gross_fen, fees_fen, refunds_fen, owed_before_fen, net_fen,
                        payout_fen, owed_after_fen, status, payout_ref, created_at, paid_at, recovered_at_payout_fen"""


class SettlementRow(msgspec.Struct, frozen=True):
    """SETTLEMENT_COLUMNS."""

    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    seq: int
    cutoff: dt.datetime
    gross_fen: int
    fees_fen: int
    refunds_fen: int
    owed_before_fen: int
    net_fen: int
    payout_fen: int
    owed_after_fen: int
    status: str  # due | paid | nothing-due | carried
    payout_ref: str | None
    created_at: dt.datetime
    paid_at: dt.datetime | None
    recovered_at_payout_fen: int


class NewSettlement(msgspec.Struct, frozen=True):
    payee_id: uuid.UUID
    day: dt.date
    cutoff: dt.datetime
    gross_fen: int
    fees_fen: int
    refunds_fen: int
    owed_before_fen: int
    net_fen: int
    payout_fen: int
    owed_after_fen: int
    status: str


class UnsettledRow(msgspec.Struct, frozen=True):
    """A ledger entry that moved a payee's payable and is in none of its settlements yet; `receivable_fen` is
    what it moved the payee's receivable by (a debt carried)."""

    entry_id: int
    ref: str
    kind: str
    at: dt.datetime
    payable_fen: int
    receivable_fen: int


class TransferRow(msgspec.Struct, frozen=True):
    """The latest channel transfer of a settlement, as a settlement shows it."""

    settlement_id: uuid.UUID
    channel: str
    out_biz_no: str
    status: str
    failure: str | None


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


# A payment or refund line is the payee's own part of it: its share of a split order, or what a refund took back
# from that share.
_LINES = """SELECT e.at, e.kind, o.out_trade_no, r.out_refund_no, o.subject, o.channel,
                   CASE WHEN e.kind = 'payment' THEN coalesce(os.amount_fen, o.amount_fen)
                        ELSE -coalesce(rs.amount_fen, r.amount_fen) END AS amount_fen,
                   CASE WHEN e.kind = 'payment' THEN coalesce(os.fee_fen, o.fee_fen) ELSE 0 END AS fee_fen,
                   -p.amount_fen AS net_fen
            FROM payments.ledger_entries e
            JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account = 'payee_payable:' || $1::uuid::text
            LEFT JOIN payments.refunds r ON e.kind = 'refund' AND e.ref = 'refund:' || r.id::text
            JOIN payments.orders o ON o.id = CASE WHEN e.kind = 'payment' THEN substr(e.ref, 9)::uuid
                                                  ELSE r.order_id END
            LEFT JOIN payments.order_shares os ON os.order_id = o.id AND os.payee_id = $1
            LEFT JOIN payments.refund_shares rs ON rs.refund_id = r.id AND rs.payee_id = $1
            WHERE e.kind IN ('payment', 'refund') AND """


class SettlementRepository:
    async def lock_payee(self, conn: Connection, payee_id: uuid.UUID) -> None:
        """One settlement of a payee at a time, until the caller's transaction ends."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('settlement:' || $1::uuid::text, 0))", payee_id
        )

    async def payees_unsettled(self, conn: Connection, cutoff: dt.datetime) -> list[uuid.UUID]:
        """Payees with movements of their payable before `cutoff` in no settlement."""
        rows = await conn.fetch(
            """SELECT DISTINCT substr(p.account, 15)::uuid AS payee_id
               FROM payments.ledger_postings p JOIN payments.ledger_entries e ON e.id = p.entry_id
               WHERE p.account LIKE 'payee\\_payable:%' AND e.at < $1
                 AND NOT EXISTS (SELECT 1 FROM payments.settlement_entries se
                                 WHERE se.entry_id = e.id AND se.payee_id = substr(p.account, 15)::uuid)
               ORDER BY 1""",
            cutoff,
        )
        return [r["payee_id"] for r in rows]

    async def unsettled(
        self, conn: Connection, payee_id: uuid.UUID, cutoff: dt.datetime
    ) -> list[UnsettledRow]:
        return await fetch_rows(
            conn,
            UnsettledRow,
            """SELECT e.id AS entry_id, e.ref, e.kind, e.at, p.amount_fen AS payable_fen,
                      coalesce((SELECT q.amount_fen FROM payments.ledger_postings q
                                WHERE q.entry_id = e.id AND q.account = 'payee_receivable:' || $1::uuid::text),
                               0)::bigint AS receivable_fen
               FROM payments.ledger_postings p JOIN payments.ledger_entries e ON e.id = p.entry_id
               WHERE p.account = 'payee_payable:' || $1::uuid::text AND e.at < $2
                 AND NOT EXISTS (SELECT 1 FROM payments.settlement_entries se
                                 WHERE se.entry_id = e.id AND se.payee_id = $1)
               ORDER BY e.at, e.id""",
            payee_id,
            cutoff,
        )

    async def next_seq(self, conn: Connection, payee_id: uuid.UUID, day: dt.date) -> int:
        return int(
            await conn.fetchval(
                "SELECT coalesce(max(seq), 0) + 1 FROM payments.settlements WHERE payee_id = $1 AND day = $2",
                payee_id,
                day,
            )
        )

    async def insert(self, conn: Connection, new: NewSettlement, seq: int) -> SettlementRow:
        row = await fetch_row(
            conn,
            SettlementRow,
            f"""INSERT INTO payments.settlements (payee_id, day, seq, cutoff, gross_fen, fees_fen, refunds_fen,
                                                  owed_before_fen, net_fen, payout_fen, owed_after_fen, status)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {SETTLEMENT_COLUMNS}""",
            new.payee_id,
            new.day,
            seq,
            new.cutoff,
            new.gross_fen,
            new.fees_fen,
            new.refunds_fen,
            new.owed_before_fen,
            new.net_fen,
            new.payout_fen,
            new.owed_after_fen,
            new.status,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def add_entries(
        self, conn: Connection, settlement_id: uuid.UUID, payee_id: uuid.UUID, entry_ids: list[int]
    ) -> None:
        """The primary key (entry, payee) keeps an entry in one settlement of a payee."""
        await conn.executemany(
            "INSERT INTO payments.settlement_entries (entry_id, payee_id, settlement_id) VALUES ($1, $2, $3)",
            [(entry_id, payee_id, settlement_id) for entry_id in entry_ids],
        )

    async def for_day(
        self, conn: Connection, day: dt.date, payee_id: uuid.UUID | None = None
    ) -> list[SettlementRow]:
        return await fetch_rows(
            conn,
            SettlementRow,
            f"""SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements
                WHERE day = $1 AND ($2::uuid IS NULL OR payee_id = $2) ORDER BY payee_id, seq""",
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

    async def lock(self, conn: Connection, settlement_id: uuid.UUID) -> SettlementRow | None:
        """The settlement, its row locked until the caller's transaction ends: a bank payout and a channel
        transfer of one settlement are decided one at a time (payments/payouts/service.py locks it too)."""
        return await fetch_row(
            conn,
            SettlementRow,
            f"SELECT {SETTLEMENT_COLUMNS} FROM payments.settlements WHERE id = $1 FOR UPDATE",
            settlement_id,
        )

    async def live_transfer(self, conn: Connection, settlement_id: uuid.UUID) -> TransferRow | None:
        """A channel transfer of the settlement that is not known to have failed (under way, or paid)."""
        return await fetch_row(
            conn,
            TransferRow,
            """SELECT settlement_id, channel, out_biz_no, status, failure FROM payments.payouts
               WHERE settlement_id = $1 AND status <> 'failed'""",
            settlement_id,
        )

    async def latest_transfers(self, conn: Connection, settlement_ids: list[uuid.UUID]) -> list[TransferRow]:
        return await fetch_rows(
            conn,
            TransferRow,
            """SELECT DISTINCT ON (settlement_id) settlement_id, channel, out_biz_no, status, failure
               FROM payments.payouts WHERE settlement_id = ANY($1::uuid[])
               ORDER BY settlement_id, created_at DESC, id DESC""",
            settlement_ids,
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

    async def keep_back(self, conn: Connection, settlement_id: uuid.UUID, fen: int) -> SettlementRow | None:
        """Records, once, what the payout keeps back of the payee's debt (None when it was decided before)."""
        return await fetch_row(
            conn,
            SettlementRow,
            f"""UPDATE payments.settlements SET recovered_at_payout_fen = $2, kept_back_at = now()
                WHERE id = $1 AND status = 'due' AND kept_back_at IS NULL RETURNING {SETTLEMENT_COLUMNS}""",
            settlement_id,
            fen,
        )

    async def lines_of_entries(
        self, conn: Connection, payee_id: uuid.UUID, entry_ids: list[int]
    ) -> list[StatementLineRow]:
        return await fetch_rows(
            conn,
            StatementLineRow,
            _LINES + "e.id = ANY($2::bigint[]) ORDER BY e.at, e.id",
            payee_id,
            entry_ids,
        )

    async def statement_lines(self, conn: Connection, settlement_id: uuid.UUID) -> list[StatementLineRow]:
        row = await self.get(conn, settlement_id)
        assert row is not None
        return await fetch_rows(
            conn,
            StatementLineRow,
            _LINES
            + """e.id IN (SELECT entry_id FROM payments.settlement_entries WHERE settlement_id = $2)
                 ORDER BY e.at, e.id""",
            row.payee_id,
            settlement_id,
        )
