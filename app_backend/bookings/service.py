"""Venue booking (场馆预约): the rules. An organiser offers a venue's facilities in time slots; a real-named
resident holds places in a slot and pays for them through payments' orders (purpose `venue_booking`, the venue's
organiser as payee), or cancels, refunded through payments' refund path before the slot's cut-off; the one code
admits a paid booking once at the venue's gates; paid bookings never admitted are no-shows, and repeated no-shows
limit booking for a while (docs/decisions/0030-venue-booking.md).

Places: a slot's `booked + held` never passes its capacity, at any moment and under any concurrency, because
places move only by conditional updates of the slot's row (PostgreSQL is the truth, its CHECK the backstop).
Money: a hold ends by closing its order at the channel first (the expiry job, the resident's cancel), so money never
arrives for a booking that is gone without the booking learning it: the paid listener books a released hold again
when the slot still has the places, and otherwise makes its refund due (the refund job asks payments)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, Literal, Protocol

import msgspec
import structlog

from app_backend.bookings.repository import BookingRepository, BookingRow, FacilityRow, SlotRow
from app_backend.bookings.schemas import (
    Booking,
    BookingCreate,
    BookingRules,
    Bookings,
    Facilities,
    Facility,
    FacilityCreate,
    NoShow,
    NoShows,
    OrganiserSlot,
    OrganiserSlots,
    PublicSlot,
    SlotsCreate,
    VenueSlots,
)
from app_backend.events.schemas import VenueFacts
from app_backend.identity.service import ResidentDirectory
from app_backend.kernel import clock
from app_backend.kernel.admissions import Admission, Attendee
from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, conflict, forbidden, invalid_field, not_found
from app_backend.kernel.messages import PlatformMessage, SendMessage
from payments.channels.base import ChannelRefused, ChannelUnavailable
from payments.orders.schemas import OrderCreate, PayInstructions
from payments.orders.service import OrderService
from payments.refunds.schemas import RefundCreate
from payments.refunds.service import RefundService

_log = structlog.get_logger("bookings")
PURPOSE: Final[Literal["venue_booking"]] = "venue_booking"
PUBLISH_SCOPE = "events:publish"
SENDER = "bookings"
SENDER_NAME = "场馆预约"
MAX_SLOT = dt.timedelta(hours=24)
# Times and days outside these years are refused (a year-1 start at +14:00 or a year-9999 day would overflow when
# moved to UTC or by a day).
YEARS = (2000, 2099)


class PaidOrder(Protocol):
    """What booking reads of an order payments says is paid."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def purpose(self) -> str: ...


# (the caller's connection, a venue's id) -> the venue's facts, None when there is no such venue (EventsService).
VenueFactsOf = Callable[[Connection, uuid.UUID], Awaitable[VenueFacts | None]]


def _when(at: dt.datetime) -> str:
    return at.astimezone(BUSINESS_TZ).strftime("%Y-%m-%d %H:%M")


def _iso(at: dt.datetime) -> str:
    """An instant as the answers' JSON writes it (msgspec: RFC 3339, Z for UTC)."""
    return msgspec.json.encode(at).decode().strip('"')


def booking_view(row: BookingRow) -> Booking:
    return Booking(
        id=row.id,
        slot_id=row.slot_id,
        venue_id=row.venue_id,
        facility=row.facility,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        places=row.places,
        amount_fen=row.amount_fen,
        status=row.status,
        order_id=row.order_id,
        hold_expires_at=row.hold_expires_at,
        cancel_until=row.cancel_until,
        created_at=row.created_at,
        cancelled_by=row.cancelled_by,
        refund=row.refund,
        admitted_at=row.admitted_at,
        no_show=row.no_show_at is not None,
        pay=msgspec.convert(row.pay, PayInstructions) if row.pay and row.status == "held" else None,
    )


def public_slot(row: SlotRow, now: dt.datetime) -> PublicSlot:
    remaining = max(0, row.capacity - row.booked - row.held)
    if row.status == "cancelled":
        status = "cancelled"
    elif now >= row.book_until:
        status = "closed"
    else:
        status = "open" if remaining else "full"
    return PublicSlot(
        id=row.id,
        facility_id=row.facility_id,
        facility=row.facility,
        kind=row.kind,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        capacity=row.capacity,
        remaining=remaining,
        price_fen=row.price_fen,
        book_until=row.book_until,
        cancel_until=row.cancel_until,
        status=status,
    )


