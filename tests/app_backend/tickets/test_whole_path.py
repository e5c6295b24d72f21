"""The whole path by HTTP, as a resident, the organising department and a venue's gates would: the schedule read
without logging in, the sale, the fair queue, a hold paid through the WeChat Pay sandbox, entry with the one code
online (the tickets' Admissions provider wired into code_service's event scene) and offline (the signed attendee
list, code_service.verifier's offline verifier, uploads from gates racing each other), printed codes, a return, and
a session cancelled by its organiser with every paid ticket refunded and the ledger clean."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.tickets.tasks import refund_tickets, tell_ticket_holders
from tests.app_backend.events.helpers import PUBLIC, published_session, set_session_status
from tests.app_backend.tickets.helpers import (
    TICKETS,
    admitted_pass,
    bought,
    hold,
    put_sale,
    remaining,
    sale_body,
)
from tests.code_service.entry.helpers import (
    forget_printed_tickets,  # noqa: F401 (autouse: the printed codes' keys are forgotten after each test)
    offline_admission,
    offline_gate,
    phone,
    scan,
)
from tests.helpers import (
    bearer,
    machine_credential,
    personal_code,
    random_id_number,
    real_named,
    signed,
)
from tests.payments.helpers import ledger_ok

EVENT_FIELDS = {"allowed", "reason", "scene", "code_type", "section", "seat", "re_entry"}


async def gate(client: Any, services: Any) -> dict[str, Any]:
    """A venue's gate operator: verify:event to admit, gates:sync for the deny list an offline gate keeps."""
    return await machine_credential(client, services, ["verify:event", "gates:sync"])


def org(credential: dict[str, Any]) -> str:
    return str(credential["organisation"]["id"])


async def games(
    client: Any, services: Any, gates: list[dict[str, Any]], *, quota: int = 10, **fields: Any
) -> dict[str, Any]:
    """A session of the games starting in an hour (the gates open three hours before), at a venue whose gates are
    `gates`, with a sale open now behind a fair queue: class "东看台" (section A区) enters by 东门 only, returns
    until the start."""
    sport = f"游泳{uuid.uuid4().hex[:6]}"
    session = await published_session(
        client,
        services,
        starts_in=dt.timedelta(hours=1),
        gate_verifiers=[org(g) for g in gates],
        sport=sport,
    )
    body = sale_body(
        quota,
        classes=[
            {"name": "东看台", "price_fen": 8000, "section": "A区", "quota": quota, "entrances": ["东门"]}
        ],
        admit_per_minute=600,
        return_cutoff_hours=0,
        **fields,
    )
    answer = await put_sale(client, session["organiser"], session["session_id"], body)
    assert answer.status_code == 200, answer.text
    sale = answer.json()
    return {**session, "sport": sport, "sale": sale, "class_id": sale["classes"][0]["id"]}


