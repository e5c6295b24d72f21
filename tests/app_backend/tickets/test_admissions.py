"""The tickets' Admissions provider, called as code_service's event scene will call it: once per ticket (also with
two gates at once), re-entry per the sale's rule, wrong entrance, returned ticket, cancelled session, only the
venue's gates, and an attendee list with sections and seats, never names."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import msgspec

from app_backend.kernel.admissions import Admission, Admissions, Attendee
from tests.app_backend.events.helpers import set_session_status
from tests.app_backend.tickets.helpers import TICKETS, bought, on_sale
from tests.helpers import bearer, machine_credential, real_named


async def _gate(client: Any, services: Any) -> uuid.UUID:
    credential = await machine_credential(client, services, ["verify:event"])
    return uuid.UUID(credential["organisation"]["id"])


async def _sold(client, services, wechat, **fields: Any) -> dict[str, Any]:
    gate = await _gate(client, services)
    sale = await on_sale(client, services, gate_verifiers=[gate], **fields)
    buyer = await real_named(client, services)
    paid = await bought(client, wechat, buyer, sale)
    starts = dt.datetime.fromisoformat(sale["starts_at"])
    return {
        **sale,
        "gate": gate,
        "buyer": buyer,
        "ticket_id": uuid.UUID(paid["tickets"][0]["id"]),
        "at": starts,
    }


async def _admit(
    client, services, sold, *, at=None, entrance="东门", gate=None, **who: Any
) -> Admission | None:
    provider: Admissions = client.app.state.tickets.admissions
    if not who:
        who = {"resident_id": uuid.UUID(sold["buyer"]["resident_id"])}
    async with services.pool.acquire() as conn, conn.transaction():
        return await provider.admit(
            conn,
            uuid.UUID(sold["session_id"]),
            entrance,
            gate or sold["gate"],
            at or sold["at"],
            **who,
        )


async def test_a_ticket_admits_once(client, services, wechat_sandbox):
    sold = await _sold(client, services, wechat_sandbox)
    first = await _admit(client, services, sold)
    assert first == Admission(
        admitted=True, reason="ok", ticket_id=sold["ticket_id"], section="A区", seat=None
    )
    again = await _admit(client, services, sold, at=sold["at"] + dt.timedelta(hours=1))
    assert again is not None and (again.admitted, again.reason) == (False, "already-admitted")
    assert "name" not in msgspec.structs.asdict(first)


async def test_two_gates_scanning_one_ticket_at_once_admit_it_once(client, services, wechat_sandbox):
    sold = await _sold(client, services, wechat_sandbox)
    answers = await asyncio.gather(
        *(_admit(client, services, sold, ticket_id=sold["ticket_id"]) for _ in range(6))
    )
    assert sorted(a.reason for a in answers if a) == ["already-admitted"] * 5 + ["ok"]


async def test_re_entry_follows_the_sale_rule(client, services, wechat_sandbox):
    sold = await _sold(client, services, wechat_sandbox, re_entry_minutes=30)
    at = sold["at"]
    assert (await _admit(client, services, sold, at=at)).admitted
    soon = await _admit(client, services, sold, at=at + dt.timedelta(minutes=10))
    assert (soon.admitted, soon.reason) == (False, "already-admitted")
    later = await _admit(client, services, sold, at=at + dt.timedelta(minutes=31))
    assert later.admitted and later.re_entry


async def test_refusals_name_their_reason(client, services, wechat_sandbox):
    sold = await _sold(
        client,
        services,
        wechat_sandbox,
        classes=[{"name": "东看台", "price_fen": 5000, "section": "A区", "quota": 5, "entrances": ["东门"]}],
    )
    wrong = await _admit(client, services, sold, entrance="西门")
    assert (wrong.admitted, wrong.reason, wrong.section) == (False, "wrong-entrance", "A区")
    early = await _admit(client, services, sold, at=sold["at"] - dt.timedelta(hours=5))
    assert early.reason == "not-open"
    nobody = await _admit(client, services, sold, resident_id=uuid.uuid4())
    assert nobody.reason == "no-ticket"
    # another organisation's gate, or another occasion: not this provider's to answer
    assert await _admit(client, services, sold, gate=uuid.uuid4()) is None
    provider = client.app.state.tickets.admissions
    async with services.pool.acquire() as conn:
        assert await provider.attendees(conn, uuid.uuid4(), sold["gate"]) is None
    returned = await client.post(f"{TICKETS}/{sold['ticket_id']}/return", headers=bearer(sold["buyer"]))
    assert returned.status_code == 200, returned.text
    assert (await _admit(client, services, sold)).reason == "returned"


async def test_a_named_attendee_enters_with_their_own_code_and_the_list_shows_no_names(
    client, services, wechat_sandbox
):
    gate = await _gate(client, services)
    sale = await on_sale(client, services, gate_verifiers=[gate])
    buyer, friend = await real_named(client, services), await real_named(client, services, name="孙权")
    paid = await bought(
        client, wechat_sandbox, buyer, sale, attendees=[{"name": "孙权", "id_number": friend["id_number"]}]
    )
    sold = {**sale, "gate": gate, "buyer": buyer, "at": dt.datetime.fromisoformat(sale["starts_at"])}
    provider = client.app.state.tickets.admissions
    async with services.pool.acquire() as conn:
        listed = await provider.attendees(conn, uuid.UUID(sale["session_id"]), gate)
    assert listed == [
        Attendee(
            ticket_id=uuid.UUID(paid["tickets"][0]["id"]),
            resident_id=uuid.UUID(friend["resident_id"]),
            entrances=(),
            section="A区",
        )
    ]
    assert (await _admit(client, services, sold)).reason == "no-ticket"  # the buyer is not the attendee
    entered = await _admit(client, services, sold, resident_id=uuid.UUID(friend["resident_id"]))
    assert entered.admitted


async def test_a_cancelled_session_admits_nobody(client, services, wechat_sandbox):
    sold = await _sold(client, services, wechat_sandbox)
    moved = await set_session_status(
        client, sold["organiser"], sold["session_id"], "cancelled", reason="场馆检修"
    )
    assert moved.status_code == 200, moved.text
    assert (await _admit(client, services, sold)).reason == "cancelled"
    provider = client.app.state.tickets.admissions
    async with services.pool.acquire() as conn:
        assert await provider.attendees(conn, uuid.UUID(sold["session_id"]), sold["gate"]) == []


async def test_a_person_with_two_tickets_naming_them_enters_once_on_their_code(
    client, services, wechat_sandbox
):
    """The per-person limit lets one ID number hold several tickets of a session; their one code is one body: it
    admits once (twice would let someone else in on it), also at two gates at once."""
    sold = await _sold(client, services, wechat_sandbox)
    await bought(client, wechat_sandbox, sold["buyer"], sold)  # a second ticket naming the buyer
    other_gate = await _gate(client, services)
    assert other_gate  # not the venue's: only the sale's own gate admits
    answers = await asyncio.gather(*(_admit(client, services, sold) for _ in range(4)))
    assert sorted(a.reason for a in answers if a is not None) == ["already-admitted"] * 3 + ["ok"]
    later = await _admit(client, services, sold, at=sold["at"] + dt.timedelta(minutes=5))
    assert later is not None and later.reason == "already-admitted"