def organiser_slot(row: SlotRow, admitted: int = 0, no_shows: int = 0) -> OrganiserSlot:
    return OrganiserSlot(
        id=row.id,
        facility_id=row.facility_id,
        facility=row.facility,
        venue_id=row.venue_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        capacity=row.capacity,
        price_fen=row.price_fen,
        book_until=row.book_until,
        cancel_until=row.cancel_until,
        booked=row.booked,
        held=row.held,
        status=row.status,
        cancel_reason=row.cancel_reason,
        admitted=admitted,
        no_shows=no_shows,
    )


def _facility(row: FacilityRow) -> Facility:
    return Facility(id=row.id, venue_id=row.venue_id, name=row.name, kind=row.kind, created_at=row.created_at)


def _digest(data: BookingCreate) -> bytes:
    return hashlib.sha256(msgspec.json.encode(["bookings.book", data])).digest()


class BookingService:
    def __init__(
        self,
        orders: OrderService,
        refunds: RefundService,
        residents: ResidentDirectory,
        venue_facts: VenueFactsOf,
        rules: BookingRules,
        send: SendMessage | None = None,
    ) -> None:
        self.rules = rules
        self.clock: Callable[[], dt.datetime] = clock.now
        self._orders = orders
        self._refunds = refunds
        self._residents = residents
        self._venue_facts = venue_facts
        self._send = send
        self._repo = BookingRepository()
        self.admissions = BookingAdmissions(self, self._repo)

    def listen(self) -> None:
        """Hears payments' orders: a paid one books its hold, a closed one releases it (app_backend/bookings/
        module.py calls this once when the module starts)."""
        self._orders.on_paid(self.order_paid)
        self._orders.on_closed(self.order_closed)

    async def venue(self, conn: Connection, venue_id: uuid.UUID) -> VenueFacts | None:
        return await self._venue_facts(conn, venue_id)

    # -- the organiser --------------------------------------------------------------------------------------------

    async def _own_venue(self, conn: Connection, organiser_id: uuid.UUID, venue_id: uuid.UUID) -> VenueFacts:
        """Another organiser's venue is not found, as one that does not exist: ids are no oracle."""
        venue = await self._venue_facts(conn, venue_id)
        if venue is None or venue.organiser_id != organiser_id:
            raise not_found("venue not found")
        return venue

    async def _own_facility(
        self, conn: Connection, organiser_id: uuid.UUID, facility_id: uuid.UUID
    ) -> FacilityRow:
        facility = await self._repo.facility(conn, facility_id)
        if facility is None or facility.organiser_id != organiser_id:
            raise not_found("facility not found")
        await self._own_venue(conn, organiser_id, facility.venue_id)
        return facility

    async def _own_slot(self, conn: Connection, organiser_id: uuid.UUID, slot_id: uuid.UUID) -> SlotRow:
        slot = await self._repo.slot(conn, slot_id)
        if slot is None or slot.organiser_id != organiser_id:
            raise not_found("slot not found")
        return slot

    async def add_facility(
        self, conn: Connection, organiser_id: uuid.UUID, venue_id: uuid.UUID, data: FacilityCreate
    ) -> Facility:
        await self._own_venue(conn, organiser_id, venue_id)
        name = " ".join(data.name.split())
        if not name:
            raise invalid_field("name", "must contain text")
        row = await self._repo.add_facility(conn, venue_id, organiser_id, name, data.kind)
        if row is None:
            raise invalid_field("name", "the venue already has a facility of this name", 409)
        return _facility(row)

    async def facilities(self, conn: Connection, organiser_id: uuid.UUID, venue_id: uuid.UUID) -> Facilities:
        await self._own_venue(conn, organiser_id, venue_id)
        return Facilities(facilities=[_facility(r) for r in await self._repo.facilities(conn, venue_id)])

    async def add_slots(
        self, conn: Connection, organiser_id: uuid.UUID, facility_id: uuid.UUID, data: SlotsCreate
    ) -> OrganiserSlots:
        facility = await self._own_facility(conn, organiser_id, facility_id)
        now = self.clock()
        booking_cutoff = dt.timedelta(minutes=data.booking_cutoff_minutes)
        cancellation_cutoff = dt.timedelta(minutes=data.cancellation_cutoff_minutes)
        times: list[tuple[dt.datetime, dt.datetime]] = []
        for n, slot in enumerate(data.slots):
            for name, at in (("starts_at", slot.starts_at), ("ends_at", slot.ends_at)):
                if at.tzinfo is None:
                    raise invalid_field(
                        f"slots[{n}].{name}", "needs a time zone (RFC 3339: 2026-12-08T09:00:00+08:00)"
                    )
                if not YEARS[0] <= at.year <= YEARS[1]:
                    raise invalid_field(f"slots[{n}].{name}", f"must be in the years {YEARS[0]}-{YEARS[1]}")
            if slot.ends_at <= slot.starts_at:
                raise invalid_field(f"slots[{n}].ends_at", "must be after starts_at")
            if slot.ends_at - slot.starts_at > MAX_SLOT:
                raise invalid_field(f"slots[{n}].ends_at", "a slot lasts at most 24 hours")
            if slot.starts_at - booking_cutoff <= now:
                raise invalid_field(f"slots[{n}].starts_at", "bookings for this slot would already be closed")
            if any(slot.starts_at == earlier for earlier, _ in times):
                raise invalid_field(f"slots[{n}].starts_at", "another slot of this request starts then")
            times.append((slot.starts_at, slot.ends_at))
        ids = await self._repo.add_slots(
            conn, facility, times, data.capacity, data.price_fen, booking_cutoff, cancellation_cutoff
        )
        if ids is None:
            raise invalid_field("slots", "a slot of this facility already starts at one of these times", 409)
        return OrganiserSlots(slots=[organiser_slot(r) for r in await self._repo.slots_by_ids(conn, ids)])

    async def organiser_slot(
        self, conn: Connection, organiser_id: uuid.UUID, slot_id: uuid.UUID
    ) -> OrganiserSlot:
        slot = await self._own_slot(conn, organiser_id, slot_id)
        counts = await self._repo.slot_counts(conn, slot_id)
        return organiser_slot(slot, counts.admitted, counts.no_shows)

    async def cancel_slot(
        self, conn: Connection, organiser_id: uuid.UUID, slot_id: uuid.UUID, reason: str
    ) -> OrganiserSlot:
        """Cancels a slot in the organiser's transaction: every paid booking is cancelled with its refund due
        (the refund job asks payments), every hold ends now (the expiry job closes its order), and every holder is
        told (kind event_changed). Cancelling a cancelled slot again changes nothing."""
        slot = await self._own_slot(conn, organiser_id, slot_id)
        reason = " ".join(reason.split())
        if not reason:
            raise invalid_field("reason", "must contain text")
        now = self.clock()
        if slot.status == "open" and slot.ends_at <= now:
            raise conflict("this slot has ended and cannot be cancelled", "slot-ended")
        if slot.status == "open" and await self._repo.cancel_slot(conn, slot_id, reason):
            paid = await self._repo.cancel_paid_of_slot(conn, slot_id)
            places = sum(b.places for b in paid)
            if places:
                await self._repo.release_booked(conn, slot_id, places)
            held = await self._repo.holders_of_slot(conn, slot_id)
            await self._repo.expire_holds_of_slot(conn, slot_id, now)
            for booking in (*paid, *held):
                await self._tell_cancelled(conn, booking, reason, refunded=booking.status == "cancelled")
        return await self.organiser_slot(conn, organiser_id, slot_id)

    async def _tell_cancelled(
        self, conn: Connection, booking: BookingRow, reason: str, *, refunded: bool
    ) -> None:
        if self._send is None:
            return
        money = "已付款项将原路退回。" if refunded else "未付款的预约已失效。"
        await self._send(
            conn,
            booking.resident_id,
            PlatformMessage(
                kind="event_changed",
                title="场馆预约已取消",
                body=f"您预约的{booking.facility}（{_when(booking.starts_at)}）因“{reason[:100]}”取消。{money}",
                sender=SENDER,
                sender_name=SENDER_NAME,
                key=f"slot-cancelled:{booking.id}",
                params={"booking_id": str(booking.id)},
            ),
        )

    # -- residents: reading ---------------------------------------------------------------------------------------

    async def venue_slots(self, conn: Connection, venue_id: uuid.UUID, day: dt.date) -> VenueSlots:
        """A venue's slots starting on a day (Beijing time), with the places left: one statement on an index."""
        if not YEARS[0] <= day.year <= YEARS[1]:
            raise invalid_field("date", f"must be in the years {YEARS[0]}-{YEARS[1]}")
        if await self._venue_facts(conn, venue_id) is None:
            raise not_found("venue not found")
        start = dt.datetime.combine(day, dt.time(), BUSINESS_TZ)
        rows = await self._repo.venue_slots(conn, venue_id, start, start + dt.timedelta(days=1))
        now = self.clock()
        return VenueSlots(venue_id=venue_id, date=day, slots=[public_slot(r, now) for r in rows])

    async def mine(self, conn: Connection, resident_id: uuid.UUID, limit: int) -> Bookings:
        return Bookings(
            bookings=[booking_view(r) for r in await self._repo.bookings_of(conn, resident_id, limit)]
        )

    async def one(self, conn: Connection, resident_id: uuid.UUID, booking_id: uuid.UUID) -> Booking:
        return booking_view(await self._own_booking(conn, resident_id, booking_id))

    async def _own_booking(
        self, conn: Connection, resident_id: uuid.UUID, booking_id: uuid.UUID
    ) -> BookingRow:
        row = await self._repo.booking(conn, booking_id)
        if row is None or row.resident_id != resident_id:
            raise not_found("booking not found")
        return row

    async def no_shows(self, conn: Connection, resident_id: uuid.UUID) -> NoShows:
        now = self.clock()
        rows = await self._repo.no_shows_of(
            conn, resident_id, now - dt.timedelta(days=self.rules.no_show_window_days)
        )
        return NoShows(
            no_shows=[
                NoShow(booking_id=r.id, facility=r.facility, starts_at=r.starts_at, ends_at=r.ends_at)
                for r in rows
            ],
            limit=self.rules.no_show_limit,
            window_days=self.rules.no_show_window_days,
            restricted_until=await self._repo.restricted_until(conn, resident_id, now),
        )

    # -- residents: booking and paying ----------------------------------------------------------------------------

    async def book(
        self, pool: Pool, resident_id: uuid.UUID, key: str, data: BookingCreate, client_ip: str
    ) -> Booking:
        """Holds the places and opens the booking's order in one short transaction, under the resident's
        Idempotency-Key; asks the channel for pay instructions outside any transaction; stores them. When the
        channel does not answer, the booking stays held without instructions (503): the retry with the same key
        asks again for the same order (one out_trade_no for life, decision 0018)."""
        async with pool.acquire() as conn, conn.transaction():
            booking_id = await self._claim(conn, resident_id, key, data)
            row = await self._repo.booking(conn, booking_id)
            assert row is not None  # claimed in this transaction or an earlier one, never deleted
            order = await self._orders.order(conn, row.order_id)
            assert order is not None  # bookings.order_id names the order made with it
            payer = None
            if row.pay is None and row.status == "held":
                payer = await self._orders.payer_channel_id(
                    conn, resident_id, order.channel, order.method, data.payer_channel_id
                )
        if row.pay is not None or row.status != "held":
            return booking_view(row)
        try:
            pay = await self._orders.ask_channel(order, client_ip, payer)
        except ChannelUnavailable:
            raise DomainError(
                503,
                "service-unavailable",
                f"the {order.channel} gateway did not answer; retry with the same Idempotency-Key",
                headers={"Retry-After": "2"},
            ) from None
        except ChannelRefused as refused:
            _log.warning(
                "channel refused a booking's order", channel=order.channel, refusal=str(refused)[:200]
            )
            await self._end_hold(pool, row)
            raise DomainError(
                502,
                "channel-refused",
                f"the {order.channel} gateway refused this payment; the places are released",
            ) from None
        async with pool.acquire() as conn:
            await self._repo.set_pay(conn, row.id, msgspec.to_builtins(pay))
            stored = await self._repo.booking(conn, row.id)
        assert stored is not None
        return booking_view(stored)

    async def _claim(
        self, conn: Connection, resident_id: uuid.UUID, key: str, data: BookingCreate
    ) -> uuid.UUID:
        """The booking this key made, or a new one: the places held by a conditional update and the order
        claimed (not yet at the channel), in the caller's transaction."""
        digest = _digest(data)
        if not await self._repo.claim_key(conn, resident_id, key, digest):
            stored = await self._repo.request(conn, resident_id, key)
            assert (
                stored is not None and stored.booking_id is not None
            )  # claimed with its booking, never deleted
            if bytes(stored.request_hash) != digest:
                raise DomainError(
                    422,
                    "unprocessable-content",
                    "Idempotency-Key: this key was used with a different request",
                    extra={
                        "errors": [{"field": "Idempotency-Key", "message": "reused with a different body"}]
                    },
                )
            return stored.booking_id
        now = self.clock()
        if await self._residents.person_key_of(conn, resident_id) is None:
            raise forbidden("booking a venue needs real-name verification (L2)", "level-required")
        until = await self._repo.restricted_until(conn, resident_id, now)
        if until is not None:
            raise DomainError(
                403,
                "booking-restricted",
                f"after repeated no-shows you may book again from {_when(until)} (Beijing time)",
                extra={"restricted_until": _iso(until)},
            )
        if data.places > self.rules.max_places:
            raise invalid_field("places", f"at most {self.rules.max_places} places in one booking")
        slot = await self._repo.slot(conn, data.slot_id)
        if slot is None:
            raise invalid_field("slot_id", "no such slot", 404)
        if await self._repo.live_booking_of(conn, slot.id, resident_id):
            raise conflict("you already have a booking of this slot", "already-booked")
        if not await self._repo.hold_places(conn, slot.id, data.places, now):
            if slot.status == "cancelled":
                raise conflict("this slot is cancelled", "slot-cancelled")
            if now >= slot.book_until:
                raise conflict(f"booking for this slot closed at {_when(slot.book_until)}", "booking-closed")
            raise conflict("not enough places are left in this slot", "slot-full")
        amount = slot.price_fen * data.places
        order = await self._orders.claim(
            conn,
            resident_id,
            OrderCreate(
                purpose=PURPOSE,
                amount_fen=amount,
                subject=f"场馆预约 {slot.facility} {_when(slot.starts_at)}"[:128],
                payee_id=slot.organiser_id,
                channel=data.channel,
                method=data.method,
                payer_channel_id=data.payer_channel_id,
            ),
        )
        booking_id = await self._repo.insert_booking(
            conn,
            slot.id,
            resident_id,
            data.places,
            amount,
            order.id,
            now + dt.timedelta(seconds=self.rules.hold_seconds),
        )
        if booking_id is None:
            raise conflict("you already have a booking of this slot", "already-booked")
        await self._repo.keyed(conn, resident_id, key, booking_id)
        return booking_id

    async def cancel(self, pool: Pool, resident_id: uuid.UUID, booking_id: uuid.UUID) -> Booking:
        """A held booking: its order is closed at the channel first, then the places go. A paid one before the
        slot's cancellation cut-off: cancelled, its places freed and its money refunded through payments' refund
        path (asked now; the refund job asks again while the channel does not answer). After the cut-off: 409.
        Cancelling twice is the same cancel."""
        async with pool.acquire() as conn:
            row = await self._own_booking(conn, resident_id, booking_id)
        if row.status == "held":
            outcome = await self._end_hold(pool, row)
            if outcome == "unknown":
                raise DomainError(
                    503,
                    "service-unavailable",
                    "the payment channel did not answer; retry",
                    headers={"Retry-After": "2"},
                )
            async with pool.acquire() as conn, conn.transaction():
                await self._repo.move(conn, row.id, "released", "cancelled", cancelled_by="resident")
                row = await self._own_booking(conn, resident_id, booking_id)
        if row.status == "paid":
            if row.admitted_at is not None:
                raise conflict("this booking was used at the gate", "booking-used")
            if self.clock() >= row.cancel_until:
                raise DomainError(
                    409,
                    "cancellation-closed",
                    f"bookings of this slot could be cancelled with a refund until {_when(row.cancel_until)}",
                    extra={"cancel_until": _iso(row.cancel_until)},
                )
            async with pool.acquire() as conn, conn.transaction():
                if await self._repo.move(
                    conn, row.id, "paid", "cancelled", cancelled_by="resident", refund="due"
                ):
                    await self._repo.release_booked(conn, row.slot_id, row.places)
            await self._refund(pool, row)
        async with pool.acquire() as conn:
            return booking_view(await self._own_booking(conn, resident_id, booking_id))

    # -- payments' listeners, in payments' transactions -----------------------------------------------------------

    async def order_paid(self, conn: Connection, order: PaidOrder) -> None:
        """Money arrived for a booking's order (once per order). A hold becomes paid; a hold released meanwhile is
        booked again when the open slot still has the places; otherwise (a cancelled slot, a full one, a booking
        the resident cancelled) the money is owed back: the refund job refunds it."""
        if order.purpose != PURPOSE:
            return
        row = await self._repo.booking_of_order(conn, order.id)
        if row is None:
            _log.error("a venue_booking order paid with no booking", order=str(order.id))
            return
        if row.status == "held":
            if row.slot_status == "open":
                await self._repo.move(conn, row.id, "held", "paid")
                await self._repo.held_to_booked(conn, row.slot_id, row.places)
                return
            await self._repo.move(conn, row.id, "held", "cancelled", cancelled_by="organiser", refund="due")
            await self._repo.release_held(conn, row.slot_id, row.places)
            return
        if row.status == "released" and await self._repo.book_again(conn, row.id, row.slot_id, row.places):
            return
        if row.status in ("released", "cancelled") and row.refund is None:
            by = row.cancelled_by or "late_payment"
            await self._repo.owe_refund(conn, row.id, by)
            _log.info("a booking's money came after its hold ended: refund due", booking=str(row.id))

    async def order_closed(self, conn: Connection, order_id: uuid.UUID) -> None:
        """A booking's order closed unpaid: its held places go back to the slot."""
        row = await self._repo.booking_of_order(conn, order_id)
        if row is not None and row.status == "held":
            await self._release(conn, row)

    async def _release(self, conn: Connection, row: BookingRow) -> None:
        if await self._repo.move(conn, row.id, "held", "released"):
            await self._repo.release_held(conn, row.slot_id, row.places)

    async def _end_hold(self, pool: Pool, row: BookingRow) -> str:
        """Ends a hold by closing its order at the channel first, then here (the closed listener releases the
        places): 'released'; 'paid' when the money came first (the paid listener recorded it); 'unknown' when the
        channel did not answer (the next run asks again)."""
        try:
            await self._orders.close_for_payer(pool, row.order_id, row.resident_id)
        except DomainError as refused:
            if refused.type == "order-paid":
                return "paid"
            if refused.status == 502:
                # The channel refused the close and its query found the trade unpaid (it never opened it): the
                # places go now; money that came after all is booked again or refunded by the paid listener.
                async with pool.acquire() as conn, conn.transaction():
                    locked = await self._repo.booking_of_order(conn, row.order_id)
                    if locked is not None and locked.status == "held":
                        await self._release(conn, locked)
                return "released"
            if refused.status == 503:
                return "unknown"
            raise
        return "released"

    async def _refund(self, pool: Pool, row: BookingRow) -> str:
        """Asks payments' refund path for a booking's whole amount, as its organiser, under the booking's own
        key (a retry is the same refund, decision 0018). 'requested', 'failed' (the channel refused, or nothing
        is left to refund: operations follow up) or 'due' (no answer yet: the refund job asks again)."""
        try:
            answer = await self._refunds.refund(
                pool,
                row.organiser_id,
                row.order_id,
                f"booking-refund:{row.id}",
                RefundCreate(amount_fen=row.amount_fen, reason=f"场馆预约取消 {row.facility}"[:256]),
            )
        except DomainError as refused:
            if refused.status == 409:
                _log.error("a booking's refund was refused", booking=str(row.id), detail=refused.detail)
                async with pool.acquire() as conn:
                    await self._repo.refund_asked(conn, row.id, None, "failed")
                return "failed"
            _log.warning("a booking's refund is still due", booking=str(row.id), detail=refused.detail)
            return "due"
        outcome = "failed" if answer.body.status == "failed" else "requested"
        async with pool.acquire() as conn:
            await self._repo.refund_asked(conn, row.id, answer.body.id, outcome)
        return outcome

    # -- jobs -----------------------------------------------------------------------------------------------------

    async def expire_holds(
        self, pool: Pool, *, now: dt.datetime | None = None, limit: int = 200
    ) -> dict[str, int]:
        """Ends every hold past its time: its order closed at the channel first (then the places go), so a
        payment racing the expiry ends as a booking or a refund, never as money without either."""
        counts = {"released": 0, "paid": 0, "unknown": 0}
        async with pool.acquire() as conn:
            due = await self._repo.expired_holds(conn, now or self.clock(), limit)
        for row in due:
            try:
                counts[await self._end_hold(pool, row)] += 1
            except DomainError as failed:  # one hold that cannot end now must not stop the others
                _log.error("a hold could not be ended", booking=str(row.id), detail=failed.detail)
                counts["unknown"] += 1
        return counts

    async def refund_due(self, pool: Pool, *, limit: int = 100) -> dict[str, int]:
        counts = {"requested": 0, "failed": 0, "due": 0}
        async with pool.acquire() as conn:
            due = await self._repo.refunds_due(conn, limit)
        for row in due:
            counts[await self._refund(pool, row)] += 1
        return counts

    async def mark_no_shows(
        self, pool: Pool, *, now: dt.datetime | None = None, limit: int = 100
    ) -> dict[str, int]:
        """After each slot ends: its paid bookings never admitted are no-shows (once per slot); a resident with
        `no_show_limit` no-shows within `no_show_window_days` may not book for `restriction_days`."""
        now = now or self.clock()
        counts = {"slots": 0, "no_shows": 0, "restricted": 0}
        async with pool.acquire() as conn:
            ended = await self._repo.ended_slots(conn, now, limit)
        for slot_id in ended:
            async with pool.acquire() as conn, conn.transaction():
                residents = await self._repo.mark_no_shows(conn, slot_id)
                counts["slots"] += 1
                counts["no_shows"] += len(residents)
                for resident_id in set(residents):
                    counts["restricted"] += await self._restrict_if_repeated(conn, resident_id, now)
        return counts

    async def _restrict_if_repeated(self, conn: Connection, resident_id: uuid.UUID, now: dt.datetime) -> int:
        since = now - dt.timedelta(days=self.rules.no_show_window_days)
        last = await self._repo.restriction_since(conn, resident_id)
        if last is not None and last > since:
            since = last  # no-shows that limited once never count again
        shows = await self._repo.no_shows_of(conn, resident_id, since)
        if len(shows) < self.rules.no_show_limit:
            return 0
        until = now + dt.timedelta(days=self.rules.restriction_days)
        await self._repo.restrict(conn, resident_id, now, until, len(shows))
        return 1


