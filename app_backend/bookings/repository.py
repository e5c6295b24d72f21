"""All of venue booking's SQL. Places move only by conditional updates of the slot's counters (`booked`, `held`),
whose CHECK is the no-oversell rule; a booking's status moves only by compare-and-set."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows


class _Undo(Exception):
    """Rolls a savepoint back."""


class FacilityRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    venue_id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    kind: str
    created_at: dt.datetime


class SlotRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    facility_id: uuid.UUID
    facility: str
    kind: str
    venue_id: uuid.UUID
    organiser_id: uuid.UUID
    starts_at: dt.datetime
    ends_at: dt.datetime
    capacity: int
    price_fen: int
    book_until: dt.datetime
    cancel_until: dt.datetime
    booked: int
    held: int
    status: str
    cancel_reason: str | None


class BookingRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slot_id: uuid.UUID
    resident_id: uuid.UUID
    places: int
    amount_fen: int
    order_id: uuid.UUID
    pay: dict[str, object] | None
    status: str
    hold_expires_at: dt.datetime
    cancelled_by: str | None
    refund: str | None
    refund_id: uuid.UUID | None
    admitted_at: dt.datetime | None
    no_show_at: dt.datetime | None
    created_at: dt.datetime
    # the slot's
    venue_id: uuid.UUID
    organiser_id: uuid.UUID
    facility: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    cancel_until: dt.datetime
    slot_status: str


class RequestRow(msgspec.Struct, frozen=True):
    request_hash: bytes
    booking_id: uuid.UUID | None


class SlotCounts(msgspec.Struct, frozen=True):
    admitted: int
    no_shows: int


_SLOT = """s.id, s.facility_id, f.name AS facility, f.kind, s.venue_id, s.organiser_id, s.starts_at, s.ends_at,
           s.capacity, s.price_fen, s.book_until, s.cancel_until, s.booked, s.held, s.status, s.cancel_reason"""
_SLOT_FROM = "bookings.slots s JOIN bookings.facilities f ON f.id = s.facility_id"
_BOOKING = """b.id, b.slot_id, b.resident_id, b.places, b.amount_fen, b.order_id, b.pay, b.status,
              b.hold_expires_at, b.cancelled_by, b.refund, b.refund_id, b.admitted_at, b.no_show_at, b.created_at,
              s.venue_id, s.organiser_id, f.name AS facility, s.starts_at, s.ends_at, s.cancel_until,
              s.status AS slot_status"""
_BOOKING_FROM = """bookings.bookings b JOIN bookings.slots s ON s.id = b.slot_id
                   JOIN bookings.facilities f ON f.id = s.facility_id"""


class BookingRepository:
    # -- facilities and slots -------------------------------------------------------------------------------------

    async def add_facility(
        self, conn: Connection, venue_id: uuid.UUID, organiser_id: uuid.UUID, name: str, kind: str
    ) -> FacilityRow | None:
        """None when the venue already has a facility of that name."""
        return await fetch_row(
            conn,
            FacilityRow,
            """INSERT INTO bookings.facilities (venue_id, organiser_id, name, kind) VALUES ($1, $2, $3, $4)
               ON CONFLICT (venue_id, name) DO NOTHING
               RETURNING id, venue_id, organiser_id, name, kind, created_at""",
            venue_id,
            organiser_id,
            name,
            kind,
        )

    async def facilities(self, conn: Connection, venue_id: uuid.UUID) -> list[FacilityRow]:
        return await fetch_rows(
            conn,
            FacilityRow,
            """SELECT id, venue_id, organiser_id, name, kind, created_at FROM bookings.facilities
               WHERE venue_id = $1 ORDER BY name""",
            venue_id,
        )

    async def facility(self, conn: Connection, facility_id: uuid.UUID) -> FacilityRow | None:
        return await fetch_row(
            conn,
            FacilityRow,
            "SELECT id, venue_id, organiser_id, name, kind, created_at FROM bookings.facilities WHERE id = $1",
            facility_id,
        )

    async def add_slots(
        self,
        conn: Connection,
        facility: FacilityRow,
        times: list[tuple[dt.datetime, dt.datetime]],
        capacity: int,
        price_fen: int,
        booking_cutoff: dt.timedelta,
        cancellation_cutoff: dt.timedelta,
    ) -> list[uuid.UUID] | None:
        """The new slots' ids; None when one starts when a slot of the facility already does."""
        try:
            async with conn.transaction():
                rows = await conn.fetch(
                    """INSERT INTO bookings.slots (facility_id, venue_id, organiser_id, starts_at, ends_at, capacity,
                                                  price_fen, book_until, cancel_until)
                       SELECT $1, $2, $3, t.starts_at, t.ends_at, $6, $7, t.starts_at - $8::interval,
                              t.starts_at - $9::interval
                       FROM unnest($4::timestamptz[], $5::timestamptz[]) AS t(starts_at, ends_at)
                       RETURNING id""",
                    facility.id,
                    facility.venue_id,
                    facility.organiser_id,
                    [t[0] for t in times],
                    [t[1] for t in times],
                    capacity,
                    price_fen,
                    booking_cutoff,
                    cancellation_cutoff,
                )
        except asyncpg.UniqueViolationError:
            return None
        return [r["id"] for r in rows]

    async def slot(self, conn: Connection, slot_id: uuid.UUID) -> SlotRow | None:
        return await fetch_row(conn, SlotRow, f"SELECT {_SLOT} FROM {_SLOT_FROM} WHERE s.id = $1", slot_id)

    async def slots_by_ids(self, conn: Connection, ids: list[uuid.UUID]) -> list[SlotRow]:
        return await fetch_rows(
            conn, SlotRow, f"SELECT {_SLOT} FROM {_SLOT_FROM} WHERE s.id = ANY($1) ORDER BY s.starts_at", ids
        )

    async def venue_slots(
        self, conn: Connection, venue_id: uuid.UUID, start: dt.datetime, end: dt.datetime
    ) -> list[SlotRow]:
        """One statement on the (venue, start) index: the public read of a day."""
        return await fetch_rows(
            conn,
            SlotRow,
            f"""SELECT {_SLOT} FROM {_SLOT_FROM}
                WHERE s.venue_id = $1 AND s.starts_at >= $2 AND s.starts_at < $3
                ORDER BY s.starts_at, f.name""",
            venue_id,
            start,
            end,
        )

    async def slot_counts(self, conn: Connection, slot_id: uuid.UUID) -> SlotCounts:
        row = await fetch_row(
            conn,
            SlotCounts,
            """SELECT count(*) FILTER (WHERE admitted_at IS NOT NULL)::int AS admitted,
                      count(*) FILTER (WHERE no_show_at IS NOT NULL)::int AS no_shows
               FROM bookings.bookings WHERE slot_id = $1 AND status = 'paid'""",
            slot_id,
        )
        assert row is not None  # an aggregate has a row
        return row

    async def cancel_slot(self, conn: Connection, slot_id: uuid.UUID, reason: str) -> bool:
        result: str = await conn.execute(
            "UPDATE bookings.slots SET status = 'cancelled', cancel_reason = $2 WHERE id = $1 AND status = 'open'",
            slot_id,
            reason,
        )
        return result.endswith(" 1")

    # -- places: the conditional updates --------------------------------------------------------------------------

    async def hold_places(self, conn: Connection, slot_id: uuid.UUID, places: int, now: dt.datetime) -> bool:
        """Holds `places` when the slot is open for booking and has them: booked + held never passes capacity."""
        result: str = await conn.execute(
            """UPDATE bookings.slots SET held = held + $2
               WHERE id = $1 AND status = 'open' AND book_until > $3 AND booked + held + $2 <= capacity""",
            slot_id,
            places,
            now,
        )
        return result.endswith(" 1")

    async def release_held(self, conn: Connection, slot_id: uuid.UUID, places: int) -> None:
        await conn.execute("UPDATE bookings.slots SET held = held - $2 WHERE id = $1", slot_id, places)

    async def held_to_booked(self, conn: Connection, slot_id: uuid.UUID, places: int) -> None:
        await conn.execute(
            "UPDATE bookings.slots SET held = held - $2, booked = booked + $2 WHERE id = $1", slot_id, places
        )

    async def book_again(
        self, conn: Connection, booking_id: uuid.UUID, slot_id: uuid.UUID, places: int
    ) -> bool:
        """A payment for a released hold: the booking is paid after all when the open slot still has the places
        and the resident has no other live booking of it (in a savepoint: a refusal leaves the caller's
        transaction, the payment's, intact)."""
        try:
            async with conn.transaction():
                result: str = await conn.execute(
                    """UPDATE bookings.slots SET booked = booked + $2
                       WHERE id = $1 AND status = 'open' AND booked + held + $2 <= capacity""",
                    slot_id,
                    places,
                )
                if not result.endswith(" 1"):
                    return False
                moved: str = await conn.execute(
                    """UPDATE bookings.bookings SET status = 'paid', updated_at = now()
                       WHERE id = $1 AND status = 'released'""",
                    booking_id,
                )
                if not moved.endswith(" 1"):
                    raise _Undo
        except (asyncpg.UniqueViolationError, _Undo):
            return False
        return True

    async def owe_refund(self, conn: Connection, booking_id: uuid.UUID, cancelled_by: str) -> None:
        """Money for a booking that is gone: cancelled, its refund due."""
        await conn.execute(
            """UPDATE bookings.bookings SET status = 'cancelled', cancelled_by = $2, refund = 'due',
                      updated_at = now()
               WHERE id = $1 AND status IN ('released', 'cancelled') AND refund IS NULL""",
            booking_id,
            cancelled_by,
        )

    async def release_booked(self, conn: Connection, slot_id: uuid.UUID, places: int) -> None:
        await conn.execute("UPDATE bookings.slots SET booked = booked - $2 WHERE id = $1", slot_id, places)

    # -- idempotency keys -----------------------------------------------------------------------------------------

    async def claim_key(self, conn: Connection, resident_id: uuid.UUID, key: str, digest: bytes) -> bool:
        """True when the key is new (claimed by this transaction); a concurrent first use waits here."""
        result: str = await conn.execute(
            """INSERT INTO bookings.requests (resident_id, key, request_hash) VALUES ($1, $2, $3)
               ON CONFLICT (resident_id, key) DO NOTHING""",
            resident_id,
            key,
            digest,
        )
        return result.endswith(" 1")

    async def request(self, conn: Connection, resident_id: uuid.UUID, key: str) -> RequestRow | None:
        return await fetch_row(
            conn,
            RequestRow,
            "SELECT request_hash, booking_id FROM bookings.requests WHERE resident_id = $1 AND key = $2",
            resident_id,
            key,
        )

    async def keyed(self, conn: Connection, resident_id: uuid.UUID, key: str, booking_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE bookings.requests SET booking_id = $3 WHERE resident_id = $1 AND key = $2",
            resident_id,
            key,
            booking_id,
        )

    # -- bookings -------------------------------------------------------------------------------------------------

    async def insert_booking(
        self,
        conn: Connection,
        slot_id: uuid.UUID,
        resident_id: uuid.UUID,
        places: int,
        amount_fen: int,
        order_id: uuid.UUID,
        hold_expires_at: dt.datetime,
    ) -> uuid.UUID | None:
        """None when the resident already has a live booking of the slot."""
        try:
            async with conn.transaction():
                booking_id: uuid.UUID = await conn.fetchval(
                    """INSERT INTO bookings.bookings (slot_id, resident_id, places, amount_fen, order_id,
                                                      hold_expires_at)
                       VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                    slot_id,
                    resident_id,
                    places,
                    amount_fen,
                    order_id,
                    hold_expires_at,
                )
        except asyncpg.UniqueViolationError:
            return None
        return booking_id

    async def live_booking_of(self, conn: Connection, slot_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        found = await conn.fetchval(
            """SELECT 1 FROM bookings.bookings WHERE slot_id = $1 AND resident_id = $2
                                                   AND status IN ('held', 'paid')""",
            slot_id,
            resident_id,
        )
        return found is not None

    async def set_pay(self, conn: Connection, booking_id: uuid.UUID, pay: dict[str, object]) -> None:
        await conn.execute("UPDATE bookings.bookings SET pay = $2 WHERE id = $1", booking_id, pay)

    async def booking(self, conn: Connection, booking_id: uuid.UUID) -> BookingRow | None:
        return await fetch_row(
            conn, BookingRow, f"SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.id = $1", booking_id
        )

    async def booking_of_order(self, conn: Connection, order_id: uuid.UUID) -> BookingRow | None:
        """The booking an order pays for, locked: its listeners (paid, closed) move it one at a time."""
        return await fetch_row(
            conn,
            BookingRow,
            f"SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.order_id = $1 FOR UPDATE OF b",
            order_id,
        )

    async def bookings_of(self, conn: Connection, resident_id: uuid.UUID, limit: int) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.resident_id = $1
                ORDER BY b.created_at DESC LIMIT $2""",
            resident_id,
            limit,
        )

    async def move(
        self,
        conn: Connection,
        booking_id: uuid.UUID,
        before: str,
        after: str,
        *,
        cancelled_by: str | None = None,
        refund: str | None = None,
    ) -> bool:
        """Compare-and-set of a booking's status (with who cancelled it and whether a refund is due)."""
        result: str = await conn.execute(
            """UPDATE bookings.bookings
               SET status = $3, cancelled_by = coalesce($4, cancelled_by), refund = coalesce($5, refund),
                   updated_at = now()
               WHERE id = $1 AND status = $2""",
            booking_id,
            before,
            after,
            cancelled_by,
            refund,
        )
        return result.endswith(" 1")

    async def expired_holds(self, conn: Connection, now: dt.datetime, limit: int) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.status = 'held' AND b.hold_expires_at <= $1
                ORDER BY b.hold_expires_at LIMIT $2""",
            now,
            limit,
        )

    async def expire_holds_of_slot(self, conn: Connection, slot_id: uuid.UUID, now: dt.datetime) -> None:
        """A cancelled slot's holds end now: the expiry job closes their orders."""
        await conn.execute(
            """UPDATE bookings.bookings SET hold_expires_at = $2, updated_at = now()
               WHERE slot_id = $1 AND status = 'held' AND hold_expires_at > $2""",
            slot_id,
            now,
        )

    async def cancel_paid_of_slot(self, conn: Connection, slot_id: uuid.UUID) -> list[BookingRow]:
        """Every paid booking of a cancelled slot: cancelled by the organiser, its refund due."""
        rows = await conn.fetch(
            """UPDATE bookings.bookings SET status = 'cancelled', cancelled_by = 'organiser', refund = 'due',
                      updated_at = now()
               WHERE slot_id = $1 AND status = 'paid' RETURNING id""",
            slot_id,
        )
        return [b for r in rows if (b := await self.booking(conn, r["id"])) is not None]

    async def holders_of_slot(self, conn: Connection, slot_id: uuid.UUID) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.slot_id = $1 AND b.status = 'held'",
            slot_id,
        )

    async def refunds_due(self, conn: Connection, limit: int) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.refund = 'due' ORDER BY b.updated_at LIMIT $1""",
            limit,
        )

    async def refund_asked(
        self, conn: Connection, booking_id: uuid.UUID, refund_id: uuid.UUID | None, outcome: str
    ) -> None:
        await conn.execute(
            """UPDATE bookings.bookings SET refund = $3, refund_id = coalesce($2, refund_id), updated_at = now()
               WHERE id = $1 AND refund = 'due'""",
            booking_id,
            refund_id,
            outcome,
        )

    # -- entry ----------------------------------------------------------------------------------------------------

    async def booking_at_gate(
        self,
        conn: Connection,
        slot_id: uuid.UUID,
        resident_id: uuid.UUID | None,
        booking_id: uuid.UUID | None,
    ) -> BookingRow | None:
        """The resident's (or the printed booking's) booking of the slot: the paid one first, then the latest."""
        return await fetch_row(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM}
                WHERE b.slot_id = $1 AND ($2::uuid IS NULL OR b.resident_id = $2)
                      AND ($3::uuid IS NULL OR b.id = $3) AND ($2::uuid IS NOT NULL OR $3::uuid IS NOT NULL)
                ORDER BY (b.status = 'paid') DESC, b.created_at DESC LIMIT 1""",
            slot_id,
            resident_id,
            booking_id,
        )

    async def admit(
        self, conn: Connection, booking_id: uuid.UUID, verifier_id: uuid.UUID, at: dt.datetime
    ) -> bool:
        """Compare-and-set: a paid booking is admitted once, whichever gate scans first."""
        result: str = await conn.execute(
            """UPDATE bookings.bookings SET admitted_at = $3, admitted_by = $2, updated_at = now()
               WHERE id = $1 AND status = 'paid' AND admitted_at IS NULL""",
            booking_id,
            verifier_id,
            at,
        )
        return result.endswith(" 1")

    async def paid_of_slot(self, conn: Connection, slot_id: uuid.UUID) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM} WHERE b.slot_id = $1 AND b.status = 'paid'
                ORDER BY b.created_at""",
            slot_id,
        )

    # -- no-shows -------------------------------------------------------------------------------------------------

    async def ended_slots(self, conn: Connection, before: dt.datetime, limit: int) -> list[uuid.UUID]:
        rows = await conn.fetch(
            """SELECT id FROM bookings.slots WHERE status = 'open' AND NOT no_shows_marked AND ends_at <= $1
               ORDER BY ends_at LIMIT $2""",
            before,
            limit,
        )
        return [r["id"] for r in rows]

    async def mark_no_shows(self, conn: Connection, slot_id: uuid.UUID) -> list[uuid.UUID]:
        """Marks the ended slot's paid, never admitted bookings as no-shows, once (the slot's flag is claimed
        first); the residents marked."""
        claimed = await conn.execute(
            "UPDATE bookings.slots SET no_shows_marked = true WHERE id = $1 AND NOT no_shows_marked", slot_id
        )
        if not claimed.endswith(" 1"):
            return []
        rows = await conn.fetch(
            """UPDATE bookings.bookings b SET no_show_at = s.ends_at, updated_at = now()
               FROM bookings.slots s
               WHERE s.id = b.slot_id AND b.slot_id = $1 AND b.status = 'paid' AND b.admitted_at IS NULL
                     AND b.no_show_at IS NULL
               RETURNING b.resident_id""",
            slot_id,
        )
        return [r["resident_id"] for r in rows]

    async def no_shows_of(
        self, conn: Connection, resident_id: uuid.UUID, since: dt.datetime
    ) -> list[BookingRow]:
        return await fetch_rows(
            conn,
            BookingRow,
            f"""SELECT {_BOOKING} FROM {_BOOKING_FROM}
                WHERE b.resident_id = $1 AND b.no_show_at IS NOT NULL AND b.no_show_at > $2
                ORDER BY b.no_show_at DESC""",
            resident_id,
            since,
        )

    async def restriction_since(self, conn: Connection, resident_id: uuid.UUID) -> dt.datetime | None:
        since: dt.datetime | None = await conn.fetchval(
            "SELECT since FROM bookings.restrictions WHERE resident_id = $1", resident_id
        )
        return since

    async def restricted_until(
        self, conn: Connection, resident_id: uuid.UUID, now: dt.datetime
    ) -> dt.datetime | None:
        until: dt.datetime | None = await conn.fetchval(
            "SELECT until FROM bookings.restrictions WHERE resident_id = $1 AND until > $2", resident_id, now
        )
        return until

    async def restrict(
        self, conn: Connection, resident_id: uuid.UUID, since: dt.datetime, until: dt.datetime, no_shows: int
    ) -> None:
        await conn.execute(
            """INSERT INTO bookings.restrictions (resident_id, since, until, no_shows) VALUES ($1, $2, $3, $4)
               ON CONFLICT (resident_id) DO UPDATE SET since = $2, until = $3, no_shows = $4""",
            resident_id,
            since,
            until,
            no_shows,
        )
