"""HTTP for riders: withholding agreements, trips, debts and their repayment."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter

from app_backend.kernel.db import Connection
from app_backend.kernel.http import client_ip, problems
from payments.auth import Payer
from payments.orders.controllers import _key
from payments.transit.schemas import (
    AgreementCreate,
    AgreementView,
    DebtSummary,
    RepayCreate,
    Repayment,
    TripView,
)

if TYPE_CHECKING:
    from payments.container import PaymentServices


class TransitController(Controller):
    path = "/api/v1/payments/transit"
    tags = ["transit"]

    @post(
        "/agreements",
        summary="Sign a withholding agreement (Alipay agreement / WeChat papay): returns what the client opens",
        opt=problems(409, 503),
    )
    async def sign(self, data: AgreementCreate, payments: PaymentServices, payer: Payer) -> AgreementView:
        # No request transaction: the agreement is committed before the channel is asked (TransitService.sign).
        return await payments.transit.sign(payments.pool, payer.resident_id, data)

    @get("/agreements", summary="My withholding agreements; only an active one lets me ride")
    async def mine(self, payments: PaymentServices, payer: Payer, db: Connection) -> list[AgreementView]:
        return await payments.transit.agreements(db, payer.resident_id)

    @delete(
        "/agreements/{agreement_id:uuid}",
        summary="End one of my agreements",
        status_code=204,
        opt=problems(404, 409),
    )
    async def end(
        self, agreement_id: uuid.UUID, payments: PaymentServices, payer: Payer, db: Connection
    ) -> None:
        await payments.transit.end(db, payer.resident_id, agreement_id)

    @get("/trips", summary="My recent trips and their fares")
    async def trips(
        self,
        payments: PaymentServices,
        payer: Payer,
        db: Connection,
        limit: int = Parameter(query="limit", default=50, ge=1, le=200),
    ) -> list[TripView]:
        return await payments.transit.trips(db, payer.resident_id, limit)

    @get("/debts", summary="What I owe for trips whose fare could not be deducted")
    async def debts(self, payments: PaymentServices, payer: Payer, db: Connection) -> DebtSummary:
        return await payments.transit.debts(db, payer.resident_id)

    @post(
        "/debts/repay",
        summary="Repay transit debts (Idempotency-Key header required): an order to pay like any other; "
        "while one can still be paid, every repay answers it (200); 503 when the channel did not answer: "
        "retry with the same key, which keeps the order and its number",
        opt=problems(409, 422, 502, 503),
    )
    async def repay(
        self,
        request: Request[Any, Any, Any],
        data: RepayCreate,
        payments: PaymentServices,
        payer: Payer,
        idempotency_key: str | None = Parameter(header="Idempotency-Key", default=None),
    ) -> Response[Repayment]:
        # No request transaction: the order and its number are committed before the channel is asked, and no
        # connection is held while a gateway is slow (TransitService.repay).
        client = client_ip(request) or "127.0.0.1"
        answer = await payments.transit.repay(
            payments.pool, payer.resident_id, _key(idempotency_key), data, client
        )
        return Response(answer.body, status_code=answer.status_code)
