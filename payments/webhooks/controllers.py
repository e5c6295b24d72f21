"""HTTP for payees: where their system wants to hear about paid and refunded orders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Controller, get, put
from litestar.status_codes import HTTP_200_OK

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import problems
from payments.auth import ClientOrganisation
from payments.webhooks.schemas import PayeeEvents, WebhookRegistered, WebhookSet

if TYPE_CHECKING:
    from payments.container import PaymentServices


def _require(client: ClientOrganisation) -> None:
    if not client.scopes & {"payments:refund", "settlements:read"}:
        raise forbidden("this credential speaks for no payee (payments:refund or settlements:read)")


class WebhookController(Controller):
    path = "/api/v1/payments/webhook"
    tags = ["payments"]

    @put(
        "",
        status_code=HTTP_200_OK,
        summary="Set the URL our events are POSTed to (returns a new signing secret)",
        opt=problems(403),
    )
    async def set_url(
        self, data: WebhookSet, payments: PaymentServices, payee_client: ClientOrganisation, db: Connection
    ) -> WebhookRegistered:
        _require(payee_client)
        return await payments.webhooks.register(db, payee_client.organisation_id, data.url)

    @get("/events", summary="Recent events and their delivery", opt=problems(403))
    async def events(
        self, payments: PaymentServices, payee_client: ClientOrganisation, db: Connection
    ) -> PayeeEvents:
        _require(payee_client)
        return PayeeEvents(events=await payments.webhooks.events(db, payee_client.organisation_id))
