"""All SQL for orders and idempotency keys."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

ORDER_COLUMNS = """id, out_trade_no, payer_id, payee_id, purpose, subject, amount_fen, fee_fen, channel, method,
                   status, refunded_fen, channel_trade_no, pay_params, paid_at, expires_at, created_at"""


class OrderRow(msgspec.Struct, frozen=True):
    """ORDER_COLUMNS. `pay_params` is the stored PayInstructions (None until the channel answered)."""

    id: uuid.UUID
    out_trade_no: str
    payer_id: uuid.UUID | None
    payee_id: uuid.UUID
    purpose: str
    subject: str
    amount_fen: int
    fee_fen: int
    channel: str
    method: str
    status: str
    refunded_fen: int
    channel_trade_no: str | None
    pay_params: dict[str, object] | None
    paid_at: dt.datetime | None
    expires_at: dt.datetime
    created_at: dt.datetime


class ShareRow(msgspec.Struct, frozen=True):
    """One payee's share of a split order, with the platform's fee on it."""

    payee_id: uuid.UUID
    amount_fen: int
    fee_fen: int


class RefundLine(msgspec.Struct, frozen=True):
    id: uuid.UUID
    out_refund_no: str
    amount_fen: int
    status: str
    reason: str
    created_at: dt.datetime
    updated_at: dt.datetime


class StoredAnswerRow(msgspec.Struct, frozen=True):
    """The first answer given for an idempotency key (status and response are set in the claim's transaction)."""

    request_hash: bytes
    status_code: int | None
    response: dict[str, object] | None


class IdempotencyRepository:
    async def claim(self, conn: Connection, scope: str, key: str, request_hash: bytes) -> bool:
        """The unique index decides: a concurrent claim of the same key waits for ours to commit or roll back."""
        claimed = await conn.fetchval(
            """INSERT INTO payments.idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true""",
            scope,
            key,
            request_hash,
        )
        return bool(claimed)

    async def get(self, conn: Connection, scope: str, key: str) -> StoredAnswerRow | None:
        return await fetch_row(
            conn,
            StoredAnswerRow,
            """SELECT request_hash, status_code, response FROM payments.idempotency_keys
               WHERE scope = $1 AND key = $2""",
            scope,
            key,
        )

    async def store(
        self, conn: Connection, scope: str, key: str, status_code: int, response: msgspec.Struct
    ) -> None:
        await conn.execute(
            """UPDATE payments.idempotency_keys SET status_code = $3, response = $4
               WHERE scope = $1 AND key = $2""",
            scope,
            key,
            status_code,
            response,
        )

    async def forget(self, conn: Connection, scope: str, key: str) -> None:
        """Only for a claim whose work the other side refused outright: the key may then be used afresh."""
        await conn.execute("DELETE FROM payments.idempotency_keys WHERE scope = $1 AND key = $2", scope, key)


class OrderRepository:
    async def insert(
        self,
        conn: Connection,
        *,
        out_trade_no: str,
        payer_id: uuid.UUID | None,
        payee_id: uuid.UUID,
        purpose: str,
        subject: str,
        amount_fen: int,
        fee_fen: int,
        channel: str,
        method: str,
        expires_at: dt.datetime,
    ) -> OrderRow:
        row = await fetch_row(
            conn,
            OrderRow,
            f"""INSERT INTO payments.orders (out_trade_no, payer_id, payee_id, purpose, subject, amount_fen, fee_fen,
                                             channel, method, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {ORDER_COLUMNS}""",
            out_trade_no,
            payer_id,
            payee_id,
            purpose,
            subject,
            amount_fen,
            fee_fen,
            channel,
            method,
            expires_at,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def set_pay_params(self, conn: Connection, order_id: uuid.UUID, params: msgspec.Struct) -> None:
        await conn.execute(
            "UPDATE payments.orders SET pay_params = $2, updated_at = now() WHERE id = $1", order_id, params
        )

    async def get(self, conn: Connection, order_id: uuid.UUID) -> OrderRow | None:
        return await fetch_row(
            conn, OrderRow, f"SELECT {ORDER_COLUMNS} FROM payments.orders WHERE id = $1", order_id
        )

    async def delete_refused(self, conn: Connection, order_id: uuid.UUID) -> None:
        """An order the channel refused to open: waiting, never instructed, so nothing else refers to it."""
        await conn.execute(
            "DELETE FROM payments.orders WHERE id = $1 AND status = 'waiting' AND pay_params IS NULL",
            order_id,
        )

    async def by_out_trade_no(self, conn: Connection, out_trade_no: str) -> OrderRow | None:
        return await fetch_row(
            conn,
            OrderRow,
            f"SELECT {ORDER_COLUMNS} FROM payments.orders WHERE out_trade_no = $1",
            out_trade_no,
        )

    async def mark_paid(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        channel_trade_no: str | None,
        paid_at: dt.datetime | None,
        channel_fee_fen: int,
    ) -> OrderRow | None:
        """Compare-and-set: only a waiting (or already closed: the money came anyway) order becomes paid, with
        what the channel keeps of it."""
        return await fetch_row(
            conn,
            OrderRow,
            f"""UPDATE payments.orders SET status = 'paid', channel_trade_no = coalesce($2, channel_trade_no),
                       paid_at = coalesce($3, now()), channel_fee_fen = $4, updated_at = now()
                WHERE id = $1 AND status IN ('waiting', 'closed') RETURNING {ORDER_COLUMNS}""",
            order_id,
            channel_trade_no,
            paid_at,
            channel_fee_fen,
        )

    async def mark_closed(self, conn: Connection, order_id: uuid.UUID) -> bool:
        result: str = await conn.execute(
            "UPDATE payments.orders SET status = 'closed', updated_at = now() WHERE id = $1 AND status = 'waiting'",
            order_id,
        )
        return result.endswith(" 1")

    async def insert_shares(self, conn: Connection, order_id: uuid.UUID, shares: list[ShareRow]) -> None:
        await conn.executemany(
            "INSERT INTO payments.order_shares (order_id, payee_id, amount_fen, fee_fen) VALUES ($1, $2, $3, $4)",
            [(order_id, s.payee_id, s.amount_fen, s.fee_fen) for s in shares],
        )

    async def shares_of(self, conn: Connection, order_id: uuid.UUID) -> list[ShareRow]:
        """Empty for an order that is all its payee's."""
        return await fetch_rows(
            conn,
            ShareRow,
            """SELECT payee_id, amount_fen, fee_fen FROM payments.order_shares WHERE order_id = $1
               ORDER BY payee_id""",
            order_id,
        )

    async def refunds_of(self, conn: Connection, order_id: uuid.UUID) -> list[RefundLine]:
        return await fetch_rows(
            conn,
            RefundLine,
            """SELECT id, out_refund_no, amount_fen, status, reason, created_at, updated_at
                FROM payments.refunds WHERE order_id = $1 ORDER BY created_at, id""",
            order_id,
        )

    async def mark_finished(self, conn: Connection, order_id: uuid.UUID) -> bool:
        result: str = await conn.execute(
            "UPDATE payments.orders SET status = 'finished', updated_at = now() WHERE id = $1 AND status = 'paid'",
            order_id,
        )
        return result.endswith(" 1")

    async def stale_waiting(self, conn: Connection, now: dt.datetime, limit: int) -> list[OrderRow]:
        """Withholding orders (transit deductions) are not closed here: the transit check job settles them."""
        return await fetch_rows(
            conn,
            OrderRow,
            f"""SELECT {ORDER_COLUMNS} FROM payments.orders WHERE status = 'waiting' AND expires_at < $1
                AND method <> 'withhold' ORDER BY expires_at LIMIT $2""",
            now,
            limit,
        )

    async def reserve_refund(self, conn: Connection, order_id: uuid.UUID, amount_fen: int) -> OrderRow | None:
        """The refund cap in one conditional update: concurrent refunds can never sum past the amount paid."""
        return await fetch_row(
            conn,
            OrderRow,
            f"""UPDATE payments.orders SET refunded_fen = refunded_fen + $2, updated_at = now()
                WHERE id = $1 AND status IN ('paid', 'finished') AND refunded_fen + $2 <= amount_fen
                RETURNING {ORDER_COLUMNS}""",
            order_id,
            amount_fen,
        )

    async def release_refund(self, conn: Connection, order_id: uuid.UUID, amount_fen: int) -> None:
        await conn.execute(
            "UPDATE payments.orders SET refunded_fen = refunded_fen - $2, updated_at = now() WHERE id = $1",
            order_id,
            amount_fen,
        )