class BookingAdmissions:
    """The bookings' Admissions provider (app_backend/kernel/admissions.py): the occasion is a slot; a paid
    booking is admitted once (compare-and-set) by one of the venue's gates, from `gate_opens_minutes` before the
    slot starts until it ends. The gate sees the facility as the section (and the places when more than one),
    never a name."""

    def __init__(self, service: BookingService, repo: BookingRepository) -> None:
        self._service = service
        self._repo = repo

    async def _gate_slot(
        self, conn: Connection, slot_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> SlotRow | None:
        slot = await self._repo.slot(conn, slot_id)
        if slot is None:
            return None
        venue = await self._service.venue(conn, slot.venue_id)
        if venue is None or verifier_id not in venue.gate_verifiers:
            return None
        return slot

    async def admit(
        self,
        conn: Connection,
        occasion_id: uuid.UUID,
        entrance: str,
        verifier_id: uuid.UUID,
        at: dt.datetime,
        *,
        resident_id: uuid.UUID | None = None,
        ticket_id: uuid.UUID | None = None,
    ) -> Admission | None:
        slot = await self._gate_slot(conn, occasion_id, verifier_id)
        if slot is None:
            return None
        if slot.status == "cancelled":
            return Admission(admitted=False, reason="cancelled")
        opens = slot.starts_at - dt.timedelta(minutes=self._service.rules.gate_opens_minutes)
        if not opens <= at < slot.ends_at:
            return Admission(admitted=False, reason="not-open")
        if resident_id is None and ticket_id is None:
            return Admission(admitted=False, reason="no-ticket")
        row = await self._repo.booking_at_gate(conn, slot.id, resident_id, ticket_id)
        if row is None or row.status in ("held", "released"):
            return Admission(admitted=False, reason="no-ticket")
        if row.status == "cancelled":
            return Admission(admitted=False, reason="returned", ticket_id=row.id)
        seat = f"{row.places}人" if row.places > 1 else None
        if not await self._repo.admit(conn, row.id, verifier_id, at):
            return Admission(
                admitted=False, reason="already-admitted", ticket_id=row.id, section=row.facility
            )
        return Admission(admitted=True, reason="ok", ticket_id=row.id, section=row.facility, seat=seat)

    async def attendees(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> list[Attendee] | None:
        slot = await self._gate_slot(conn, occasion_id, verifier_id)
        if slot is None:
            return None
        if slot.status == "cancelled":
            return []
        return [
            Attendee(
                ticket_id=row.id,
                resident_id=row.resident_id,
                entrances=(),
                section=row.facility,
                seat=f"{row.places}人" if row.places > 1 else None,
            )
            for row in await self._repo.paid_of_slot(conn, slot.id)
        ]
