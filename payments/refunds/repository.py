"""All SQL for refunds."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows
from payments.ledger.service import Share

REFUND_COLUMNS = "id, order_id, out_refund_no, amount_fen, status, reason, created_at"


class RefundRow(msgspec.Struct, frozen=True):
    """REFUND_COLUMNS."""

    id: uuid.UUID
    order_id: uuid.UUID
    out_refund_no: str
    amount_fen: int
    status: str
    reason: str
    created_at: dt.datetime


class RefundRepository:
    async def insert(
        self, conn: Connection, order_id: uuid.UUID, out_refund_no: str, amount_fen: int, reason: str
    ) -> RefundRow:
        row = await fetch_row(
            conn,
            RefundRow,
            f"""INSERT INTO payments.refunds (order_id, out_refund_no, amount_fen, reason) VALUES ($1, $2, $3, $4)
                RETURNING {REFUND_COLUMNS}""",
            order_id,
            out_refund_no,
            amount_fen,
            reason,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def settle(
        self, conn: Connection, refund_id: uuid.UUID, status: str, channel_fee_back_fen: int = 0
    ) -> RefundRow | None:
        """Compare-and-set from pending, so a refund is settled (and posted) once, with the fee the channel gives
        back with it."""
        return await fetch_row(
            conn,
            RefundRow,
            f"""UPDATE payments.refunds SET status = $2, channel_fee_back_fen = $3, updated_at = now()
                WHERE id = $1 AND status = 'pending' RETURNING {REFUND_COLUMNS}""",
            refund_id,
            status,
            channel_fee_back_fen,
        )

    async def insert_shares(self, conn: Connection, refund_id: uuid.UUID, backs: list[Share]) -> None:
        """What a refund of a split order took back from each payee's share, as posted."""
        await conn.executemany(
            """INSERT INTO payments.refund_shares (refund_id, payee_id, amount_fen, fee_fen)
               VALUES ($1, $2, $3, $4)""",
            [(refund_id, b.payee_id, b.amount_fen, b.fee_fen) for b in backs],
        )

    async def pending(self, conn: Connection, limit: int) -> list[RefundRow]:
        return await fetch_rows(
            conn,
            RefundRow,
            f"SELECT {REFUND_COLUMNS} FROM payments.refunds WHERE status = 'pending' ORDER BY created_at LIMIT $1",
            limit,
        )

    async def refunded_before(self, conn: Connection, order_id: uuid.UUID, refund_id: uuid.UUID) -> int:
        """What had succeeded for the order before this refund (for the proportional fee reversal)."""
        return int(
            await conn.fetchval(
                """SELECT coalesce(sum(amount_fen), 0) FROM payments.refunds
               WHERE order_id = $1 AND status = 'succeeded' AND id <> $2""",
                order_id,
                refund_id,
            )
        )

    async def get(self, conn: Connection, refund_id: uuid.UUID) -> RefundRow | None:
        return await fetch_row(
            conn, RefundRow, f"SELECT {REFUND_COLUMNS} FROM payments.refunds WHERE id = $1", refund_id
        )
