"""HTTP for payers (orders) and payees (refunds)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden, invalid_field
from app_backend.kernel.http import client_ip, problems
from payments.auth import ClientOrganisation, Payer
from payments.orders.schemas import OrderCreate, OrderView, PayeeOrderView
from payments.refunds.schemas import RefundCreate, RefundView

if TYPE_CHECKING:
    from payments.container import PaymentServices


def _key(raw: str | None) -> str:
    if not raw or not 8 <= len(raw) <= 64 or not raw.isascii() or not raw.isprintable():
        raise invalid_field("Idempotency-Key", "missing or malformed")
    return raw


class OrderController(Controller):
    path = "/api/v1/payments/orders"
    tags = ["payments"]

    @post(
        "",
        summary="Create an order (Idempotency-Key header required); returns what the client pays with",
        opt=problems(422, 502),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: OrderCreate,
        payments: PaymentServices,
        payer: Payer,
        idempotency_key: str | None = Parameter(header="Idempotency-Key", default=None),
    ) -> Response[OrderView]:
        # No request transaction: the order and its number are committed before the channel is asked, and no
        # connection is held while a gateway is slow (OrderService.place).
        client = client_ip(request) or "127.0.0.1"
        answer = await payments.orders.place(
            payments.pool, payer.resident_id, _key(idempotency_key), data, client
        )
        return Response(answer.body, status_code=answer.status_code)

    @get("/{order_id:uuid}", summary="One of my orders", opt=problems(404))
    async def get_one(
        self, order_id: uuid.UUID, payments: PaymentServices, payer: Payer, db: Connection
    ) -> OrderView:
        return await payments.orders.get_for_payer(db, order_id, payer.resident_id)

    @post(
        "/{order_id:uuid}/close",
        summary="Close one of my orders that is still waiting to be paid",
        description=(
            "Closes the trade at the channel, then here. Closing a closed order answers it again. 409 (type "
            "order-paid) when the order is paid, including when it was paid at the channel just before the close: "
            "that payment is recorded, never lost. 503 when the channel did not answer: retry."
        ),
        status_code=200,
        opt=problems(404, 409, 502, 503),
    )
    async def close(self, order_id: uuid.UUID, payments: PaymentServices, payer: Payer) -> OrderView:
        # No request transaction: the channel is asked before the short transaction that marks the order.
        return await payments.orders.close_for_payer(payments.pool, order_id, payer.resident_id)

    @post(
        "/{order_id:uuid}/refunds",
        summary="Refund part or all of a paid order (the payee, signed); 202 while the channel's answer is unknown",
        description=(
            "201: the channel answered for this refund (status pending at the channel, succeeded, or failed when "
            "it refused). 202: the channel did not answer; the refund keeps its out_refund_no and is settled by "
            "querying the channel. Retry with the same Idempotency-Key (after Retry-After) to see it as it "
            "stands: a retry never makes a second refund."
        ),
        opt=problems(403, 404, 409, 422),
    )
    async def refund(
        self,
        order_id: uuid.UUID,
        data: RefundCreate,
        payments: PaymentServices,
        payee_client: ClientOrganisation,
        idempotency_key: str | None = Parameter(header="Idempotency-Key", default=None),
    ) -> Response[RefundView]:
        # No request transaction: the refund is committed before the channel is asked, and no connection is
        # held while a gateway is slow (payments/refunds/service.py).
        if "payments:refund" not in payee_client.scopes:
            raise forbidden("this credential lacks the scope payments:refund")
        answer = await payments.refunds.refund(
            payments.pool, payee_client.organisation_id, order_id, _key(idempotency_key), data
        )
        headers = {"Retry-After": "5"} if answer.status_code == 202 else None
        return Response(answer.body, status_code=answer.status_code, headers=headers)


_READ_SCOPES = frozenset({"payments:refund", "settlements:read"})


class PayeeOrderController(Controller):
    """A payee's own orders, by signed machine request; another organisation's order is a 404."""

    path = "/api/v1/payments/payee/orders"
    tags = ["payments"]

    @get(
        "/{order_id:uuid}",
        summary="One of my orders as its payee, with its refunds (signed; payments:refund or settlements:read)",
        opt=problems(403, 404),
    )
    async def get_one(
        self, order_id: uuid.UUID, payments: PaymentServices, payee_client: ClientOrganisation, db: Connection
    ) -> PayeeOrderView:
        if not _READ_SCOPES & payee_client.scopes:
            raise forbidden("this credential lacks the scope payments:refund or settlements:read")
        return await payments.orders.payee_order(db, order_id, payee_client.organisation_id)

    @post(
        "/{order_id:uuid}/close",
        summary="Close one of my orders that is still waiting to be paid (signed; payments:refund)",
        description=(
            "As the payer's close: closing a closed order answers it again; 409 (type order-paid) when it is paid, "
            "including when it was paid at the channel just before the close (that payment is recorded)."
        ),
        status_code=200,
        opt=problems(403, 404, 409, 502, 503),
    )
    async def close(
        self, order_id: uuid.UUID, payments: PaymentServices, payee_client: ClientOrganisation
    ) -> PayeeOrderView:
        if "payments:refund" not in payee_client.scopes:
            raise forbidden("this credential lacks the scope payments:refund")
        return await payments.orders.close_for_payee(payments.pool, order_id, payee_client.organisation_id)
