"""Ticket sales on the wire: what an organiser sets up for a session, what anyone reads of a sale, the queue's
answers, a hold and its payment, and a resident's tickets (attendees masked)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Section = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Entrance = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Fen = Annotated[int, msgspec.Meta(gt=0, le=10_000_000, description="integer fen, at most 100,000 yuan")]
Quota = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class TicketClassSetup(msgspec.Struct, forbid_unknown_fields=True):
    """One class of tickets: its name (unique in the session), price, the venue's section it seats, how many, and
    the entrances it enters by (empty: any)."""

    name: Name
    price_fen: Fen
    section: Section
    quota: Quota
    entrances: Annotated[list[Entrance], msgspec.Meta(max_length=32)] = []


class SaleSetup(msgspec.Struct, forbid_unknown_fields=True):
    """A session's sale, as its organiser sets it (again: classes are matched by name; a quota never goes below
    what is sold and held, and a class with tickets sold or held cannot be removed or repriced)."""

    classes: Annotated[list[TicketClassSetup], msgspec.Meta(min_length=1, max_length=20)]
    opens_at: dt.datetime
    closes_at: dt.datetime
    per_person: Annotated[
        int, msgspec.Meta(ge=1, le=20, description="at most this many tickets per ID number for the session")
    ] = 4
    hold_minutes: Annotated[
        int, msgspec.Meta(ge=1, le=60, description="how long tickets are held while the buyer pays")
    ] = 10
    return_cutoff_hours: Annotated[
        int, msgspec.Meta(ge=0, le=720, description="returns are accepted until this long before the start")
    ] = 24
    re_entry_minutes: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=1440,
                description="null: one entry per ticket; n: an admitted ticket may enter again n minutes after",
            ),
        ]
        | None
    ) = None
    admit_per_minute: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=1_000_000,
            description="the virtual queue's admission rate; 0: no queue (holds need no pass)",
        ),
    ] = 0


class TicketClassView(msgspec.Struct):
    id: uuid.UUID
    name: str
    price_fen: int
    section: str
    entrances: list[str]
    quota: int
    remaining: int  # neither sold nor held


SaleState = Literal["scheduled", "open", "closed", "sold_out", "cancelled"]


class SaleView(msgspec.Struct):
    session_id: uuid.UUID
    title: str
    state: SaleState
    opens_at: dt.datetime
    closes_at: dt.datetime
    starts_at: dt.datetime
    per_person: int
    hold_minutes: int
    return_cutoff_hours: int
    re_entry_minutes: int | None
    queue: bool
    admit_per_minute: int
    classes: list[TicketClassView]


class QueueView(msgspec.Struct):
    """Where a resident stands: `admitted` with a `pass_token` (send it with the hold), or waiting at `position`
    (1: next) with an estimate of when they will be admitted."""

    session_id: uuid.UUID
    admitted: bool
    position: int
    admitted_at: dt.datetime
    estimate_seconds: int
    pass_token: str | None = None
    pass_expires_at: dt.datetime | None = None


class AttendeeIn(msgspec.Struct, forbid_unknown_fields=True):
    """The person a ticket admits: the buyer when both fields are absent, else the person named (name and ID
    number, checked as identity checks them)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None


class HoldCreate(msgspec.Struct, forbid_unknown_fields=True):
    session_id: uuid.UUID
    class_id: uuid.UUID
    attendees: Annotated[list[AttendeeIn], msgspec.Meta(min_length=1, max_length=20)]
    pass_token: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class PayCreate(msgspec.Struct, forbid_unknown_fields=True):
    channel: Literal["alipay", "wechat"]
    method: Literal["app", "mini", "jsapi", "native"]
    payer_channel_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None


TicketStatus = Literal["held", "valid", "returned", "cancelled", "released"]


class TicketView(msgspec.Struct):
    id: uuid.UUID
    session_id: uuid.UUID
    class_id: uuid.UUID
    class_name: str
    section: str
    seat: str | None
    price_fen: int
    status: TicketStatus
    attendee_name: str | None  # masked
    attendee_id_number: str | None  # masked
    attendee_is_buyer: bool
    admitted_at: dt.datetime | None
    refund_status: str | None = None  # none, refunding, refunded


class HoldView(msgspec.Struct):
    id: uuid.UUID
    session_id: uuid.UUID
    class_id: uuid.UUID
    status: str
    quantity: int
    amount_fen: int
    expires_at: dt.datetime
    tickets: list[TicketView]
    order_id: uuid.UUID | None = None
    pay: dict[str, Any] | None = None


class TicketList(msgspec.Struct):
    tickets: list[TicketView]


class PrintedTicket(msgspec.Struct):
    """A paid ticket's own code, for an attendee without a phone: print it (the PNG) or show it; it admits once
    like the attendee's one code, online and offline (docs/code-format.md, printed tickets), within the session's
    gate hours; the code itself is valid until a week after the session is due to end (`valid_until`), so a delayed
    session's paper still admits. It names no person."""

    ticket_id: uuid.UUID
    session_id: uuid.UUID
    section: str
    seat: str | None
    code: str
    valid_until: dt.datetime