async def buys(
    client: Any, wechat: Any, person: dict[str, Any], sale: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """The resident queues for their turn, holds and pays in the sandbox: the hold, paid."""
    return await bought(
        client, wechat, person, sale, pass_token=await admitted_pass(client, person, sale), **kw
    )


async def ticket_of(client: Any, person: dict[str, Any], ticket_id: str) -> dict[str, Any]:
    answer = await client.get(f"{TICKETS}/{ticket_id}", headers=bearer(person))
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def upload(client: Any, gate: dict[str, Any], *admissions: dict[str, Any]) -> Any:
    answer = await signed(client, gate, "POST", "/api/v1/gates/admissions", {"admissions": list(admissions)})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_resident_browses_queues_pays_and_enters_once_with_the_one_code(
    client, services, wechat_sandbox
):
    east, west = await gate(client, services), await gate(client, services)
    sale = await games(client, services, [east, west])
    session_id = sale["session_id"]

    # Browsing, not logged in: the schedule by sport, the session, its sale.
    listed = await client.get(f"{PUBLIC}/sessions", params={"sport": sale["sport"]})
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()["sessions"]] == [session_id]
    assert (await client.get(f"{PUBLIC}/sessions/{session_id}")).status_code == 200
    public = await client.get(f"{TICKETS}/sessions/{session_id}")
    assert public.status_code == 200, public.text
    assert (public.json()["state"], public.json()["queue"]) == ("open", True)
    assert await remaining(client, sale) == 10

    # Straight to the buy endpoint without a pass: nothing gained over the queue.
    buyer = await real_named(client, services)
    skipping = await hold(client, buyer, sale)
    assert skipping.status_code == 403 and skipping.json()["type"].endswith("/queue-pass-required")
    paid = await buys(client, wechat_sandbox, buyer, sale)
    ticket = paid["tickets"][0]
    assert (ticket["status"], ticket["section"], ticket["admitted_at"]) == ("valid", "A区", None)
    assert await remaining(client, sale) == 9

    # At the venue, the resident's personal code: the wrong entrance first (not used up), then 东门.
    code = await personal_code(client, buyer)
    wrong = await scan(client, east, code, uuid.UUID(session_id), "西门")
    assert (wrong.json()["allowed"], wrong.json()["reason"], wrong.json()["section"]) == (
        False,
        "wrong-entrance",
        "A区",
    )
    entered = await scan(client, east, await personal_code(client, buyer), uuid.UUID(session_id))
    assert entered.status_code == 200, entered.text
    assert entered.json() == {
        "allowed": True,
        "reason": "ok",
        "scene": "event",
        "code_type": "personal",
        "section": "A区",
    }
    assert set(entered.json()) <= EVENT_FIELDS and buyer["name"] not in entered.text  # never the name
    assert (await ticket_of(client, buyer, ticket["id"]))["admitted_at"] is not None

    # The same person's phone (a device code) at the other gate: the ticket was admitted.
    wallet = await phone(client, buyer)
    again = await scan(client, west, wallet.code(), uuid.UUID(session_id))
    assert (again.json()["allowed"], again.json()["reason"], again.json()["code_type"]) == (
        False,
        "already-admitted",
        "device",
    )
    # A verifier with the scope that is not one of the venue's gates: nobody answers it.
    elsewhere = await machine_credential(client, services, ["verify:event"])
    foreign = await scan(client, elsewhere, wallet.code(), uuid.UUID(session_id))
    assert (foreign.json()["allowed"], foreign.json()["reason"]) == (False, "no-ticket")
    # Someone without a ticket, at the right gate.
    stranger = await real_named(client, services)
    refused = await scan(client, east, await personal_code(client, stranger), uuid.UUID(session_id))
    assert (refused.json()["allowed"], refused.json()["reason"]) == (False, "no-ticket")
    async with services.pool.acquire() as conn:
        admissions = await conn.fetchval(
            "SELECT admissions FROM tickets.tickets WHERE id = $1::uuid", ticket["id"]
        )
    assert admissions == 1


async def test_a_device_code_admits_once_from_a_second_phone_too(client, services, wechat_sandbox):
    """A device code first (offline-capable phones scan online too), then the personal code: one admission."""
    east = await gate(client, services)
    sale = await games(client, services, [east])
    buyer = await real_named(client, services)
    await buys(client, wechat_sandbox, buyer, sale)
    wallet = await phone(client, buyer)
    first = await scan(client, east, wallet.code(), uuid.UUID(sale["session_id"]))
    assert (first.json()["allowed"], first.json()["code_type"], first.json()["section"]) == (
        True,
        "device",
        "A区",
    )
    second = await scan(client, east, await personal_code(client, buyer), uuid.UUID(sale["session_id"]))
    assert second.json()["reason"] == "already-admitted"


async def test_offline_gates_admit_from_the_attendee_list_and_their_uploads_admit_each_ticket_once(
    client, services, wechat_sandbox
):
    gates = [await gate(client, services) for _ in range(3)]
    sale = await games(client, services, gates)
    occasion = uuid.UUID(sale["session_id"])
    attendee, stranger = await real_named(client, services), await real_named(client, services)
    paid = await buys(client, wechat_sandbox, attendee, sale)
    wallet, strangers_wallet = await phone(client, attendee), await phone(client, stranger)

    # Every gate synced its list before the network went down; the attendee shows a phone at each of them.
    offline = [await offline_gate(client, g, occasion) for g in gates]
    listed = await signed(client, gates[0], "GET", f"/api/v1/gates/attendees?occasion={occasion}")
    assert listed.json()["tickets"] == 1
    shown = [wallet.code() for _ in gates]
    assert offline[0].verify(shown[0], "event", entrance="西门").reason == "wrong-entrance"  # not used up
    for verifier, code in zip(offline, shown, strict=True):
        verdict = verifier.verify(code, "event", entrance="东门")
        assert (verdict.valid, verdict.reason, verdict.section) == (True, "ok", "A区")
        assert verdict.ticket == uuid.UUID(paid["tickets"][0]["id"]).bytes
    assert offline[0].verify(wallet.code(), "event", entrance="东门").reason == "already-admitted"
    assert offline[1].verify(strangers_wallet.code(), "event", entrance="东门").reason == "no-ticket"
    assert (await ticket_of(client, attendee, paid["tickets"][0]["id"]))["admitted_at"] is None

    # Back online, all three gates upload at once: PostgreSQL's compare-and-set admits the ticket once.
    answers = await asyncio.gather(
        *(
            upload(client, g, offline_admission(f"gate-{n}", occasion, code))
            for n, (g, code) in enumerate(zip(gates, shown, strict=True))
        )
    )
    outcomes = sorted((a["admissions"][0]["status"], a["admissions"][0].get("reason")) for a in answers)
    assert outcomes == [("admitted", None), ("refused", "already-admitted"), ("refused", "already-admitted")]
    assert sum(a["admitted"] for a in answers) == 1
    async with services.pool.acquire() as conn:
        admissions = await conn.fetchval(
            "SELECT admissions FROM tickets.tickets WHERE id = $1::uuid", paid["tickets"][0]["id"]
        )
    assert admissions == 1
    assert (await ticket_of(client, attendee, paid["tickets"][0]["id"]))["admitted_at"] is not None
    # Scanned online afterwards: already admitted. A stranger's upload: no ticket.
    online = await scan(client, gates[0], await personal_code(client, attendee), occasion)
    assert online.json()["reason"] == "already-admitted"
    strangers = await upload(
        client, gates[1], offline_admission("stranger", occasion, strangers_wallet.code())
    )
    assert (strangers["admissions"][0]["status"], strangers["admissions"][0]["reason"]) == (
        "refused",
        "no-ticket",
    )


