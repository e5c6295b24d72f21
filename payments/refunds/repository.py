"""All SQL for refunds."""

from __future__ import annotations

import uuid
from typing import Any

REFUND_COLUMNS = "id, order_id, out_refund_no, amount_fen, status, reason, created_at"


class RefundRepository:
    async def insert(
        self, conn: Any, order_id: uuid.UUID, out_refund_no: str, amount_fen: int, reason: str
    ) -> Any:
        return await conn.fetchrow(
            f"""INSERT INTO payments.refunds (order_id, out_refund_no, amount_fen, reason) VALUES ($1, $2, $3, $4)
                RETURNING {REFUND_COLUMNS}""",
            order_id,
            out_refund_no,
            amount_fen,
            reason,
        )

    async def settle(self, conn: Any, refund_id: uuid.UUID, status: str) -> Any:
        """Compare-and-set from pending, so a refund is settled (and posted) once."""
        return await conn.fetchrow(
            f"""UPDATE payments.refunds SET status = $2, updated_at = now() WHERE id = $1 AND status = 'pending'
                RETURNING {REFUND_COLUMNS}""",
            refund_id,
            status,
        )

    async def pending(self, conn: Any, limit: int) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"SELECT {REFUND_COLUMNS} FROM payments.refunds WHERE status = 'pending' ORDER BY created_at LIMIT $1",
            limit,
        )
        return rows

    async def refunded_before(self, conn: Any, order_id: uuid.UUID, refund_id: uuid.UUID) -> int:
        """What had succeeded for the order before this refund (for the proportional fee reversal)."""
        return int(
            await conn.fetchval(
                """SELECT coalesce(sum(amount_fen), 0) FROM payments.refunds
               WHERE order_id = $1 AND status = 'succeeded' AND id <> $2""",
                order_id,
                refund_id,
            )
        )
