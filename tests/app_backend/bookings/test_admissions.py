"""Entry with the one code: the bookings' Admissions provider (occasion = slot) admits a paid booking once, only at
the venue's gates and within the slot's time, shows the facility and never a name, and lists attendees for offline
gates. code_service asks it through the kernel's port (wired by the coordinator); these tests ask it directly."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.admissions import Admissions
from tests.app_backend.bookings.helpers import book, bookings_of, mine, offer, pay, slot
from tests.helpers import bearer, machine_credential, real_named


async def _gate(client: Any, services: Any) -> uuid.UUID:
    verifier = await machine_credential(client, services, ["verify:event"])
    return uuid.UUID(verifier["organisation"]["id"])


async def _admit(services: Any, slot_id: str, gate: uuid.UUID, at: dt.datetime, **who: Any) -> Any:
    async with services.pool.acquire() as conn, conn.transaction():
        return await bookings_of(services).admissions.admit(conn, uuid.UUID(slot_id), "东门", gate, at, **who)


async def test_a_paid_booking_is_admitted_once_at_the_venues_gates(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    gate = await _gate(client, services)
    made = await slot(client, services, gate_verifiers=[gate])
    person = await real_named(client, services)
    booking = (await book(client, person, made["id"], places=2)).json()
    resident = uuid.UUID(person["resident_id"])
    starts = dt.datetime.fromisoformat(made["starts_at"])
    at = starts - dt.timedelta(minutes=10)
    unpaid = await _admit(services, made["id"], gate, at, resident_id=resident)
    assert (unpaid.admitted, unpaid.reason) == (False, "no-ticket")
    await pay(client, wechat_sandbox, person, booking)

    too_early = await _admit(services, made["id"], gate, starts - dt.timedelta(hours=3), resident_id=resident)
    assert (too_early.admitted, too_early.reason) == (False, "not-open")
    over = await _admit(
        services, made["id"], gate, dt.datetime.fromisoformat(made["ends_at"]), resident_id=resident
    )
    assert over.reason == "not-open"
    elsewhere = await _admit(services, made["id"], await _gate(client, services), at, resident_id=resident)
    assert elsewhere is None  # not one of this venue's gates: another provider may know the occasion
    assert await _admit(services, str(uuid.uuid4()), gate, at, resident_id=resident) is None

    # Two gates scan the same code at once: one admits.
    both = await asyncio.gather(
        *(_admit(services, made["id"], gate, at, resident_id=resident) for _ in range(2))
    )
    assert sorted((a.admitted, a.reason) for a in both) == [(False, "already-admitted"), (True, "ok")]
    admitted = next(a for a in both if a.admitted)
    assert (admitted.ticket_id, admitted.section, admitted.seat) == (
        uuid.UUID(booking["id"]),
        made["facility"],
        "2人",
    )
    assert "周" not in repr(admitted)  # no name: only the facility and the places
    printed = await _admit(services, made["id"], gate, at, ticket_id=uuid.UUID(booking["id"]))
    assert printed.reason == "already-admitted"
    assert (await mine(client, person, booking["id"]))["admitted_at"] is not None
    stranger = await real_named(client, services)
    nobody = await _admit(services, made["id"], gate, at, resident_id=uuid.UUID(stranger["resident_id"]))
    assert nobody.reason == "no-ticket"


async def test_the_attendee_list_and_a_cancelled_slot(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    gate = await _gate(client, services)
    made = await slot(client, services, gate_verifiers=[gate])
    people = [await real_named(client, services) for _ in range(2)]
    bookings = []
    for person in people:
        booking = (await book(client, person, made["id"])).json()
        await pay(client, wechat_sandbox, person, booking)
        bookings.append(booking)
    provider: Admissions = bookings_of(services).admissions
    async with services.pool.acquire() as conn:
        listed = await provider.attendees(conn, uuid.UUID(made["id"]), gate)
        assert await provider.attendees(conn, uuid.UUID(made["id"]), uuid.uuid4()) is None
    assert listed is not None
    assert sorted((str(a.ticket_id), str(a.resident_id), a.section) for a in listed) == sorted(
        (b["id"], p["resident_id"], made["facility"]) for b, p in zip(bookings, people, strict=True)
    )
    assert all(a.entrances == () for a in listed)

    cancelled = await offer(
        client, made["organiser"], "POST", f"/slots/{made['id']}/cancel", {"reason": "停电"}
    )
    assert cancelled.status_code == 200
    at = dt.datetime.fromisoformat(made["starts_at"])
    refused = await _admit(services, made["id"], gate, at, resident_id=uuid.UUID(people[0]["resident_id"]))
    assert (refused.admitted, refused.reason) == (False, "cancelled")
    async with services.pool.acquire() as conn:
        assert await provider.attendees(conn, uuid.UUID(made["id"]), gate) == []
    await bookings_of(services).refund_due(services.pool)
    await services.payments.refunds.settle_pending_refunds(services.pool)


async def test_a_cancelled_booking_is_refused_as_returned(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    gate = await _gate(client, services)
    made = await slot(client, services, gate_verifiers=[gate])
    person = await real_named(client, services)
    booking = (await book(client, person, made["id"])).json()
    await pay(client, wechat_sandbox, person, booking)
    assert (
        await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(person))
    ).status_code == 200
    at = dt.datetime.fromisoformat(made["starts_at"])
    refused = await _admit(services, made["id"], gate, at, resident_id=uuid.UUID(person["resident_id"]))
    assert (refused.admitted, refused.reason) == (False, "returned")
    await services.payments.refunds.settle_pending_refunds(services.pool)
