"""Refunds: partial and repeated, never more in total than was paid, one refund number per refund for life, posted
to the ledger once when the channel confirms.

A refund is claimed and committed first: its Idempotency-Key, the amount reserved on the order (pending refunds
count against the cap) and its out_refund_no, all in one short transaction. The channel is then asked outside any
transaction (no connection is held while a gateway is slow), and what it answered is recorded in a second short
transaction. When the answer never comes, the refund stays `pending` with its number: a retry with the same key,
or the settling job, asks the channel's refund query for that number, and only when the channel has no such
refund asks for it again with the same number (both channels document a repeated out_refund_no / out_request_no
as the same refund). A new number is never made for a refund that exists."""

from __future__ import annotations

import secrets
import uuid

import msgspec
import structlog

from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, not_found
from payments.channels.base import ChannelRefund, ChannelRefused, ChannelUnavailable, RefundStatus
from payments.ledger.service import Ledger, channel_fee, take_back
from payments.orders.repository import IdempotencyRepository, OrderRepository, OrderRow
from payments.orders.service import Answer, OrderService, request_hash
from payments.refunds.repository import RefundRepository, RefundRow
from payments.refunds.schemas import RefundCreate, RefundView

_log = structlog.get_logger("payments.refunds")

# What a refund's Idempotency-Key answers: 201 once the channel has answered for the refund's number (the
# refund is then pending at the channel, succeeded or failed), 202 while nobody knows whether the channel has it.
KNOWN = 201
UNKNOWN = 202