async def test_printed_codes_admit_once_online_and_offline_and_a_returned_ones_is_refused(
    client, services, wechat_sandbox
):
    door, offline_door = await gate(client, services), await gate(client, services)
    sale = await games(client, services, [door, offline_door])
    occasion = uuid.UUID(sale["session_id"])
    buyer = await real_named(client, services)
    # Three relatives without phones: each ticket names its attendee; the buyer prints their codes.
    relatives = [{"name": name, "id_number": random_id_number()} for name in ("孙坚", "吴国太", "孙尚香")]
    paid = await buys(client, wechat_sandbox, buyer, sale, attendees=relatives)
    online_id, offline_id, returned_id = (t["id"] for t in paid["tickets"])

    printed = {}
    for ticket_id in (online_id, offline_id, returned_id):
        answer = await client.get(f"{TICKETS}/{ticket_id}/printed-code", headers=bearer(buyer))
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        assert answer.json()["section"] == "A区" and answer.json()["session_id"] == str(occasion)
        assert "孙" not in answer.text  # names no person
        printed[ticket_id] = answer.json()["code"]
    image = await client.get(f"{TICKETS}/{online_id}/printed-code.png", headers=bearer(buyer))
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG\r\n\x1a\n")
    stranger = await real_named(client, services)
    assert (
        await client.get(f"{TICKETS}/{online_id}/printed-code", headers=bearer(stranger))
    ).status_code == 404

    # Online: admitted once.
    first = await scan(client, door, printed[online_id], occasion)
    assert first.json() == {
        "allowed": True,
        "reason": "ok",
        "scene": "event",
        "code_type": "ticket",
        "section": "A区",
    }
    assert (await scan(client, door, printed[online_id], occasion)).json()["reason"] == "already-admitted"

    # Offline: the gate synced its list (and the JWKS that proves printed codes), admits once, uploads later.
    gate_offline = await offline_gate(client, offline_door, occasion)
    verdict = gate_offline.verify(printed[offline_id], "event", entrance="东门")
    assert (verdict.reason, verdict.ticket) == ("ok", uuid.UUID(offline_id).bytes)
    assert gate_offline.verify(printed[offline_id], "event", entrance="东门").reason == "already-admitted"
    uploaded = await upload(
        client, offline_door, offline_admission("printed-1", occasion, printed[offline_id])
    )
    assert [a["status"] for a in uploaded["admissions"]] == ["admitted"]
    assert (await scan(client, door, printed[offline_id], occasion)).json()["reason"] == "already-admitted"

    # A ticket returned after its code was printed: the code is refused as returned, and no new one is printed.
    returned = await client.post(f"{TICKETS}/{returned_id}/return", headers=bearer(buyer))
    assert returned.status_code == 200, returned.text
    assert returned.json()["status"] == "returned"
    refused = await scan(client, door, printed[returned_id], occasion)
    assert (refused.json()["allowed"], refused.json()["reason"]) == (False, "returned")
    again = await client.get(f"{TICKETS}/{returned_id}/printed-code", headers=bearer(buyer))
    assert again.status_code == 409, again.text
    # A gate syncing now no longer lists it.
    fresh = await offline_gate(client, offline_door, occasion)
    assert fresh.verify(printed[returned_id], "event", entrance="东门").reason == "no-ticket"
    late = await upload(client, offline_door, offline_admission("printed-2", occasion, printed[returned_id]))
    assert (late["admissions"][0]["status"], late["admissions"][0]["reason"]) == ("refused", "returned")
    await services.payments.refunds.settle_pending_refunds(services.pool)
    await ledger_ok(services)


