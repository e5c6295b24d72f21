"""Venue booking on the wire: what an organiser offers (facilities, slots), what residents read and book, and the
rules the city sets (holds, no-shows)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from payments.orders.schemas import PayInstructions

FacilityKind = Literal["court", "pool", "hall", "field", "other"]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=60 * 24 * 30)]


Positive = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


class BookingRules(msgspec.Struct, frozen=True, kw_only=True):
    """The city's booking rules (TZT_BOOKING_* in the environment, app_backend/bookings/module.py)."""

    hold_seconds: Positive = 600  # a hold lasts this long unpaid; shorter than payments' order TTL (15 min)
    max_places: Positive = 10  # places in one booking
    gate_opens_minutes: Positive = 30  # a booking admits from this long before its slot starts until it ends
    no_show_limit: Positive = 3  # this many no-shows ...
    no_show_window_days: Positive = 30  # ... within this many days ...
    restriction_days: Positive = 14  # ... and the resident may not book for this many days


# -- the organiser (signed, events:publish) ------------------------------------------------------------------------


class FacilityCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="as residents see it: 1号羽毛球场")
    ]
    kind: FacilityKind


class Facility(msgspec.Struct):
    id: uuid.UUID
    venue_id: uuid.UUID
    name: str
    kind: str
    created_at: dt.datetime


class Facilities(msgspec.Struct):
    facilities: list[Facility]


class SlotTime(msgspec.Struct, forbid_unknown_fields=True):
    starts_at: dt.datetime
    ends_at: dt.datetime


class SlotsCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Slots of one facility, all with the same capacity, price and cut-offs."""

    slots: Annotated[list[SlotTime], msgspec.Meta(min_length=1, max_length=100)]
    capacity: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="places in each slot")]
    price_fen: Annotated[int, msgspec.Meta(ge=1, le=10_000_000, description="per place, integer fen")]
    booking_cutoff_minutes: Annotated[
        Minutes, msgspec.Meta(description="booking closes this long before the slot starts")
    ] = 0
    cancellation_cutoff_minutes: Annotated[
        Minutes,
        msgspec.Meta(description="a paid booking is refunded when cancelled up to this long before start"),
    ] = 120


class SlotCancel(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="what holders are told")]


class OrganiserSlot(msgspec.Struct):
    id: uuid.UUID
    facility_id: uuid.UUID
    facility: str
    venue_id: uuid.UUID
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
    admitted: int = 0
    no_shows: int = 0


class OrganiserSlots(msgspec.Struct):
    slots: list[OrganiserSlot]


# -- residents -----------------------------------------------------------------------------------------------------


class PublicSlot(msgspec.Struct):
    id: uuid.UUID
    facility_id: uuid.UUID
    facility: str
    kind: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    capacity: int
    remaining: int
    price_fen: int
    book_until: dt.datetime
    cancel_until: dt.datetime
    status: str  # open, full, closed (past its booking cut-off), cancelled


class VenueSlots(msgspec.Struct):
    venue_id: uuid.UUID
    date: dt.date
    slots: list[PublicSlot]


class BookingCreate(msgspec.Struct, forbid_unknown_fields=True):
    slot_id: uuid.UUID
    places: Annotated[
        int, msgspec.Meta(ge=1, le=100, description="places in the slot (the city's limit applies)")
    ]
    channel: Literal["alipay", "wechat"]
    method: Literal["app", "mini", "jsapi", "native"]
    payer_channel_id: (
        Annotated[
            str, msgspec.Meta(max_length=128, description="Alipay buyer open id or WeChat openid (jsapi)")
        ]
        | None
    ) = None


class Booking(msgspec.Struct):
    """A resident's booking. `status`: held (pay before `hold_expires_at`), paid, released (the hold ended
    unpaid), cancelled. `refund`: due or requested once a paid booking is cancelled in time; `no_show`: paid and
    never admitted."""

    id: uuid.UUID
    slot_id: uuid.UUID
    venue_id: uuid.UUID
    facility: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    places: int
    amount_fen: int
    status: str
    order_id: uuid.UUID
    hold_expires_at: dt.datetime
    cancel_until: dt.datetime
    created_at: dt.datetime
    cancelled_by: str | None = None
    refund: str | None = None
    admitted_at: dt.datetime | None = None
    no_show: bool = False
    pay: PayInstructions | None = None


class Bookings(msgspec.Struct):
    bookings: list[Booking]


class NoShow(msgspec.Struct):
    booking_id: uuid.UUID
    facility: str
    starts_at: dt.datetime
    ends_at: dt.datetime


class NoShows(msgspec.Struct):
    """The resident's no-shows in the rule's window, and until when booking is limited (None: it is not)."""

    no_shows: list[NoShow]
    limit: int
    window_days: int
    restricted_until: dt.datetime | None
