"""How the one code admits a person to an occasion (a session of an event, a booked venue slot) without
code_service importing the domains that sell them (tickets, bookings import code_service to have printed ticket
codes signed): code_service keeps a list of `Admissions` providers, handed to it when their modules start, and asks
each in turn in the `event` scene. The provider that knows the occasion answers; the others answer None.

A provider decides from what it holds (a paid ticket, a booking) and records the admission itself, in the caller's
transaction and once per ticket (compare-and-set), so a code scanned at two gates at once admits once; re-entry is
the provider's rule per occasion. It never returns the person's name: only what the gate may show (section, seat)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Protocol

import msgspec

from app_backend.kernel.db import Connection

# Why an admission was refused, in the words the gate shows (docs/code-format.md, section 7, scene `event`).
ADMISSION_REASONS = (
    "ok",
    "no-ticket",  # this person (or this printed ticket) holds no valid ticket for the occasion
    "wrong-entrance",  # a valid ticket, for another entrance
    "already-admitted",  # the ticket was admitted and the occasion allows no re-entry (or not yet)
    "not-open",  # the occasion's gates are not open at this time (too early, finished)
    "cancelled",  # the occasion is cancelled
    "returned",  # the ticket was returned or refunded
)


class Admission(msgspec.Struct, frozen=True):
    admitted: bool
    reason: str  # one of ADMISSION_REASONS
    ticket_id: uuid.UUID | None = None
    section: str | None = None
    seat: str | None = None
    re_entry: bool = False  # admitted again under the occasion's re-entry rule


class Attendee(msgspec.Struct, frozen=True):
    """One ticket's entry in a gate's offline attendee list: code_service turns `resident_id` into the live device
    credentials it may admit offline (the gate never learns the resident); a printed ticket is listed by its id."""

    ticket_id: uuid.UUID
    resident_id: uuid.UUID | None  # None: a ticket whose attendee has no account (printed code only)
    entrances: tuple[str, ...]  # empty: any entrance
    section: str | None = None
    seat: str | None = None


class Admissions(Protocol):
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
        """Admit the holder of a scanned code (`resident_id`) or a printed ticket (`ticket_id`) at `entrance` of
        `occasion_id`, as the gate of organisation `verifier_id` at `at` (an offline admission uploaded later
        carries its scan time). None: this provider does not know the occasion, or the verifier is not one of its
        gates."""
        ...

    async def attendees(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> list[Attendee] | None:
        """The occasion's valid tickets for a gate's offline list; None as for `admit`."""
        ...
