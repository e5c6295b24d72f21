"""HTTP for payees: their settlements and statements (signed, scope settlements:read)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get
from litestar.exceptions import PermissionDeniedException
from litestar.params import Parameter

from payments.ports import ClientOrganisation
from payments.settlement.schemas import Settlements

if TYPE_CHECKING:
    from payments.container import PaymentServices


def _require(client: ClientOrganisation) -> None:
    if "settlements:read" not in client.scopes:
        raise PermissionDeniedException("this credential lacks the scope settlements:read")


class SettlementController(Controller):
    path = "/api/v1/payments/settlements"
    tags = ["payments"]

    @get("", summary="My settlements for a business day")
    async def list_mine(
        self,
        payments: PaymentServices,
        payee_client: ClientOrganisation,
        db: Any,
        day: dt.date = Parameter(query="date"),
    ) -> Settlements:
        _require(payee_client)
        return Settlements(
            settlements=await payments.settlement.for_day(db, day, payee_client.organisation_id)
        )

    @get(
        "/{settlement_id:uuid}/statement.csv",
        summary="The statement of one settlement, line by line",
        media_type="text/csv",
    )
    async def statement(
        self, settlement_id: uuid.UUID, payments: PaymentServices, payee_client: ClientOrganisation, db: Any
    ) -> Response[str]:
        _require(payee_client)
        text = await payments.settlement.statement_csv(db, settlement_id, payee_client.organisation_id)
        return Response(text, media_type="text/csv; charset=utf-8")
