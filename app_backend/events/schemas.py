"""The events zone's schedule on the wire (docs/decisions/0027-events-schedule.md): what the organising department
publishes (events, competitions, sessions, venues, news, broadcast links), what residents read of them, and the
facts other domains build on (`SessionFacts`, `VenueFacts`: tickets sell a session's seats, bookings a venue's
slots, the one code admits at the venue's gates)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

# A session's status. `finished` and `cancelled` are final; `delayed` carries the new start (starts_at).
SessionStatus = Literal["scheduled", "delayed", "live", "finished", "cancelled"]
STATUSES: tuple[str, ...] = ("scheduled", "delayed", "live", "finished", "cancelled")
# The state machine: the statuses each status may move to (a move to the same status with the same start is
# accepted and changes nothing; a delayed session may be delayed again, to another new start).
MOVES: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"delayed", "live", "cancelled"}),
    "delayed": frozenset({"delayed", "live", "cancelled"}),
    "live": frozenset({"finished", "cancelled"}),
    "finished": frozenset(),
    "cancelled": frozenset(),
}
# What residents read for each status.
STATUS_NAMES: dict[str, str] = {
    "scheduled": "按时进行",
    "delayed": "延期",
    "live": "进行中",
    "finished": "已结束",
    "cancelled": "已取消",
}

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Notes = Annotated[str, msgspec.Meta(max_length=2000)]
Body = Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
Sport = Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="the sport, in Chinese (游泳)")]
Place = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Places = Annotated[list[Place], msgspec.Meta(max_length=200)]
Instant = Annotated[dt.datetime, msgspec.Meta(tz=True, description="RFC 3339 with its offset")]
Reason = Annotated[str, msgspec.Meta(min_length=2, max_length=500, description="why, as residents read it")]
# Checked by the service (an https link): a pattern here would put a URL scheme in the API documents, whose
# pages must name no other origin (tests/app_backend/composition/test_surface.py).
HttpsUrl = Annotated[str, msgspec.Meta(min_length=9, max_length=1024, description="an https link")]


# -- the facts other domains build on -------------------------------------------------------------------------------


class VenueFacts(msgspec.Struct, frozen=True):
    """A venue as tickets, bookings and the gates see it."""

    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    sections: tuple[str, ...]
    entrances: tuple[str, ...]
    # Organisations whose gates (verifiers) admit at this venue.
    gate_verifiers: tuple[uuid.UUID, ...]


class SessionFacts(msgspec.Struct, frozen=True):
    """A session as tickets and the gates see it, with its venue's sections, entrances and gate operators."""

    id: uuid.UUID
    event_id: uuid.UUID
    organiser_id: uuid.UUID
    venue_id: uuid.UUID
    title: str
    sport: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str
    sections: tuple[str, ...]
    entrances: tuple[str, ...]
    gate_verifiers: tuple[uuid.UUID, ...]


# -- what the organising department sends ---------------------------------------------------------------------------


class EventBody(msgspec.Struct, forbid_unknown_fields=True):
    """An event (the games): its name, what it is, and the days it runs (Beijing dates)."""

    name: Name
    starts_on: dt.date
    ends_on: dt.date
    description: Notes = ""


class CompetitionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A sport within an event."""

    sport: Sport
    name: Name


class VenueBody(msgspec.Struct, forbid_unknown_fields=True):
    """A venue and its guide. `district` is a region code of Taizhou; `gate_verifiers` the organisations whose
    verifiers admit at its gates."""

    name: Name
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    district: Annotated[str, msgspec.Meta(min_length=6, max_length=6, description="a region code (321202)")]
    sections: Places = msgspec.field(default_factory=list)
    entrances: Places = msgspec.field(default_factory=list)
    transport_notes: Notes = ""
    accessibility_notes: Notes = ""
    gate_verifiers: Annotated[list[uuid.UUID], msgspec.Meta(max_length=50)] = msgspec.field(
        default_factory=list
    )


class SessionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A session of a competition at a venue. A new session is `scheduled`; its status moves through
    POST .../status."""

    competition_id: uuid.UUID
    venue_id: uuid.UUID
    title: Name
    starts_at: Instant
    ends_at: Instant


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    """A move of a session's status. `reason` is required for delayed and cancelled; `starts_at` (the new start)
    for delayed, and `ends_at` then defaults to the new start plus the session's length."""

    status: SessionStatus
    reason: Reason | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None


class NewsBody(msgspec.Struct, forbid_unknown_fields=True):
    """A news item, optionally of one event; `published_at` defaults to now (a later time publishes it then)."""

    title: Name
    body: Body
    event_id: uuid.UUID | None = None
    published_at: Instant | None = None


class BroadcastBody(msgspec.Struct, forbid_unknown_fields=True):
    """Where a session is broadcast live: the platform's name and an https link."""

    platform: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    url: HttpsUrl


# -- what is read back -----------------------------------------------------------------------------------------------


class Event(msgspec.Struct):
    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    description: str
    starts_on: dt.date
    ends_on: dt.date


class Competition(msgspec.Struct):
    id: uuid.UUID
    event_id: uuid.UUID
    sport: str
    name: str


class EventDetail(msgspec.Struct):
    """An event with its competitions (residents' view and the department's)."""

    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    description: str
    starts_on: dt.date
    ends_on: dt.date
    competitions: list[Competition]


class Events(msgspec.Struct):
    events: list[Event]


class Venue(msgspec.Struct):
    """A venue's guide."""

    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    address: str
    district: str
    district_name: str
    sections: list[str]
    entrances: list[str]
    transport_notes: str
    accessibility_notes: str
    gate_verifiers: list[uuid.UUID]


class Venues(msgspec.Struct):
    venues: list[Venue]


class Broadcast(msgspec.Struct):
    id: uuid.UUID
    session_id: uuid.UUID
    platform: str
    url: str


class Session(msgspec.Struct):
    """A session as residents and its department read it. `scheduled_starts_at` is the start first published (it
    differs from `starts_at` once delayed); `status_name` is the status in Chinese."""

    id: uuid.UUID
    event_id: uuid.UUID
    competition_id: uuid.UUID
    competition_name: str
    sport: str
    venue_id: uuid.UUID
    venue_name: str
    title: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    scheduled_starts_at: dt.datetime
    status: SessionStatus
    status_name: str
    status_reason: str | None
    broadcasts: list[Broadcast]


class Sessions(msgspec.Struct):
    """A page of sessions, by start; `next_page` is absent on the last page."""

    sessions: list[Session]
    page: int
    next_page: int | None


class News(msgspec.Struct):
    id: uuid.UUID
    organiser_id: uuid.UUID
    event_id: uuid.UUID | None
    title: str
    body: str
    published_at: dt.datetime


class NewsList(msgspec.Struct):
    news: list[News]
    page: int
    next_page: int | None


class Broadcasts(msgspec.Struct):
    broadcasts: list[Broadcast]
