"""HTTP for venue booking: a venue's slots for anyone (no token), residents' bookings (bearer token; booking needs
real-name L2), and the venue organiser's facilities and slots (signed machine requests, scope events:publish)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app_backend.bookings.schemas import (
    Booking,
    BookingCreate,
    Bookings,
    Facilities,
    Facility,
    FacilityCreate,
    NoShows,
    OrganiserSlot,
    OrganiserSlots,
    SlotCancel,
    SlotsCreate,
    VenueSlots,
)
from app_backend.bookings.service import PUBLISH_SCOPE
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.clock import business_day
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden, invalid_field
from app_backend.kernel.http import client_ip, problems
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import MachinePrincipal

if TYPE_CHECKING:
    from app_backend.bookings.service import BookingService

AnyRequest = Request[Any, Any, Any]
DateParam = Annotated[dt.date | None, Parameter(description="the day (Beijing time); absent: today")]
Limit = Annotated[int, Parameter(ge=1, le=200)]


def _organiser(machine: MachinePrincipal) -> uuid.UUID:
    if PUBLISH_SCOPE not in machine.scopes:
        raise forbidden(f"this credential lacks the scope {PUBLISH_SCOPE}")
    return machine.organisation_id


def _key(raw: str | None) -> str:
    if not raw or not 8 <= len(raw) <= 64 or not raw.isascii() or not raw.isprintable():
        raise invalid_field("Idempotency-Key", "missing or malformed (8 to 64 printable ASCII characters)")
    return raw


class VenueSlotsController(Controller):
    """What anyone may read: a venue's slots on a day with the places left."""

    path = "/api/v1/bookings/venues"
    tags = ["bookings"]

    @get(
        "/{venue_id:uuid}/slots",
        summary="A venue's bookable slots on a day, with the places left (no token needed)",
        description="`status`: open, full, closed (past its booking cut-off) or cancelled. 404 for no such venue.",
        opt=problems(404),
    )
    async def slots(
        self, venue_id: uuid.UUID, bookings: BookingService, db: Connection, date: DateParam = None
    ) -> VenueSlots:
        return await bookings.venue_slots(db, venue_id, date or business_day())


class BookingController(Controller):
    """A resident's bookings (bearer token)."""

    path = "/api/v1/bookings"
    tags = ["bookings"]

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Book places in a slot (Idempotency-Key header required): held while the resident pays its order",
        description=(
            "Real-name (L2) residents only (403 `level-required`); 403 `booking-restricted` after repeated "
            "no-shows, saying until when (`restricted_until`). 409 `slot-full`, `slot-cancelled`, `booking-closed`, "
            "`already-booked`. The answer carries the order and its pay instructions (`pay`); the places are held "
            "until `hold_expires_at`, then released unless paid. 503: the channel did not answer; retry with the "
            "same key (the same booking and order)."
        ),
        opt=problems(403, 404, 409, 422, 502, 503),
    )
    async def book(
        self,
        request: AnyRequest,
        data: BookingCreate,
        bookings: BookingService,
        resident: ResidentPrincipal,
        idempotency_key: str | None = Parameter(header="Idempotency-Key", default=None),
    ) -> Booking:
        # No request transaction: the hold and its order are committed before the channel is asked, and no
        # connection is held while a gateway is slow (BookingService.book).
        return await bookings.book(
            request.app.state.pool,
            resident.resident_id,
            _key(idempotency_key),
            data,
            client_ip(request) or "127.0.0.1",
        )

    @get("", summary="My bookings, newest first")
    async def mine(
        self, bookings: BookingService, resident: ResidentPrincipal, db: Connection, limit: Limit = 50
    ) -> Bookings:
        return await bookings.mine(db, resident.resident_id, limit)

    @get(
        "/no-shows",
        summary="My no-shows in the rule's window, and until when booking is limited",
    )
    async def no_shows(
        self, bookings: BookingService, resident: ResidentPrincipal, db: Connection
    ) -> NoShows:
        return await bookings.no_shows(db, resident.resident_id)

    @get("/{booking_id:uuid}", summary="One of my bookings", opt=problems(404))
    async def one(
        self, booking_id: uuid.UUID, bookings: BookingService, resident: ResidentPrincipal, db: Connection
    ) -> Booking:
        return await bookings.one(db, resident.resident_id, booking_id)

    @post(
        "/{booking_id:uuid}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel my booking: unpaid, its order is closed; paid, refunded before the cancellation cut-off",
        description=(
            "409 `cancellation-closed` after the slot's cancellation cut-off (`cancel_until`), 409 `booking-used` "
            "once admitted. Cancelling twice answers the same booking."
        ),
        opt=problems(404, 409, 502, 503),
    )
    async def cancel(
        self,
        request: AnyRequest,
        booking_id: uuid.UUID,
        bookings: BookingService,
        resident: ResidentPrincipal,
    ) -> Booking:
        # No request transaction: the order is closed at the channel and the refund asked outside any.
        return await bookings.cancel(request.app.state.pool, resident.resident_id, booking_id)


class VenueBookingManageController(Controller):
    """A venue organiser's facilities and slots (signed; events:publish). Another organiser's venue is a 404."""

    path = "/api/v1/bookings/manage"
    tags = ["bookings"]
    dependencies = MACHINE
    opt = problems(403, 404, 409)

    @post(
        "/venues/{venue_id:uuid}/facilities",
        status_code=HTTP_201_CREATED,
        summary="Offer a facility of my venue for booking: a court, pool, hall or field",
    )
    async def add_facility(
        self,
        venue_id: uuid.UUID,
        data: FacilityCreate,
        bookings: BookingService,
        machine: MachinePrincipal,
        db: Connection,
    ) -> Facility:
        return await bookings.add_facility(db, _organiser(machine), venue_id, data)

    @get("/venues/{venue_id:uuid}/facilities", summary="My venue's bookable facilities")
    async def facilities(
        self, venue_id: uuid.UUID, bookings: BookingService, machine: MachinePrincipal, db: Connection
    ) -> Facilities:
        return await bookings.facilities(db, _organiser(machine), venue_id)

    @post(
        "/facilities/{facility_id:uuid}/slots",
        status_code=HTTP_201_CREATED,
        summary="Add time slots to a facility, with capacity, price (fen) and the booking and cancellation cut-offs",
    )
    async def add_slots(
        self,
        facility_id: uuid.UUID,
        data: SlotsCreate,
        bookings: BookingService,
        machine: MachinePrincipal,
        db: Connection,
    ) -> OrganiserSlots:
        return await bookings.add_slots(db, _organiser(machine), facility_id, data)

    @get("/slots/{slot_id:uuid}", summary="One of my slots: places booked and held, admitted, no-shows")
    async def slot(
        self, slot_id: uuid.UUID, bookings: BookingService, machine: MachinePrincipal, db: Connection
    ) -> OrganiserSlot:
        return await bookings.organiser_slot(db, _organiser(machine), slot_id)

    @post(
        "/slots/{slot_id:uuid}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel a slot: every paid booking is refunded (by a job) and every holder told",
    )
    async def cancel_slot(
        self,
        slot_id: uuid.UUID,
        data: SlotCancel,
        bookings: BookingService,
        machine: MachinePrincipal,
        db: Connection,
    ) -> OrganiserSlot:
        return await bookings.cancel_slot(db, _organiser(machine), slot_id, data.reason)
