"""Refunds: partial and repeated, never more in total than was paid (one conditional update reserves the amount
before the channel is asked), posted to the ledger once when the channel confirms."""

from __future__ import annotations

import secrets
import uuid

import msgspec

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, not_found
from payments.channels.base import ChannelUnavailable, RefundStatus
from payments.ledger.service import Ledger
from payments.orders.repository import IdempotencyRepository, OrderRepository, OrderRow
from payments.orders.service import Answer, ChannelDown, OrderService, claim_or_replay, request_hash
from payments.refunds.repository import RefundRepository, RefundRow
from payments.refunds.schemas import RefundCreate, RefundView


class RefundService:
    def __init__(self, orders: OrderService, ledger: Ledger) -> None:
        self._orders = orders
        self._ledger = ledger
        self._order_rows = OrderRepository()
        self._refunds = RefundRepository()
        self._keys = IdempotencyRepository()

    async def refund(
        self, conn: Connection, payee_id: uuid.UUID, order_id: uuid.UUID, key: str, data: RefundCreate
    ) -> Answer[RefundView]:
        """A 201 with the refund as it stands (pending, or settled when the channel answered at once). Idempotent
        per key like an order."""
        scope = f"payee:{payee_id}"
        digest = request_hash("refunds.create", str(order_id), msgspec.to_builtins(data))
        replay = await claim_or_replay(self._keys, conn, scope, key, digest, RefundView)
        if replay is not None:
            return replay
        order = await self._order_rows.get(conn, order_id)
        if order is None or order.payee_id != payee_id:
            raise not_found("order not found")
        reserved = await self._order_rows.reserve_refund(conn, order_id, data.amount_fen)
        if reserved is None:
            refundable = (
                max(0, order.amount_fen - order.refunded_fen) if order.status in ("paid", "finished") else 0
            )
            raise DomainError(
                409,
                "conflict",
                f"amount_fen: at most {refundable} fen can still be refunded on this order",
                extra={"errors": [{"field": "amount_fen", "message": "exceeds refundable"}]},
            )
        row = await self._refunds.insert(
            conn,
            order_id,
            "R" + order.out_trade_no[3:] + secrets.token_hex(3),
            data.amount_fen,
            data.reason,
        )
        try:
            result = await self._orders.channel(order.channel).refund(
                order.out_trade_no, row.out_refund_no, data.amount_fen, order.amount_fen, data.reason
            )
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {order.channel} gateway did not answer; retry with the same Idempotency-Key",
                headers={"Retry-After": "2"},
            ) from None
        if result.status != RefundStatus.PENDING:
            row = await self.settle(conn, reserved, row, result.status)
        answer = Answer(201, _refund_view(row, reserved.refunded_fen))
        await self._keys.store(conn, scope, key, answer.status_code, answer.body)
        return answer

    async def settle(
        self, conn: Connection, order: OrderRow, refund: RefundRow, status: RefundStatus
    ) -> RefundRow:
        settled = await self._refunds.settle(conn, refund.id, status.value)
        if settled is None:
            return refund
        if status == RefundStatus.FAILED:
            await self._order_rows.release_refund(conn, order.id, refund.amount_fen)
            return settled
        before = await self._refunds.refunded_before(conn, order.id, refund.id)
        amount, fee = order.amount_fen, order.fee_fen
        # The platform fee goes back in proportion; the last refund takes the rounding, so a full refund
        # returns the whole fee and the payee's payable never goes below zero.
        fee_back = fee * (before + refund.amount_fen) // amount - fee * before // amount
        await self._ledger.post(
            conn,
            f"refund:{refund.id}",
            "refund",
            [
                (f"payee_payable:{order.payee_id}", refund.amount_fen - fee_back),
                ("platform_fees", fee_back),
                (f"channel_clearing:{order.channel}", -refund.amount_fen),
            ],
            memo=refund.out_refund_no,
        )
        await self._orders.events.enqueue(
            conn,
            order.payee_id,
            "refund.succeeded",
            {
                "order_id": str(order.id),
                "out_trade_no": order.out_trade_no,
                "out_refund_no": refund.out_refund_no,
                "amount_fen": refund.amount_fen,
            },
        )
        return settled

    async def settle_pending(self, conn: Connection, limit: int = 100) -> int:
        """Asks the channel about refunds it accepted but had not finished."""
        done = 0
        for refund in await self._refunds.pending(conn, limit):
            order = await self._order_rows.get(conn, refund.order_id)
            assert order is not None  # refunds.order_id references payments.orders
            try:
                result = await self._orders.channel(order.channel).query_refund(
                    order.out_trade_no, refund.out_refund_no
                )
            except ChannelUnavailable:
                continue
            if result is not None and result.status != RefundStatus.PENDING:
                await self.settle(conn, order, refund, result.status)
                done += 1
        return done


def _refund_view(row: RefundRow, order_refunded_fen: int) -> RefundView:
    return RefundView(
        id=row.id,
        order_id=row.order_id,
        out_refund_no=row.out_refund_no,
        amount_fen=row.amount_fen,
        status=row.status,
        reason=row.reason,
        created_at=row.created_at,
        order_refunded_fen=order_refunded_fen,
    )
