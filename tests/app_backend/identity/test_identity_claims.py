"""An identity has one rightful owner: knowing a name and an ID number proves nothing (real-name also needs the
carriers' three-factor check), and a person who proves by face that an identity is theirs takes it from the
account that held it (issue 13)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from code_service.holder import DeviceWallet
from tests.app_backend.identity.test_residents import (
    FACE,
    FACE_SESSIONS,
    assert_problem,
    enrolled_person,
    me,
    random_name,
    real_name,
    vendor_result,
)
from tests.helpers import (
    bearer,
    enrol_person,
    face_verified,
    feed_insurance,
    login,
    machine_credential,
    personal_code,
    random_id_number,
    real_named,
    register_device,
    signed,
    verify,
)

DEVICES = "/api/v1/codes/device-credentials"


async def claim_session(client: Any, tokens: dict[str, Any], name: str, id_number: str) -> Any:
    return await client.post(
        FACE_SESSIONS, json={"name": name, "id_number": id_number}, headers=bearer(tokens)
    )


async def claim(client: Any, tokens: dict[str, Any], name: str, id_number: str, outcome: str = "pass") -> Any:
    """Starts a face check against the named person, lets the dev vendor answer, and confirms it."""
    started = await claim_session(client, tokens, name, id_number)
    assert started.status_code == 200, started.text
    session_id = started.json()["session_id"]
    token = await vendor_result(client, session_id, outcome)
    return await client.post(
        FACE, json={"session_id": session_id, "result_token": token}, headers=bearer(tokens)
    )


async def outbox(client: Any, phone: str) -> list[str]:
    answer = await client.get("/api/v1/dev/outbox", params={"phone": phone})
    assert answer.status_code == 200, answer.text
    return [m["text"] for m in answer.json()["messages"]]


async def holders_of(db: Any, services: Any, id_number: str) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM identity.residents WHERE id_number_hash = $1",
        services.cipher.lookup_hash("resident.id_number", id_number),
    )
    return [str(r["id"]) for r in rows]


async def _insurance_department(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["feeds:insurance"], kind="department")


# --- the carriers' three-factor check at real-name (L2) -----------------------------------------------------


async def test_a_new_phone_cannot_real_name_as_a_registry_person(client, services, db):
    # Issue 13: a new phone real-named as a seeded registry person, the insurance feed marked the number insured,
    # and the hospital scene answered with a voucher.
    from app_backend.composition.seed import DEMO_PEOPLE, DEMO_PHONES

    name, id_number = DEMO_PEOPLE[4]  # a seeded registry person, enrolled as `tzt seed` does
    await enrol_person(services, name, id_number, DEMO_PHONES[id_number][0])
    stranger = await login(client)
    refused = await real_name(client, stranger, name, id_number)
    body = assert_problem(refused, 422, "phone")
    assert body["type"].endswith("phone-not-registered")
    assert "face verification" in body["detail"]
    profile = await me(client, stranger)
    assert profile["level"] == "L1" and profile["id_number"] is None
    # So the department's feed finds no account for that person, and nothing reaches the stranger's codes.
    fed = await feed_insurance(client, await _insurance_department(client, services), id_number, True)
    assert fed["holders_with_accounts"] == 0
    outcomes = await db.fetch(
        "SELECT outcome FROM audit.events WHERE action = 'resident.real_name' AND target_id = $1",
        stranger["resident_id"],
    )
    assert [r["outcome"] for r in outcomes] == ["phone-not-theirs"]
    # The person, with their own phone, real-names as before.
    owner = await login(client, DEMO_PHONES[id_number][0])
    assert (await real_name(client, owner, name, id_number)).status_code == 200


async def test_a_phone_registered_to_someone_else_does_not_pass(client, services):
    tokens = await login(client)
    await enrolled_person(services, tokens)  # the phone is registered, to another person
    name, id_number = await enrolled_person(services)
    assert_problem(await real_name(client, tokens, name, id_number), 422, "phone")


async def test_the_dev_registry_knows_the_demo_peoples_phones(services):
    from app_backend.composition.seed import DEMO_PEOPLE, DEMO_PHONES

    name, id_number = DEMO_PEOPLE[0]
    await enrol_person(services, name, id_number, DEMO_PHONES[id_number][0])
    async with services.pool.acquire() as conn:
        registry = services.population_registry
        assert await registry.phone_belongs(conn, name, id_number, DEMO_PHONES[id_number][0])
        assert not await registry.phone_belongs(conn, name, id_number, "13800009999")
        assert not await registry.phone_belongs(conn, name + "琮", id_number, DEMO_PHONES[id_number][0])


# --- face verification takes an identity over (L3) ----------------------------------------------------------


async def test_the_rightful_owner_takes_the_identity_back_by_face_verification(client, services, db):
    # The holder got L2 with the identity (a SIM in the owner's name, or before the three-factor check) and has
    # a device credential that carries its entitlements offline.
    holder = await real_named(client, services, name=random_name())
    name, id_number = holder["name"], holder["id_number"]
    wallet = DeviceWallet.create()
    credential = await register_device(client, holder, wallet)

    # The owner cannot real-name (409), and the answer says how to prove it is theirs.
    owner = await login(client)
    await enrol_person(services, name, id_number, owner["phone"])
    taken = assert_problem(await real_name(client, owner, name, id_number), 409, "id_number")
    assert "face verification" in taken["detail"]

    answer = await claim(client, owner, name, id_number)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"level": "L3", "identity": "taken-over"}
    profile = await me(client, owner)
    assert profile["level"] == "L3" and profile["id_number"] == id_number[:3] + "*" * 11 + id_number[-4:]
    assert await holders_of(db, services, id_number) == [owner["resident_id"]]

    # The holder: every session ended; logging in again with the phone works, at L1, with no identity.
    assert (await client.get("/api/v1/me", headers=bearer(holder))).status_code == 401
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": holder["refresh_token"]})
    assert refreshed.status_code == 401
    again = await login(client, holder["phone"])
    assert again["level"] == "L1" and again["resident_id"] == holder["resident_id"]
    demoted = await me(client, again)
    assert (demoted["name"], demoted["id_number"], demoted["face_verified_at"]) == (None, None, None)
    # Its device credential ended (code_service also puts it on the deny list gates sync).
    listed = await client.get(DEVICES, headers=bearer(again))
    assert listed.status_code == 200, listed.text
    ended = [c for c in listed.json()["credentials"] if c["id"] == credential["id"]]
    assert ended and ended[0]["revoked_at"] is not None

    # Both were told by SMS.
    assert any("L1" in text and "12345" in text for text in await outbox(client, holder["phone"]))
    assert any("face verification" in text for text in await outbox(client, owner["phone"]))

    # Audited: the claim on the owner, the demotion on the holder (where the holder can see it).
    took = await db.fetchval(
        "SELECT detail->>'took_over_from' FROM audit.events WHERE action = 'resident.face_verification' "
        "AND target_id = $1 AND outcome = 'success'",
        owner["resident_id"],
    )
    assert took == holder["resident_id"]
    demotion = await db.fetchrow(
        "SELECT actor_id, outcome, detail->>'claimant' AS claimant FROM audit.events "
        "WHERE action = 'resident.identity_taken_over' AND target_id = $1",
        holder["resident_id"],
    )
    assert (demotion["actor_id"], demotion["outcome"], demotion["claimant"]) == (
        owner["resident_id"],
        "demoted",
        owner["resident_id"],
    )

    # Departments' feeds now reach the owner's account.
    fed = await feed_insurance(client, await _insurance_department(client, services), id_number, True)
    assert fed["holders_with_accounts"] == 1
    async with services.pool.acquire() as conn:
        person = services.identity.directory.person_key(id_number)
        assert await services.identity.directory.resident_of_person(conn, person) == uuid.UUID(
            owner["resident_id"]
        )


async def test_an_l1_resident_claims_a_free_identity_by_face(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services)  # no phone of theirs registered: face proves it instead
    answer = await claim(client, tokens, name, id_number)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"level": "L3"}
    profile = await me(client, tokens)
    assert profile["level"] == "L3" and profile["real_name_verified_at"] and profile["face_verified_at"]


async def test_concurrent_takeovers_leave_exactly_one_owner(client, services, db):
    holder = await real_named(client, services, name=random_name())
    name, id_number = holder["name"], holder["id_number"]
    claimants = [await login(client) for _ in range(4)]
    sessions = []
    for tokens in claimants:
        started = await claim_session(client, tokens, name, id_number)
        assert started.status_code == 200, started.text
        session_id = started.json()["session_id"]
        sessions.append((tokens, session_id, await vendor_result(client, session_id)))
    answers = await asyncio.gather(
        *(
            client.post(FACE, json={"session_id": sid, "result_token": tok}, headers=bearer(tokens))
            for tokens, sid, tok in sessions
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    owners = await holders_of(db, services, id_number)
    assert len(owners) == 1 and owners[0] in {c["resident_id"] for c in claimants}
    levels = await db.fetch(
        "SELECT id::text AS id, level FROM identity.residents WHERE id = ANY($1::uuid[])",
        [holder["resident_id"], *(c["resident_id"] for c in claimants)],
    )
    assert sorted(r["level"] for r in levels) == [1, 1, 1, 1, 3]
    assert {r["id"] for r in levels if r["level"] == 3} == set(owners)


async def test_a_failed_face_check_takes_nothing(client, services, db):
    holder = await real_named(client, services, name=random_name())
    claimant = await login(client)
    answer = await claim(client, claimant, holder["name"], holder["id_number"], outcome="fail")
    assert_problem(answer, 422, "result_token")
    assert await holders_of(db, services, holder["id_number"]) == [holder["resident_id"]]
    assert (await me(client, holder))["level"] == "L2"


async def test_a_claim_must_match_the_registry_and_name_both_fields(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services)
    mismatch = await claim_session(client, tokens, name + "琮", id_number)
    assert {e["field"] for e in assert_problem(mismatch, 422)["errors"]} == {"name", "id_number"}
    unknown = await claim_session(client, tokens, name, random_id_number())
    assert_problem(unknown, 422)
    half = await client.post(FACE_SESSIONS, json={"name": name}, headers=bearer(tokens))
    assert_problem(half, 400, "id_number")
    bad = await claim_session(client, tokens, name, id_number[:17])
    assert_problem(bad, 400, "id_number")
    assert (await me(client, tokens))["level"] == "L1"


async def test_an_account_with_an_identity_cannot_claim_another(client, services):
    tokens = await real_named(client, services, name=random_name())
    other_name, other_number = await enrolled_person(services)
    assert_problem(await claim_session(client, tokens, other_name, other_number), 409)
    # Its own identity, named, is fine (the same as no body).
    assert (await claim_session(client, tokens, tokens["name"], tokens["id_number"])).status_code == 200


# --- any release of unmasked data needs L3 ------------------------------------------------------------------


async def test_a_resident_sees_their_own_unmasked_data_only_at_l3(client, services, db):
    tokens = await real_named(client, services, name=random_name())
    refused = await client.post("/api/v1/me/reveal", headers=bearer(tokens))
    assert_problem(refused, 403, "level")
    for secret in (tokens["name"], tokens["id_number"]):
        assert secret not in refused.text
    assert (await claim(client, tokens, tokens["name"], tokens["id_number"])).status_code == 200
    revealed = await client.post("/api/v1/me/reveal", headers=bearer(tokens))
    assert revealed.status_code == 200, revealed.text
    assert revealed.json() == {key: tokens[key] for key in ("phone", "name", "id_number")}
    outcomes = await db.fetch(
        "SELECT outcome FROM audit.events WHERE action = 'resident.reveal' AND target_id = $1 ORDER BY at",
        tokens["resident_id"],
    )
    assert [r["outcome"] for r in outcomes] == ["denied", "success"]


async def test_a_stale_l3_token_releases_nothing_once_the_identity_is_gone(client, services):
    holder = await real_named(client, services, name=random_name())
    assert (await claim(client, holder, holder["name"], holder["id_number"])).status_code == 200
    owner = await login(client)
    assert (await claim(client, owner, holder["name"], holder["id_number"])).status_code == 200
    again = await login(client, holder["phone"])
    assert_problem(await client.post("/api/v1/me/reveal", headers=bearer(again)), 403, "level")


async def test_dev_enrols_a_registry_person_so_load_tests_can_real_name_their_residents(client):
    """The load-test kit's residents must reach L2 (transit and health require it) over HTTP alone."""
    tokens = await login(client)
    person = {"name": "周瑜", "id_number": random_id_number()}
    enrolled = await client.post("/api/v1/dev/registry/people", json={**person, "phones": [tokens["phone"]]})
    assert enrolled.status_code == 204, enrolled.text
    named = await client.post("/api/v1/me/real-name", json=person, headers=bearer(tokens))
    assert named.status_code == 200 and named.json()["level"] == "L2", named.text
    bad = await client.post("/api/v1/dev/registry/people", json={"name": "周瑜", "id_number": "123"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "id_number", bad.text


async def test_a_medical_voucher_ends_with_the_identity_it_was_issued_on(client, services):
    """Issue 13 probe: a voucher issued to the account that held an identity was still redeemed after the rightful
    owner took the identity back by face."""
    holder = await real_named(client, services, name=random_name())
    await face_verified(client, holder)
    await feed_insurance(client, await _insurance_department(client, services), holder["id_number"], True)
    hospital = await machine_credential(client, services, ["verify:medical"], kind="verifier_operator")
    scanned = (await verify(client, hospital, await personal_code(client, holder), "medical")).json()
    assert scanned["allowed"] and scanned["voucher"], scanned

    owner = await login(client)
    await enrol_person(services, holder["name"], holder["id_number"], owner["phone"])
    assert (await claim(client, owner, holder["name"], holder["id_number"])).status_code == 200
    redeemed = await signed(
        client, hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": scanned["voucher"]}
    )
    assert redeemed.status_code == 409 and redeemed.json()["detail"].startswith("voucher:"), redeemed.text