async def test_a_return_is_refunded_and_a_cancelled_session_refunds_every_paid_ticket(
    client, services, wechat_sandbox
):
    door = await gate(client, services)
    sale = await games(client, services, [door])
    buyers = [await real_named(client, services) for _ in range(3)]
    paid = [await buys(client, wechat_sandbox, b, sale) for b in buyers]
    tickets = [p["tickets"][0]["id"] for p in paid]

    # One attendee cannot come: returned before the cut-off, refunded, the seat back on sale.
    returned = await client.post(f"{TICKETS}/{tickets[0]}/return", headers=bearer(buyers[0]))
    assert returned.status_code == 200, returned.text
    assert (returned.json()["status"], returned.json()["refund_status"]) == ("returned", "refund_sent")
    assert await remaining(client, sale) == 8

    # The organiser cancels the session: the jobs refund every paid ticket and tell the holders.
    moved = await set_session_status(
        client, sale["organiser"], sale["session_id"], "cancelled", reason="场馆检修"
    )
    assert moved.status_code == 200, moved.text
    jobs = {"platform": client.app.state.platform}  # as SAQ runs the tickets' jobs
    # The job refunds every cancelled session's tickets: other tests' sessions share the database.
    assert (await refund_tickets(jobs))["tickets"] >= 2
    assert (await refund_tickets(jobs))["tickets"] == 0  # once
    await tell_ticket_holders(jobs)
    for buyer, ticket_id in zip(buyers[1:], tickets[1:], strict=True):
        ticket = await ticket_of(client, buyer, ticket_id)
        assert (ticket["status"], ticket["refund_status"]) == ("cancelled", "refund_sent")
        inbox = (await client.get("/api/v1/me/inbox", headers=bearer(buyer))).json()["messages"]
        assert {m["title"] for m in inbox if m["kind"] == "event_changed"} == {"赛事取消", "门票退款"}
    # At the gate: the session is cancelled.
    refused = await scan(client, door, await personal_code(client, buyers[1]), uuid.UUID(sale["session_id"]))
    assert (refused.json()["allowed"], refused.json()["reason"]) == (False, "cancelled")

    async with services.pool.acquire() as conn:
        orders = await conn.fetch(
            """SELECT o.amount_fen, o.refunded_fen FROM payments.orders o
               JOIN tickets.holds h ON h.order_id = o.id WHERE h.session_id = $1::uuid""",
            sale["session_id"],
        )
    assert sorted((o["amount_fen"], o["refunded_fen"]) for o in orders) == [(8000, 8000)] * 3
    await services.payments.refunds.settle_pending_refunds(services.pool)
    async with services.pool.acquire() as conn:
        statuses = await conn.fetch(
            """SELECT r.status FROM payments.refunds r JOIN tickets.holds h ON h.order_id = r.order_id
               WHERE h.session_id = $1::uuid""",
            sale["session_id"],
        )
    assert len(statuses) == 3
    await ledger_ok(services)


async def test_a_code_printed_before_the_session_was_delayed_still_admits_at_the_new_time(
    client, services, wechat_sandbox
):
    """The organiser delays the session by a day after the attendee printed their ticket: the paper they hold
    admits at the new time (the gate answers the ticket, as it does for the holder's own code)."""
    door = await gate(client, services)
    sale = await games(client, services, [door])
    occasion = uuid.UUID(sale["session_id"])
    buyer = await real_named(client, services)
    relative = {"name": "孙坚", "id_number": random_id_number()}
    paid = await buys(client, wechat_sandbox, buyer, sale, attendees=[relative])
    ticket_id = paid["tickets"][0]["id"]
    printed = (await client.get(f"{TICKETS}/{ticket_id}/printed-code", headers=bearer(buyer))).json()

    later = dt.datetime.fromisoformat(sale["starts_at"]) + dt.timedelta(days=1)
    moved = await set_session_status(
        client,
        sale["organiser"],
        sale["session_id"],
        "delayed",
        reason="天气原因",
        starts_at=later,
        ends_at=later + dt.timedelta(hours=2),
    )
    assert moved.status_code == 200, moved.text
    assert dt.datetime.fromisoformat(printed["valid_until"]) >= later + dt.timedelta(hours=2)

    # At the gate, offline, half an hour after the new start.
    at_the_gate = await offline_gate(client, door, occasion)
    at_the_gate.clock = lambda: (later + dt.timedelta(minutes=30)).timestamp()
    verdict = at_the_gate.verify(printed["code"], "event", entrance="东门")
    assert (verdict.reason, verdict.ticket) == ("ok", uuid.UUID(ticket_id).bytes)
    # Printed again after the delay: valid until the new end too.
    again = (await client.get(f"{TICKETS}/{ticket_id}/printed-code", headers=bearer(buyer))).json()
    assert dt.datetime.fromisoformat(again["valid_until"]) >= later + dt.timedelta(hours=2)
