"""HTTP for ticket sales: the organiser's set-up (signed, events:publish, its own sessions), the public read of a
sale, the resident's queue, holds, payment, tickets and returns (bearer token)."""

from __future__ import annotations

import io
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import segno
from litestar import Controller, Request, Response, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden, invalid_field
from app_backend.kernel.http import RESIDENT_SECURITY, client_ip, problems
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import MachinePrincipal
from app_backend.tickets.schemas import (
    HoldCreate,
    HoldView,
    PayCreate,
    PrintedTicket,
    QueueView,
    SaleSetup,
    SaleView,
    TicketList,
    TicketView,
)

if TYPE_CHECKING:
    from app_backend.events.service import EventsService
    from app_backend.tickets.service import TicketService

AnyRequest = Request[Any, Any, Any]
PUBLISH_SCOPE = "events:publish"
Limit = Annotated[int, Parameter(ge=1, le=200)]


def _key(raw: str | None) -> str:
    if not raw or not 8 <= len(raw) <= 64 or not raw.isascii() or not raw.isprintable():
        raise invalid_field("Idempotency-Key", "missing or malformed (8 to 64 printable ASCII characters)")
    return raw


_NO_STORE = {"Cache-Control": "no-store"}  # a code is not kept by caches on the way


class SaleManageController(Controller):
    """The organiser sets up a session's sale (signed; events:publish). Another organiser's session is a 404."""

    path = "/api/v1/tickets/sessions"
    tags = ["tickets"]
    dependencies = MACHINE

    @put(
        "/{session_id:uuid}/sale",
        status_code=HTTP_200_OK,
        summary="Set up or change a session's ticket sale: classes, window, per-person limit, queue (signed)",
        description=(
            "Classes are matched by name. A class with tickets sold or held keeps its price and section, its quota "
            "cannot go below what is taken, and it cannot be removed. 400 names the field at fault; 404 for a "
            "session that is not yours; 409 for a cancelled or finished session."
        ),
        opt=problems(403, 404, 409),
    )
    async def set_up(
        self,
        session_id: uuid.UUID,
        data: SaleSetup,
        tickets: TicketService,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> SaleView:
        if PUBLISH_SCOPE not in machine.scopes:
            raise forbidden(f"this credential lacks the scope {PUBLISH_SCOPE}")
        facts = await events.session_facts(db, session_id)
        return await tickets.set_up_sale(db, machine.organisation_id, facts, data)


class SaleController(Controller):
    """A session's sale as anyone reads it (no token): classes, what is left, the window and its state."""

    path = "/api/v1/tickets/sessions"
    tags = ["tickets"]

    @get(
        "/{session_id:uuid}",
        summary="A session's ticket sale: classes with what is left, the sale window, the queue, the state",
        description="Served from memory for up to a second: what is left may lag by that much.",
        opt=problems(404),
    )
    async def sale(self, session_id: uuid.UUID, tickets: TicketService) -> SaleView:
        return await tickets.sale(tickets.pool, session_id)

    @post(
        "/{session_id:uuid}/queue",
        status_code=HTTP_200_OK,
        summary="Join the session's queue (real-name L2): position, estimate, and the pass once admitted",
        description=(
            "Residents are admitted in the order they joined at the sale's rate from its opening; joining again "
            "answers the same place. Nobody waiting: admitted at once. The pass (`pass_token`) goes with the "
            "hold; it is bound to the resident and the session and lives ten minutes (poll again for a new one)."
        ),
        opt=problems(403, 404, 409),
    )
    async def join(
        self, session_id: uuid.UUID, tickets: TicketService, resident: ResidentPrincipal
    ) -> QueueView:
        # No request transaction: the queue is Redis once the worker knows the sale and the buyer.
        return await tickets.queue_place(tickets.pool, resident, session_id, join=True)

    @get(
        "/{session_id:uuid}/queue",
        summary="My place in the session's queue (404 before joining)",
        opt=problems(403, 404, 409),
    )
    async def place(
        self, session_id: uuid.UUID, tickets: TicketService, resident: ResidentPrincipal
    ) -> QueueView:
        # No request transaction: the queue is Redis once the worker knows the sale and the buyer.
        return await tickets.queue_place(tickets.pool, resident, session_id, join=False)


class HoldController(Controller):
    """Holding tickets while paying, and paying (bearer token, real-name L2)."""

    path = "/api/v1/tickets/holds"
    tags = ["tickets"]

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Hold tickets of a class, one per attendee, while paying (real-name L2; the queue's pass)",
        description=(
            "Each attendee is the buyer (no fields) or a person named with name and ID number. 409 `sold-out` "
            "(Retry-After) when none are left; 409 `per-person-limit` naming the attendee; 409 `sale-not-open` "
            "with Retry-After; 403 `queue-pass-required` (Retry-After) without a valid pass while the queue is on; "
            "403 `real-name-required` below L2; 400 naming the field at fault."
        ),
        opt=problems(403, 404, 409),
        security=RESIDENT_SECURITY,
    )
    async def hold(self, request: AnyRequest, data: HoldCreate) -> HoldView:
        # The buy endpoint is a hot path (decision 0001): the caller and the service come from the app state, and
        # the resident's session and rate checks ride in the sold-out gate's Redis round trip. No request
        # transaction: a sold-out class is refused before any connection is taken.
        state = request.app.state
        principal, checks = state.identity.auth.check_token(request.headers.get("authorization"))
        tickets: TicketService = state.tickets
        return await tickets.hold(tickets.pool, principal, data, checks)

    @get("/{hold_id:uuid}", summary="One of my holds with its tickets and order", opt=problems(404))
    async def one(
        self, hold_id: uuid.UUID, tickets: TicketService, db: Connection, resident: ResidentPrincipal
    ) -> HoldView:
        return await tickets.hold_view(db, resident.resident_id, hold_id)

    @post(
        "/{hold_id:uuid}/pay",
        status_code=HTTP_200_OK,
        summary="Pay a hold (Idempotency-Key): its one payment order and what the client pays with",
        description=(
            "A hold has one order for life: asked again (any key), the same order. 409 `hold-ended` when the hold "
            "expired or was released; 503 (Retry-After) when the channel did not answer: retry."
        ),
        opt=problems(404, 409, 422, 502),
    )
    async def pay(
        self,
        request: AnyRequest,
        hold_id: uuid.UUID,
        data: PayCreate,
        tickets: TicketService,
        resident: ResidentPrincipal,
        idempotency_key: str | None = Parameter(header="Idempotency-Key", default=None),
    ) -> HoldView:
        # No request transaction: the order is committed with the hold before the channel is asked.
        _key(idempotency_key)
        return await tickets.pay(
            tickets.pool, resident.resident_id, hold_id, data, client_ip(request) or "127.0.0.1"
        )


class TicketController(Controller):
    """My tickets (bearer token): attendees masked; returns before the sale's cut-off."""

    path = "/api/v1/tickets"
    tags = ["tickets"]

    @get("", summary="My tickets, newest first")
    async def mine(
        self, tickets: TicketService, db: Connection, resident: ResidentPrincipal, limit: Limit = 100
    ) -> TicketList:
        return TicketList(tickets=await tickets.tickets_of(db, resident.resident_id, limit))

    @get("/{ticket_id:uuid}", summary="One of my tickets", opt=problems(404))
    async def one(
        self, ticket_id: uuid.UUID, tickets: TicketService, db: Connection, resident: ResidentPrincipal
    ) -> TicketView:
        return await tickets.ticket_of(db, resident.resident_id, ticket_id)

    @get(
        "/{ticket_id:uuid}/printed-code",
        summary="A paid ticket's own code, for an attendee without a phone (admits once, online and offline)",
        opt=problems(404, 409),
    )
    async def printed_code(
        self, ticket_id: uuid.UUID, tickets: TicketService, db: Connection, resident: ResidentPrincipal
    ) -> Response[PrintedTicket]:
        return Response(await tickets.printed(db, resident.resident_id, ticket_id), headers=_NO_STORE)

    @get(
        "/{ticket_id:uuid}/printed-code.png",
        summary="The printed code as a PNG to print",
        media_type="image/png",
        opt=problems(404, 409),
    )
    async def printed_png(
        self, ticket_id: uuid.UUID, tickets: TicketService, db: Connection, resident: ResidentPrincipal
    ) -> Response[bytes]:
        printed = await tickets.printed(db, resident.resident_id, ticket_id)
        image = io.BytesIO()
        segno.make(printed.code, error="m", micro=False).save(image, kind="png", scale=6, border=4)
        return Response(image.getvalue(), media_type="image/png", headers=_NO_STORE)

    @post(
        "/{ticket_id:uuid}/return",
        status_code=HTTP_200_OK,
        summary="Return a paid ticket before the sale's cut-off: refunded to where it was paid from",
        description=(
            "Returning a returned ticket answers it again. 409 `return-closed` after the cut-off, `ticket-used` "
            "once admitted, `ticket-not-paid` for a ticket not paid."
        ),
        opt=problems(404, 409),
    )
    async def give_back(
        self, ticket_id: uuid.UUID, tickets: TicketService, resident: ResidentPrincipal
    ) -> Response[TicketView]:
        return Response(await tickets.give_back(tickets.pool, resident.resident_id, ticket_id))
