"""The event scene online: the holder's one code (personal or device) admits once per ticket through the provider
that knows the occasion, shows only the section and seat, and is recorded in the holder's scan history."""

from __future__ import annotations

import uuid

from code_service.holder import DeviceWallet
from tests.code_service.entry.helpers import provided, scan, venue_gate
from tests.helpers import (
    bearer,
    login,
    machine_credential,
    personal_code,
    real_named,
    register_device,
    verify,
)

EVENT_FIELDS = {"allowed", "reason", "scene", "code_type", "section", "seat"}


async def test_a_ticket_holder_is_admitted_once_and_sees_it_in_their_history(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    other_gate = await venue_gate(client, services, provider)
    person = await real_named(client, services)
    ticket = provider.sell(uuid.UUID(person["resident_id"]), seat="7排1座")

    first = await scan(client, gate, await personal_code(client, person), provider.occasion_id)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "allowed": True,
        "reason": "ok",
        "scene": "event",
        "code_type": "personal",
        "section": "A区",
        "seat": "7排1座",
    }
    assert set(first.json()) <= EVENT_FIELDS  # never the name (no masked_name), no rider token
    assert ticket.admitted == 1

    # Another code of the same holder, at another gate of the venue: the ticket was admitted.
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    again = await scan(client, other_gate, wallet.code(), provider.occasion_id)
    assert again.json()["allowed"] is False
    assert again.json()["reason"] == "already-admitted"
    assert again.json()["code_type"] == "device"
    assert ticket.admitted == 1

    await services.codes.verification.flush_scans()
    history = await client.get("/api/v1/me/scans", headers=bearer(person))
    events = [s for s in history.json()["scans"] if s["scene"] == "event"]
    assert [(s["verdict"], s["reason"]) for s in events] == [
        ("denied", "already-admitted"),
        ("allowed", "ok"),
    ]


async def test_a_ticket_for_another_entrance_is_refused_and_not_used_up(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    person = await real_named(client, services)
    ticket = provider.sell(uuid.UUID(person["resident_id"]), entrances=("北门",))

    wrong = await scan(client, gate, await personal_code(client, person), provider.occasion_id, "东门")
    assert (wrong.json()["allowed"], wrong.json()["reason"]) == (False, "wrong-entrance")
    assert ticket.admitted == 0
    right = await scan(client, gate, await personal_code(client, person), provider.occasion_id, "北门")
    assert (right.json()["allowed"], right.json()["reason"]) == (True, "ok")


async def test_no_ticket_for_this_person_or_for_an_occasion_nobody_knows(client, services):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    holder, stranger = await real_named(client, services), await real_named(client, services)
    provider.sell(uuid.UUID(holder["resident_id"]))

    refused = await scan(client, gate, await personal_code(client, stranger), provider.occasion_id)
    assert (refused.json()["allowed"], refused.json()["reason"]) == (False, "no-ticket")
    unknown = await scan(client, gate, await personal_code(client, holder), uuid.uuid4())
    assert (unknown.json()["allowed"], unknown.json()["reason"]) == (False, "no-ticket")
    # A gate that is not one of the occasion's: the provider does not answer it, so nobody does.
    elsewhere = await machine_credential(client, services, ["verify:event"])
    foreign = await scan(client, elsewhere, await personal_code(client, holder), provider.occasion_id)
    assert (foreign.json()["allowed"], foreign.json()["reason"]) == (False, "no-ticket")


async def test_the_event_scene_needs_its_scope(client, services):
    provider = provided(services)
    person = await real_named(client, services)
    provider.sell(uuid.UUID(person["resident_id"]))
    metro = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    provider.gates.add(uuid.UUID(metro["organisation"]["id"]))
    response = await scan(client, metro, await personal_code(client, person), provider.occasion_id)
    assert response.status_code == 403, response.text
    assert provider.asked == 0


async def test_a_holder_below_the_scene_level_gets_no_entitlement_and_the_provider_is_not_asked(
    client, services
):
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    phone_only = await login(client)  # L1
    provider.sell(uuid.UUID(phone_only["resident_id"]))
    response = await scan(client, gate, await personal_code(client, phone_only), provider.occasion_id)
    assert (response.json()["allowed"], response.json()["reason"]) == (False, "no-entitlement")
    assert provider.asked == 0


async def test_the_event_scene_names_its_occasion_and_entrance(client, services):
    gate = await machine_credential(client, services, ["verify:event"])
    person = await real_named(client, services)
    code = await personal_code(client, person)
    missing = await verify(client, gate, code, "event")
    assert missing.status_code == 400, missing.text
    assert missing.json()["errors"][0]["field"] == "occasion_id"
    no_entrance = await scan(client, gate, code, uuid.uuid4(), "")
    assert no_entrance.status_code == 400, no_entrance.text


async def test_an_enterprise_code_is_no_ticket_holder(client, services):
    from tests.helpers import enterprise_of

    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    rep, enterprise = await enterprise_of(client, services)
    code = (await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(rep))).json()[
        "code"
    ]
    response = await scan(client, gate, code, provider.occasion_id)
    assert (response.json()["allowed"], response.json()["reason"]) == (False, "wrong-code-type")
    assert provider.asked == 0


async def test_re_entry_is_the_occasions_rule_and_the_answer_says_so(client, services):
    provider = provided(services)
    provider.re_entry = True
    gate = await venue_gate(client, services, provider)
    person = await real_named(client, services)
    ticket = provider.sell(uuid.UUID(person["resident_id"]))
    first = (await scan(client, gate, await personal_code(client, person), provider.occasion_id)).json()
    again = (await scan(client, gate, await personal_code(client, person), provider.occasion_id)).json()
    assert (first["allowed"], "re_entry" in first) == (True, False)
    assert (again["allowed"], again["reason"], again["re_entry"]) == (True, "ok", True)
    assert ticket.admitted == 1
