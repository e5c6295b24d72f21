"""All SQL for payouts through channel transfers and the payout accounts of payees."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

ACCOUNT_COLUMNS = "payee_id, channel, identity_type, identity_enc, name_enc, updated_at"
PAYOUT_COLUMNS = """id, settlement_id, payee_id, channel, out_biz_no, amount_fen, identity_type, identity_enc,
                    name_enc, remark, status, channel_order_id, failure, channel_status, checked_at, created_at,
                    finished_at"""


class PayoutAccountRow(msgspec.Struct, frozen=True):
    """ACCOUNT_COLUMNS."""

    payee_id: uuid.UUID
    channel: str
    identity_type: str
    identity_enc: bytes
    name_enc: bytes
    updated_at: dt.datetime


class PayoutRow(msgspec.Struct, frozen=True):
    """PAYOUT_COLUMNS."""

    id: uuid.UUID
    settlement_id: uuid.UUID
    payee_id: uuid.UUID
    channel: str
    out_biz_no: str
    amount_fen: int
    identity_type: str
    identity_enc: bytes
    name_enc: bytes
    remark: str
    status: str  # pending | succeeded | failed
    channel_order_id: str | None
    failure: str | None
    channel_status: str | None
    checked_at: dt.datetime | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class SettlementToPay(msgspec.Struct, frozen=True):
    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    seq: int
    status: str
    payout_fen: int


class PayoutRepository:
    # -- accounts --------------------------------------------------------------------------------------------

    async def put_account(
        self,
        conn: Connection,
        payee_id: uuid.UUID,
        channel: str,
        identity_type: str,
        identity_enc: bytes,
        name_enc: bytes,
    ) -> PayoutAccountRow:
        row = await fetch_row(
            conn,
            PayoutAccountRow,
            f"""INSERT INTO payments.payout_accounts (payee_id, channel, identity_type, identity_enc, name_enc)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (payee_id) DO UPDATE SET channel = EXCLUDED.channel,
                    identity_type = EXCLUDED.identity_type, identity_enc = EXCLUDED.identity_enc,
                    name_enc = EXCLUDED.name_enc, updated_at = now()
                RETURNING {ACCOUNT_COLUMNS}""",
            payee_id,
            channel,
            identity_type,
            identity_enc,
            name_enc,
        )
        assert row is not None  # an upsert returns its row
        return row

    async def account(self, conn: Connection, payee_id: uuid.UUID) -> PayoutAccountRow | None:
        return await fetch_row(
            conn,
            PayoutAccountRow,
            f"SELECT {ACCOUNT_COLUMNS} FROM payments.payout_accounts WHERE payee_id = $1",
            payee_id,
        )

    async def remove_account(self, conn: Connection, payee_id: uuid.UUID) -> bool:
        removed = await conn.fetchval(
            "DELETE FROM payments.payout_accounts WHERE payee_id = $1 RETURNING payee_id", payee_id
        )
        return removed is not None

    # -- payouts ---------------------------------------------------------------------------------------------

    async def lock_settlement(self, conn: Connection, settlement_id: uuid.UUID) -> SettlementToPay | None:
        """The settlement's row, locked until the caller's transaction ends: its transfer is claimed (and its bank
        payout recorded, payments/settlement/service.py) one caller at a time."""
        return await fetch_row(
            conn,
            SettlementToPay,
            """SELECT id, payee_id, day, seq, status, payout_fen FROM payments.settlements WHERE id = $1
               FOR UPDATE""",
            settlement_id,
        )

    async def latest(self, conn: Connection, settlement_id: uuid.UUID) -> PayoutRow | None:
        return await fetch_row(
            conn,
            PayoutRow,
            f"""SELECT {PAYOUT_COLUMNS} FROM payments.payouts WHERE settlement_id = $1
                ORDER BY created_at DESC, id DESC LIMIT 1""",
            settlement_id,
        )

    async def insert(
        self,
        conn: Connection,
        settlement: SettlementToPay,
        amount_fen: int,
        account: PayoutAccountRow,
        out_biz_no: str,
        remark: str,
    ) -> PayoutRow:
        row = await fetch_row(
            conn,
            PayoutRow,
            f"""INSERT INTO payments.payouts (settlement_id, payee_id, channel, out_biz_no, amount_fen, identity_type,
                                               identity_enc, name_enc, remark)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {PAYOUT_COLUMNS}""",
            settlement.id,
            settlement.payee_id,
            account.channel,
            out_biz_no,
            amount_fen,
            account.identity_type,
            account.identity_enc,
            account.name_enc,
            remark,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def get(self, conn: Connection, payout_id: uuid.UUID) -> PayoutRow | None:
        return await fetch_row(
            conn, PayoutRow, f"SELECT {PAYOUT_COLUMNS} FROM payments.payouts WHERE id = $1", payout_id
        )

    async def finish(
        self,
        conn: Connection,
        payout_id: uuid.UUID,
        status: str,
        channel_order_id: str | None,
        failure: str | None,
    ) -> PayoutRow | None:
        """Compare-and-set from pending: a payout ends (and is booked) once."""
        return await fetch_row(
            conn,
            PayoutRow,
            f"""UPDATE payments.payouts SET status = $2, channel_order_id = coalesce($3, channel_order_id),
                       failure = $4, channel_status = $2, finished_at = now()
                WHERE id = $1 AND status = 'pending' RETURNING {PAYOUT_COLUMNS}""",
            payout_id,
            status,
            channel_order_id,
            failure,
        )

    async def record_check(
        self, conn: Connection, payout_id: uuid.UUID, channel_status: str, channel_order_id: str | None
    ) -> None:
        """What a query of the channel said about a finished payout (reconciliation)."""
        await conn.execute(
            """UPDATE payments.payouts SET channel_status = $2, checked_at = now(),
                      channel_order_id = coalesce(channel_order_id, $3)
               WHERE id = $1""",
            payout_id,
            channel_status,
            channel_order_id,
        )

    async def pending(self, conn: Connection, limit: int) -> list[PayoutRow]:
        return await fetch_rows(
            conn,
            PayoutRow,
            f"""SELECT {PAYOUT_COLUMNS} FROM payments.payouts WHERE status = 'pending'
                ORDER BY created_at LIMIT $1""",
            limit,
        )

    async def unconfirmed(self, conn: Connection, limit: int) -> list[PayoutRow]:
        """Finished payouts no query has confirmed yet, and those the channel last contradicted."""
        return await fetch_rows(
            conn,
            PayoutRow,
            f"""SELECT {PAYOUT_COLUMNS} FROM payments.payouts
                WHERE status <> 'pending'
                  AND (checked_at IS NULL
                       OR (status = 'succeeded' AND channel_status <> 'succeeded')
                       OR (status = 'failed' AND channel_status NOT IN ('failed', 'missing')))
                ORDER BY checked_at NULLS FIRST, created_at LIMIT $1""",
            limit,
        )

    async def due_to_send(self, conn: Connection, limit: int) -> list[uuid.UUID]:
        """Settlements due with something to pay to a payee paid by transfer, that no live transfer pays: none
        was made, or the last one failed before the payee's account was last changed (fixed, presumably)."""
        rows = await conn.fetch(
            """SELECT s.id FROM payments.settlements s
               JOIN payments.payout_accounts a ON a.payee_id = s.payee_id
               LEFT JOIN LATERAL (SELECT p.status, p.finished_at FROM payments.payouts p
                                  WHERE p.settlement_id = s.id ORDER BY p.created_at DESC, p.id DESC LIMIT 1) last
                    ON true
               WHERE s.status = 'due' AND s.payout_fen > 0 AND s.running_account
                 AND (last.status IS NULL OR (last.status = 'failed' AND a.updated_at > last.finished_at))
               ORDER BY s.created_at LIMIT $1""",
            limit,
        )
        return [r["id"] for r in rows]

    async def of_settlement(self, conn: Connection, settlement_id: uuid.UUID) -> list[PayoutRow]:
        return await fetch_rows(
            conn,
            PayoutRow,
            f"""SELECT {PAYOUT_COLUMNS} FROM payments.payouts WHERE settlement_id = $1
                ORDER BY created_at, id""",
            settlement_id,
        )