class RefundService:
    def __init__(self, orders: OrderService, ledger: Ledger) -> None:
        self._orders = orders
        self._ledger = ledger
        self._order_rows = OrderRepository()
        self._refunds = RefundRepository()
        self._keys = IdempotencyRepository()

    async def refund(
        self, pool: Pool, payee_id: uuid.UUID, order_id: uuid.UUID, key: str, data: RefundCreate
    ) -> Answer[RefundView]:
        """201 with the refund once the channel has answered for it (pending at the channel, succeeded, or failed
        when the channel refused); 202 with the pending refund while the channel's answer is unknown (retry with
        the same Idempotency-Key: the channel is then asked about the same refund number). Every repeat of the key
        answers the refund as it stands now, never a second refund."""
        scope = f"payee:{payee_id}"
        digest = request_hash("refunds.create", str(order_id), msgspec.to_builtins(data))
        async with pool.acquire() as conn, conn.transaction():
            order, refund, known, replayed = await self._claim(
                conn, scope, key, digest, payee_id, order_id, data
            )
        if known or refund.status != RefundStatus.PENDING:
            async with pool.acquire() as conn:
                return await self._answer(conn, refund.id, KNOWN, replayed)
        # A first call asks for the refund; a repeat first asks the channel whether it already has this number.
        outcome = await self._ask(order, refund, query_first=replayed)
        async with pool.acquire() as conn, conn.transaction():
            status_code = await self._record(conn, order, refund, outcome)
            answer = await self._answer(conn, refund.id, status_code, replayed)
            await self._keys.store(conn, scope, key, answer.status_code, answer.body)
        return answer

    async def _claim(
        self,
        conn: Connection,
        scope: str,
        key: str,
        digest: bytes,
        payee_id: uuid.UUID,
        order_id: uuid.UUID,
        data: RefundCreate,
    ) -> tuple[OrderRow, RefundRow, bool, bool]:
        """(order, refund, whether the channel has answered for it, whether the key was used before). A new key
        reserves the amount and makes the refund with its number; a used key finds the refund it made. A concurrent
        first use of the same key waits here, on the key's row, until this transaction commits."""
        if not await self._keys.claim(conn, scope, key, digest):
            stored = await self._keys.get(conn, scope, key)
            assert stored is not None  # claimed keys are never deleted
            if stored.request_hash != digest:
                raise DomainError(
                    422,
                    "unprocessable-content",
                    "Idempotency-Key: this key was used with a different request",
                    extra={
                        "errors": [{"field": "Idempotency-Key", "message": "reused with a different body"}]
                    },
                )
            # The claim commits with the refund and a stored answer naming it; a failed claim commits nothing.
            assert stored.status_code is not None and stored.response is not None
            refund = await self._refunds.get(conn, uuid.UUID(str(stored.response["id"])))
            assert refund is not None  # refunds are never deleted
            order = await self._order_rows.get(conn, refund.order_id)
            assert order is not None  # refunds.order_id references payments.orders
            return order, refund, stored.status_code == KNOWN, True
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
        refund = await self._refunds.insert(
            conn,
            order_id,
            "R" + order.out_trade_no[3:] + secrets.token_hex(3),
            data.amount_fen,
            data.reason,
        )
        await self._keys.store(conn, scope, key, UNKNOWN, _refund_view(refund, reserved.refunded_fen))
        return reserved, refund, False, False

    async def _ask(self, order: OrderRow, refund: RefundRow, *, query_first: bool) -> ChannelRefund | None:
        """What the channel says about this refund's number; None when it did not answer. Always the refund's own
        number: asking again with it is the same refund at both channels, never a second one."""
        channel = self._orders.channel(order.channel)
        try:
            if query_first:
                found = await channel.query_refund(order.out_trade_no, refund.out_refund_no)
                if found is not None:
                    return found
            return await channel.refund(
                order.out_trade_no, refund.out_refund_no, refund.amount_fen, order.amount_fen, refund.reason
            )
        except ChannelUnavailable as exc:
            _log.warning("refund outcome unknown", out_refund_no=refund.out_refund_no, reason=str(exc)[:200])
            return None
        except ChannelRefused as exc:
            _log.warning(
                "channel refused a refund", out_refund_no=refund.out_refund_no, refusal=str(exc)[:200]
            )
            return ChannelRefund(refund.out_refund_no, RefundStatus.FAILED, refund.amount_fen)

    async def _record(
        self, conn: Connection, order: OrderRow, refund: RefundRow, outcome: ChannelRefund | None
    ) -> int:
        """Records the channel's answer (settling the refund when it is final); the status code it warrants."""
        if outcome is None:
            return UNKNOWN
        if outcome.status != RefundStatus.PENDING:
            await self.settle(conn, order, refund, outcome.status)
        return KNOWN

    async def _answer(
        self, conn: Connection, refund_id: uuid.UUID, status_code: int, replayed: bool
    ) -> Answer[RefundView]:
        refund = await self._refunds.get(conn, refund_id)
        assert refund is not None
        order = await self._order_rows.get(conn, refund.order_id)
        assert order is not None
        if refund.status != RefundStatus.PENDING:
            status_code = KNOWN
        return Answer(status_code, _refund_view(refund, order.refunded_fen), replayed=replayed)

    async def settle(
        self, conn: Connection, order: OrderRow, refund: RefundRow, status: RefundStatus
    ) -> RefundRow:
        if status == RefundStatus.FAILED:
            failed = await self._refunds.settle(conn, refund.id, status.value)
            if failed is None:
                return refund
            await self._order_rows.release_refund(conn, order.id, refund.amount_fen)
            return failed
        # The channel gives back its fee on the refunded amount at its rate (both channels do, and reconciliation
        # trues it up to the bill).
        kept_back = channel_fee(refund.amount_fen, self._orders.channel_fee_ppm(order.channel))
        settled = await self._refunds.settle(conn, refund.id, status.value, kept_back)
        if settled is None:
            return refund
        before = await self._refunds.refunded_before(conn, order.id, refund.id)
        shares = await self._orders.shares(conn, order)
        # Each share (and the platform fee on it) goes back in proportion, cumulatively rounded, so a full refund
        # takes back every share and the whole fee.
        backs = take_back(shares, order.amount_fen, before, refund.amount_fen)
        await self._ledger.post(
            conn,
            f"refund:{refund.id}",
            "refund",
            [
                *((f"payee_payable:{b.payee_id}", b.amount_fen - b.fee_fen) for b in backs),
                ("platform_fees", sum(b.fee_fen for b in backs)),
                (f"channel_clearing:{order.channel}", -(refund.amount_fen - kept_back)),
                (f"channel_fees:{order.channel}", -kept_back),
            ],
            memo=refund.out_refund_no,
        )
        if len(backs) > 1:
            await self._refunds.insert_shares(conn, refund.id, backs)
        # A refund after a payee's money was settled (and perhaps paid out): what its payable no longer covers
        # is its debt, recovered from its next settlement (decision 0019).
        for back in backs:
            await self._ledger.carry_payee_debt(conn, back.payee_id, f"refund:{refund.id}")
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
        """Asks the channel about pending refunds, in the caller's transaction (tools and tests); the job uses
        settle_pending_refunds, which holds no transaction while a channel answers."""
        done = 0
        for refund in await self._refunds.pending(conn, limit):
            order = await self._order_rows.get(conn, refund.order_id)
            assert order is not None  # refunds.order_id references payments.orders
            outcome = await self._ask(order, refund, query_first=True)
            if outcome is not None and outcome.status != RefundStatus.PENDING:
                await self.settle(conn, order, refund, outcome.status)
                done += 1
        return done

    async def settle_pending_refunds(self, pool: Pool, limit: int = 100) -> int:
        """The settling job: each pending refund is queried by its own number (and asked for again with that
        number only when the channel has no such refund: the call never reached it, or we crashed before making
        it). Channel calls run outside any transaction; each answer is recorded in its own short one."""
        async with pool.acquire() as conn:
            pending = await self._refunds.pending(conn, limit)
            orders = {r.order_id: await self._order_rows.get(conn, r.order_id) for r in pending}
        done = 0
        for refund in pending:
            order = orders[refund.order_id]
            assert order is not None  # refunds.order_id references payments.orders
            outcome = await self._ask(order, refund, query_first=True)
            if outcome is None or outcome.status == RefundStatus.PENDING:
                continue
            async with pool.acquire() as conn, conn.transaction():
                await self.settle(conn, order, refund, outcome.status)
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
