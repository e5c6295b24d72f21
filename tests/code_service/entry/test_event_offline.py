"""The event scene offline: a gate syncs its occasion's signed attendee list and admits device codes by their
credential and printed tickets by their ticket, once per ticket; it uploads what it admitted later, and each
ticket is admitted through its provider once, whichever gates upload it and however concurrently."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest

from code_service.verifier import OfflineVerifier
from code_service.verifier.attendees import AttendeeListError
from tests.code_service.entry.helpers import (
    offline_admission,
    offline_gate,
    phone,
    provided,
    scan,
    venue_gate,
)
from tests.helpers import bearer, login, personal_code, real_named, signed


async def test_an_offline_gate_admits_attendees_from_its_list_and_refuses_others(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    attendee, stranger, phone_only = (
        await real_named(client, services),
        await real_named(client, services),
        await login(client),
    )
    wallet, strangers_wallet = await phone(client, attendee), await phone(client, stranger)
    low_wallet = await phone(client, phone_only)
    ticket = provider.sell(uuid.UUID(attendee["resident_id"]), seat="1排1座")
    provider.sell(uuid.UUID(phone_only["resident_id"]))
    north = provider.sell(None, entrances=("北门",))  # a printed ticket's, no account

    offline = await offline_gate(client, gate, provider.occasion_id)
    verdict = offline.verify(wallet.code(), "event", entrance="东门")
    assert (verdict.valid, verdict.reason, verdict.section, verdict.seat) == (True, "ok", "A区", "1排1座")
    assert verdict.ticket == ticket.ticket_id.bytes
    assert offline.verify(wallet.code(), "event", entrance="西门").reason == "already-admitted"
    assert offline.verify(strangers_wallet.code(), "event", entrance="东门").reason == "no-ticket"
    # Below the event scene's level (L1): the list names none of that holder's credentials.
    assert offline.verify(low_wallet.code(), "event", entrance="东门").reason == "no-ticket"
    # A server code's holder is sealed: nothing in it matches a list, so the gate asks online.
    assert (
        offline.verify(await personal_code(client, attendee), "event", entrance="东门").reason
        == "online-only"
    )
    # Nothing offline was told to the provider yet.
    assert ticket.admitted == 0 and north.admitted == 0

    # The list is signed: one byte changed and it is refused, and the list held stays.
    listed = await signed(client, gate, "GET", f"/api/v1/gates/attendees?occasion={provider.occasion_id}")
    head, body, signature = listed.json()["jws"].split(".")
    with pytest.raises(AttendeeListError):
        offline.update_attendees(f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}")
    assert offline.verify(wallet.code(), "event", entrance="东门").reason == "already-admitted"


async def test_the_attendee_list_needs_the_scope_and_a_known_occasion(client, services):
    from tests.helpers import machine_credential

    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    transit = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    assert (
        await signed(client, transit, "GET", f"/api/v1/gates/attendees?occasion={provider.occasion_id}")
    ).status_code == 403
    assert (
        await signed(client, gate, "GET", f"/api/v1/gates/attendees?occasion={uuid.uuid4()}")
    ).status_code == 404
    assert (await signed(client, gate, "GET", "/api/v1/gates/attendees?occasion=nope")).status_code == 400


async def test_uploads_admit_each_ticket_once_under_concurrent_uploads_from_two_gates(client, services):
    provider = provided(services)
    east, west = await venue_gate(client, services, provider), await venue_gate(client, services, provider)
    attendee = await real_named(client, services)
    wallet = await phone(client, attendee)
    ticket = provider.sell(uuid.UUID(attendee["resident_id"]))
    others = [await real_named(client, services) for _ in range(3)]
    other_wallets = [await phone(client, p) for p in others]
    other_tickets = [provider.sell(uuid.UUID(p["resident_id"])) for p in others]

    # Both gates were offline and both let the attendee in (two codes of one phone), and each admitted others.
    east_codes = [wallet.code(), *(w.code() for w in other_wallets[:2])]
    west_codes = [wallet.code(), other_wallets[2].code()]
    east_batch = {
        "admissions": [offline_admission(f"e-{i}", provider.occasion_id, c) for i, c in enumerate(east_codes)]
    }
    west_batch = {
        "admissions": [offline_admission(f"w-{i}", provider.occasion_id, c) for i, c in enumerate(west_codes)]
    }
    east_up, west_up = await asyncio.gather(
        signed(client, east, "POST", "/api/v1/gates/admissions", east_batch),
        signed(client, west, "POST", "/api/v1/gates/admissions", west_batch),
    )
    assert east_up.status_code == west_up.status_code == 200, (east_up.text, west_up.text)
    firsts = [east_up.json()["admissions"][0], west_up.json()["admissions"][0]]
    assert sorted(a["status"] for a in firsts) == ["admitted", "refused"]
    assert [a.get("reason") for a in firsts if a["status"] == "refused"] == ["already-admitted"]
    assert ticket.admitted == 1  # counted once
    assert [t.admitted for t in other_tickets] == [1, 1, 1]
    assert east_up.json()["admitted"] + west_up.json()["admitted"] == 4

    # Sent again (a gate that did not hear the answer): answered from the first time, never admitted again.
    again = await signed(client, east, "POST", "/api/v1/gates/admissions", east_batch)
    assert [a["status"] for a in again.json()["admissions"]] in (
        ["duplicate", "duplicate", "duplicate"],
        ["refused", "duplicate", "duplicate"],
    )
    assert ticket.admitted == 1
    # Scanned online afterwards: already admitted.
    online = await scan(client, east, await personal_code(client, attendee), provider.occasion_id)
    assert online.json()["reason"] == "already-admitted"
    # The holder sees the offline admission in their scan history.
    await services.codes.verification.flush_scans()
    history = (await client.get("/api/v1/me/scans", headers=bearer(attendee))).json()["scans"]
    assert ("event", "allowed", "ok") in {(s["scene"], s["verdict"], s["reason"]) for s in history}


async def test_uploads_are_verified_at_their_scan_time(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    attendee = await real_named(client, services)
    provider.sell(uuid.UUID(attendee["resident_id"]))
    wallet = await phone(client, attendee)
    code = wallet.code()
    batch = {
        "admissions": [
            offline_admission(
                "before", provider.occasion_id, code, time.time() - 3600
            ),  # the code was not shown yet
            offline_admission("future", provider.occasion_id, code, time.time() + 7200),
            offline_admission("old", provider.occasion_id, code, time.time() - 4 * 86400),
            offline_admission(
                "forged", provider.occasion_id, code[:-3] + ("AAA" if code[-3:] != "AAA" else "BBB")
            ),
        ]
    }
    answer = await signed(client, gate, "POST", "/api/v1/gates/admissions", batch)
    assert answer.status_code == 200, answer.text
    outcomes = [(a["status"], a.get("reason")) for a in answer.json()["admissions"]]
    assert outcomes[:3] == [("refused", "not-yet-valid"), ("refused", "future"), ("refused", "too-late")]
    assert outcomes[3] in (("refused", "bad-device-signature"), ("refused", "malformed"))
    assert provider.asked == 0
    bad = await signed(
        client, gate, "POST", "/api/v1/gates/admissions", {"admissions": [{"admission_id": "x"}]}
    )
    assert bad.status_code == 400


async def test_a_printed_ticket_admits_once_online_and_offline(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    offline_door = await venue_gate(client, services, provider)
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    online_ticket, offline_ticket = provider.sell(None), provider.sell(None, entrances=("北门",))
    tickets = services.codes.ticket_codes
    printed = await tickets.issue(online_ticket.ticket_id, provider.occasion_id, ends)
    printed_offline = await tickets.issue(offline_ticket.ticket_id, provider.occasion_id, ends)
    assert printed.startswith("TZ2:") and len(printed) == 4 + 164

    first = await scan(client, gate, printed, provider.occasion_id)
    assert first.json() == {
        "allowed": True,
        "reason": "ok",
        "scene": "event",
        "code_type": "ticket",
        "section": "A区",
        "seat": "3排12座",
    }
    assert (await scan(client, gate, printed, provider.occasion_id)).json()["reason"] == "already-admitted"
    assert (await scan(client, gate, printed, uuid.uuid4())).json()["reason"] == "no-ticket"
    from tests.helpers import machine_credential, verify

    metro = await machine_credential(client, services, ["verify:transit"])
    assert (await verify(client, metro, printed, "transit")).json()["reason"] == "wrong-code-type"

    offline = await offline_gate(client, offline_door, provider.occasion_id)
    assert offline.verify(printed_offline, "event", entrance="东门").reason == "wrong-entrance"
    verdict = offline.verify(printed_offline, "event", entrance="北门")
    assert (verdict.reason, verdict.ticket) == ("ok", offline_ticket.ticket_id.bytes)
    assert offline.verify(printed_offline, "event", entrance="北门").reason == "already-admitted"
    assert offline.verify(printed_offline, "transit").reason == "no-entitlement"
    other = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    assert other.verify(printed_offline, None).reason == "ok"  # any gate verifies it from the JWKS alone
    assert (
        other.verify(printed_offline, "event", entrance="北门").reason == "no-ticket"
    )  # no list of its occasion

    upload = await signed(
        client,
        offline_door,
        "POST",
        "/api/v1/gates/admissions",
        {
            "admissions": [
                {**offline_admission("p-1", provider.occasion_id, printed_offline), "entrance": "北门"}
            ]
        },
    )
    assert [a["status"] for a in upload.json()["admissions"]] == ["admitted"]
    assert offline_ticket.admitted == 1


async def test_a_printed_ticket_cannot_outlive_its_occasion_window(client, services):
    from app_backend.kernel.errors import DomainError

    tickets = services.codes.ticket_codes
    with pytest.raises(DomainError):
        await tickets.issue(uuid.uuid4(), uuid.uuid4(), dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    with pytest.raises(DomainError):
        await tickets.issue(uuid.uuid4(), uuid.uuid4(), dt.datetime.now(dt.UTC) + dt.timedelta(days=401))


async def test_one_batch_sent_twice_at_once_admits_once(client, services):
    """The gate did not hear the first answer and sent the batch again while the first was still running: the
    admission id is claimed once (the second waits for the first to commit), so the seller is asked once."""
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    attendee = await real_named(client, services)
    ticket = provider.sell(uuid.UUID(attendee["resident_id"]))
    wallet = await phone(client, attendee)
    batch = {"admissions": [offline_admission("twice-1", provider.occasion_id, wallet.code())]}
    first, second = await asyncio.gather(
        signed(client, gate, "POST", "/api/v1/gates/admissions", batch),
        signed(client, gate, "POST", "/api/v1/gates/admissions", batch),
    )
    statuses = sorted(r.json()["admissions"][0]["status"] for r in (first, second))
    assert statuses == ["admitted", "duplicate"], (first.text, second.text)
    assert ticket.admitted == 1 and provider.asked == 1


async def test_the_attendee_list_names_only_live_credentials_of_active_accounts(client, services):
    import base64
    import json as jsonlib

    from tests.helpers import set_resident_status

    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    kept, blocked = await real_named(client, services), await real_named(client, services)
    phones = {"kept": await phone(client, kept), "lost": await phone(client, kept)}
    blocked_phone = await phone(client, blocked)
    provider.sell(uuid.UUID(kept["resident_id"]))
    provider.sell(uuid.UUID(blocked["resident_id"]))
    lost_id = phones["lost"].credential[9:17].hex()
    assert (
        await client.delete(f"/api/v1/codes/device-credentials/{lost_id}", headers=bearer(kept))
    ).status_code == 204
    await set_resident_status(client, services, blocked["resident_id"], "blocked")

    listed = await signed(client, gate, "GET", f"/api/v1/gates/attendees?occasion={provider.occasion_id}")
    payload = listed.json()["jws"].split(".")[1]
    body = jsonlib.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    named = {c for t in body["tickets"] for c in t["credentials"]}
    assert phones["kept"].credential[9:17].hex() in named
    assert lost_id not in named and blocked_phone.credential[9:17].hex() not in named
    assert listed.json()["tickets"] == 2
    # Tickets listed, never who holds them.
    assert all(set(t) <= {"ticket", "entrances", "section", "seat", "credentials"} for t in body["tickets"])
