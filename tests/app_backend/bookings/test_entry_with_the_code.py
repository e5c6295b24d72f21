"""A booked venue slot entered with the one code, by HTTP as the resident and the venue's gate would: the bookings'
Admissions provider wired into code_service's event scene (the occasion is the slot), online and offline."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from tests.app_backend.bookings.helpers import book, mine, pay, slot
from tests.code_service.entry.helpers import offline_admission, offline_gate, phone, scan
from tests.helpers import machine_credential, personal_code, real_named, signed


async def _gate(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["verify:event", "gates:sync"])


async def test_a_booked_and_paid_slot_admits_its_resident_once(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    door, other_door = await _gate(client, services), await _gate(client, services)
    made = await slot(
        client,
        services,
        starts_in=dt.timedelta(minutes=10),  # the gates open half an hour before
        gate_verifiers=[door["organisation"]["id"], other_door["organisation"]["id"]],
    )
    occasion = uuid.UUID(made["id"])
    person = await real_named(client, services)
    booking = await book(client, person, made["id"])
    assert booking.status_code == 201, booking.text
    unpaid = await scan(client, door, await personal_code(client, person), occasion)
    assert (unpaid.json()["allowed"], unpaid.json()["reason"]) == (False, "no-ticket")
    await pay(client, wechat_sandbox, person, booking.json())
    assert (await mine(client, person, booking.json()["id"]))["status"] == "paid"

    entered = await scan(client, door, await personal_code(client, person), occasion)
    assert entered.status_code == 200, entered.text
    assert entered.json() == {
        "allowed": True,
        "reason": "ok",
        "scene": "event",
        "code_type": "personal",
        "section": made["facility"],
    }
    assert person["name"] not in entered.text
    assert (await mine(client, person, booking.json()["id"]))["admitted_at"] is not None

    wallet = await phone(client, person)
    again = await scan(client, other_door, wallet.code(), occasion)
    assert (again.json()["allowed"], again.json()["reason"], again.json()["code_type"]) == (
        False,
        "already-admitted",
        "device",
    )
    elsewhere = await machine_credential(client, services, ["verify:event"])
    foreign = await scan(client, elsewhere, wallet.code(), occasion)
    assert (foreign.json()["allowed"], foreign.json()["reason"]) == (False, "no-ticket")
    stranger = await real_named(client, services)
    nobody = await scan(client, door, await personal_code(client, stranger), occasion)
    assert (nobody.json()["allowed"], nobody.json()["reason"]) == (False, "no-ticket")
    async with services.pool.acquire() as conn:
        admitted = await conn.fetchval(
            "SELECT count(*) FROM bookings.bookings WHERE id = $1::uuid AND admitted_at IS NOT NULL",
            booking.json()["id"],
        )
    assert admitted == 1


async def test_an_offline_gate_admits_a_booking_from_its_list_and_the_upload_admits_it_once(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    door = await _gate(client, services)
    made = await slot(
        client, services, starts_in=dt.timedelta(minutes=10), gate_verifiers=[door["organisation"]["id"]]
    )
    occasion = uuid.UUID(made["id"])
    person, stranger = await real_named(client, services), await real_named(client, services)
    booking = (await book(client, person, made["id"], places=2)).json()
    await pay(client, wechat_sandbox, person, booking)
    wallet, strangers_wallet = await phone(client, person), await phone(client, stranger)

    offline = await offline_gate(client, door, occasion)
    code = wallet.code()
    verdict = offline.verify(code, "event", entrance="东门")
    assert (verdict.reason, verdict.section, verdict.seat) == ("ok", made["facility"], "2人")
    assert offline.verify(wallet.code(), "event", entrance="东门").reason == "already-admitted"
    assert offline.verify(strangers_wallet.code(), "event", entrance="东门").reason == "no-ticket"

    uploaded = await signed(
        client,
        door,
        "POST",
        "/api/v1/gates/admissions",
        {"admissions": [offline_admission("court-1", occasion, code)]},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert [a["status"] for a in uploaded.json()["admissions"]] == ["admitted"]
    online = await scan(client, door, await personal_code(client, person), occasion)
    assert online.json()["reason"] == "already-admitted"
    assert (await mine(client, person, booking["id"]))["admitted_at"] is not None
