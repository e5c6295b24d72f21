"""HTTP for payees (their settlements and statements: signed, scope settlements:read) and for operations staff."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

from litestar import Controller, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, forbidden
from app_backend.kernel.http import problems
from payments.auth import ClientOrganisation
from payments.settlement.schemas import PayoutRecord, Settlements, SettlementView

if TYPE_CHECKING:
    from payments.container import PaymentServices


def _require(client: ClientOrganisation) -> None:
    if "settlements:read" not in client.scopes:
        raise forbidden("this credential lacks the scope settlements:read")


class SettlementController(Controller):
    path = "/api/v1/payments/settlements"
    tags = ["payments"]

    @get("", summary="My settlements for a business day", opt=problems(403))
    async def list_mine(
        self,
        payments: PaymentServices,
        payee_client: ClientOrganisation,
        db: Connection,
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
        opt=problems(403, 404),
    )
    async def statement(
        self,
        settlement_id: uuid.UUID,
        payments: PaymentServices,
        payee_client: ClientOrganisation,
        db: Connection,
    ) -> Response[str]:
        _require(payee_client)
        text = await payments.settlement.statement_csv(db, settlement_id, payee_client.organisation_id)
        return Response(text, media_type="text/csv")  # Litestar adds the charset (utf-8)


class SettlementAdminController(Controller):
    """Operations staff on settlements: a day's settlements, and the payout that paid one."""

    path = "/api/v1/admin/settlements"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN, AUDITOR)]
    dependencies = STAFF

    @get(
        "",
        summary="Settlements of a business day, as settled",
        # Viewing never settles (an auditor may view, and a GET changes nothing): a day is settled by the daily
        # job or `tzt settle --date`, and lists nothing until then.
        description=(
            "The settlements made for this business day (Asia/Shanghai) by the daily settlement job (02:30 the "
            "next morning) or `tzt settle --date`. Viewing never settles: a day not settled yet lists none."
        ),
        opt=audited("admin.settlement_view", target_type="settlement_day", target="date"),
    )
    async def for_day(
        self,
        payments: PaymentServices,
        db: Connection,
        staff: Staff,
        day: dt.date | None = Parameter(query="date", default=None, description="YYYY-MM-DD"),
    ) -> Settlements:
        if day is None:
            raise DomainError(
                400,
                "bad-request",
                "date: required (YYYY-MM-DD)",
                extra={"errors": [{"field": "date", "message": "required"}]},
            )
        return Settlements(settlements=await payments.settlement.for_day(db, day))

    @post(
        "/{settlement_id:uuid}/paid",
        status_code=HTTP_200_OK,
        summary="Record the bank transfer that paid a settlement (posts the payout to the ledger once)",
        guards=[staff_only(OPS_ADMIN)],
        opt={
            **problems(404, 409),
            **audited(
                "admin.settlement_paid",
                target_type="settlement",
                target="settlement_id",
                detail=("payout_ref",),
            ),
        },
    )
    async def paid(
        self,
        settlement_id: uuid.UUID,
        data: PayoutRecord,
        payments: PaymentServices,
        db: Connection,
        staff: Staff,
    ) -> SettlementView:
        return await payments.settlement.mark_paid(db, settlement_id, data.payout_ref)
