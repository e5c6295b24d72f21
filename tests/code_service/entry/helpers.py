"""A test-only Admissions provider (the real ones are tickets' and bookings'): one occasion, its tickets in memory,
admitted once per ticket by compare-and-set, as the port requires."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from app_backend.kernel.admissions import Admission, Attendee
from app_backend.kernel.db import Connection
from code_service.holder import DeviceWallet
from code_service.verifier import OfflineVerifier
from tests.helpers import machine_credential, register_device, signed


@dataclass
class SoldTicket:
    ticket_id: uuid.UUID
    resident_id: uuid.UUID | None
    entrances: tuple[str, ...] = ()
    section: str = "A区"
    seat: str = "3排12座"
    admitted: int = 0  # how many times the provider counted it admitted


@dataclass
class GateAdmissions:
    """Knows one occasion. `gates`: the organisations whose gates admit here (others: None, as the port says)."""

    occasion_id: uuid.UUID = field(default_factory=uuid.uuid4)
    gates: set[uuid.UUID] = field(default_factory=set)
    tickets: list[SoldTicket] = field(default_factory=list)
    asked: int = 0
    re_entry: bool = False  # the occasion lets an admitted ticket in again

    def sell(
        self, resident_id: uuid.UUID | None, entrances: tuple[str, ...] = (), seat: str = "3排12座"
    ) -> SoldTicket:
        ticket = SoldTicket(uuid.uuid4(), resident_id, entrances, seat=seat)
        self.tickets.append(ticket)
        return ticket

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
        if occasion_id != self.occasion_id or verifier_id not in self.gates:
            return None
        self.asked += 1
        # A round trip in the caller's transaction, as a real provider makes: other admissions run meanwhile.
        assert await conn.fetchval("SELECT 1") == 1
        await asyncio.sleep(0.01)
        found = [
            t
            for t in self.tickets
            if (ticket_id is not None and t.ticket_id == ticket_id)
            or (resident_id is not None and t.resident_id == resident_id)
        ]
        if not found:
            return Admission(admitted=False, reason="no-ticket")
        here = [t for t in found if not t.entrances or entrance in t.entrances]
        if not here:
            t = found[0]
            return Admission(False, "wrong-entrance", t.ticket_id, t.section, t.seat)
        fresh = [t for t in here if not t.admitted]
        if not fresh:
            t = here[0]
            if self.re_entry:
                return Admission(True, "ok", t.ticket_id, t.section, t.seat, re_entry=True)
            return Admission(False, "already-admitted", t.ticket_id, t.section, t.seat)
        ticket = fresh[0]
        ticket.admitted += 1  # compare-and-set: no await between the check and the set
        return Admission(True, "ok", ticket.ticket_id, ticket.section, ticket.seat)

    async def attendees(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> list[Attendee] | None:
        if occasion_id != self.occasion_id or verifier_id not in self.gates:
            return None
        return [Attendee(t.ticket_id, t.resident_id, t.entrances, t.section, t.seat) for t in self.tickets]


async def venue_gate(client: Any, services: Any, provider: GateAdmissions) -> dict[str, Any]:
    """A venue's gate operator (verify:event, and gates:sync for the deny list), one of the provider's gates."""
    gate = await machine_credential(client, services, ["verify:event", "gates:sync"])
    provider.gates.add(uuid.UUID(gate["organisation"]["id"]))
    return gate


def provided(services: Any) -> GateAdmissions:
    provider = GateAdmissions()
    services.codes.use_admissions(provider)
    return provider


async def scan(
    client: Any, gate: dict[str, Any], code: str, occasion_id: uuid.UUID, entrance: str = "东门"
) -> Any:
    return await signed(
        client,
        gate,
        "POST",
        "/api/v1/verify",
        {"code": code, "scene": "event", "occasion_id": str(occasion_id), "entrance": entrance},
    )


async def offline_gate(client: Any, gate: dict[str, Any], occasion_id: uuid.UUID) -> OfflineVerifier:
    """A gate's offline verifier as it stands after a sync: the JWKS, the deny list and the occasion's signed
    attendee list (`gate` needs verify:event and gates:sync)."""
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    deny = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    offline.deny_list.apply_document(deny.json()["jws"], offline.key_for_kid)
    listed = await signed(client, gate, "GET", f"/api/v1/gates/attendees?occasion={occasion_id}")
    assert listed.status_code == 200, listed.text
    offline.update_attendees(listed.json()["jws"])
    return offline


async def phone(client: Any, person: dict[str, Any]) -> DeviceWallet:
    """A phone of `person` with a registered device credential: its device codes work offline."""
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    return wallet


def offline_admission(
    admission_id: str, occasion_id: uuid.UUID, code: str, at: float | None = None, entrance: str = "东门"
) -> dict[str, Any]:
    """One admission a gate made offline, as it uploads it (POST /api/v1/gates/admissions)."""
    scanned = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    return {
        "admission_id": admission_id,
        "occasion_id": str(occasion_id),
        "entrance": entrance,
        "scanned_at": scanned.isoformat(),
        "code": code,
    }


@pytest.fixture(autouse=True)
async def forget_printed_tickets(db: asyncpg.Connection) -> AsyncIterator[None]:
    """A printed ticket keeps its signing key published until it expires (codes.ticket_codes): the tickets printed
    by a test are forgotten afterwards, so the key rotation tests of the same session see the usual retirement.
    Autouse where imported (this folder's conftest, tests that print tickets)."""
    started = await db.fetchval("SELECT clock_timestamp()")
    yield
    await db.execute("DELETE FROM codes.ticket_codes WHERE issued_at >= $1", started)
