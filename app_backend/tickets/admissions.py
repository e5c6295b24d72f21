"""The tickets' Admissions provider (app_backend/kernel/admissions.py): code_service's `event` scene asks it
whether the holder of a scanned code (or a printed ticket) may enter a session at an entrance, and for a gate's
offline attendee list. It answers only the venue's gates (the session's `gate_verifiers`), records an admission
once per ticket with a compare-and-set (two gates scanning one code at once admit once), lets a ticket in again
only under the sale's re-entry rule, and never tells a gate who the attendee is: section and seat only."""

from __future__ import annotations

import datetime as dt
import uuid

from app_backend.events.schemas import SessionFacts
from app_backend.events.service import EventsService
from app_backend.kernel.admissions import Admission, Attendee
from app_backend.kernel.db import Connection
from app_backend.tickets.repository import SaleRepository, SaleRow, TicketRepository, TicketRow

# The gates open this long before a session starts, and close when it ends.
GATES_OPEN_BEFORE = dt.timedelta(hours=3)


def _refused(reason: str, ticket: TicketRow | None = None) -> Admission:
    if ticket is None:
        return Admission(admitted=False, reason=reason)
    return Admission(
        admitted=False, reason=reason, ticket_id=ticket.id, section=ticket.section, seat=ticket.seat
    )


class TicketAdmissions:
    def __init__(self, events: EventsService) -> None:
        self._events = events
        self._sales = SaleRepository()
        self._tickets = TicketRepository()

    async def _occasion(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> tuple[SaleRow, SessionFacts] | None:
        sale = await self._sales.get(conn, occasion_id)
        if sale is None:
            return None
        facts = await self._events.session_facts(conn, occasion_id)
        if facts is None or verifier_id not in facts.gate_verifiers:
            return None
        return sale, facts

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
        found = await self._occasion(conn, occasion_id, verifier_id)
        if found is None:
            return None
        sale, facts = found
        if facts.status == "cancelled":
            return _refused("cancelled")
        if ticket_id is not None:
            row = await self._tickets.get(conn, ticket_id)
            candidates = [row] if row is not None and row.session_id == occasion_id else []
        elif resident_id is not None:
            # One person is one body: two gates scanning their code at once wait here for each other.
            await self._tickets.lock_attendee(conn, occasion_id, resident_id)
            candidates = await self._tickets.for_attendee(conn, occasion_id, resident_id)
        else:
            candidates = []
        candidates = [t for t in candidates if t.status != "released"]
        if not candidates:
            return _refused("no-ticket")
        valid = [t for t in candidates if t.status == "valid"]
        if not valid:
            held = [t for t in candidates if t.status == "held"]
            return _refused("no-ticket", held[0]) if held else _refused("returned", candidates[0])
        if facts.status == "finished" or not facts.starts_at - GATES_OPEN_BEFORE <= at <= facts.ends_at:
            return _refused("not-open", valid[0])
        fitting = [t for t in valid if not t.entrances or entrance in t.entrances]
        if not fitting:
            return _refused("wrong-entrance", valid[0])
        entered = [t for t in fitting if t.admitted_at is not None]
        if resident_id is not None and entered:
            # A person with several tickets naming them (the per-person limit allows it) is inside on one: their
            # code lets them in again only under the re-entry rule, never on the next ticket (someone else).
            fitting = entered[:1]
        for ticket in fitting:
            if await self._tickets.admit(conn, ticket.id, entrance, at, sale.re_entry_minutes):
                return Admission(
                    admitted=True,
                    reason="ok",
                    ticket_id=ticket.id,
                    section=ticket.section,
                    seat=ticket.seat,
                    re_entry=ticket.admitted_at is not None,
                )
        return _refused("already-admitted", fitting[0])

    async def attendees(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> list[Attendee] | None:
        found = await self._occasion(conn, occasion_id, verifier_id)
        if found is None:
            return None
        _, facts = found
        if facts.status == "cancelled":
            return []
        return [
            Attendee(
                ticket_id=t.id,
                resident_id=t.attendee_resident_id,
                entrances=tuple(t.entrances),
                section=t.section,
                seat=t.seat,
            )
            for t in await self._tickets.valid_of_session(conn, occasion_id)
        ]
