"""Enterprises are created by their registered legal representative and administered by their members."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from app_backend.identity.validators import USCC_ALPHABET
from tests.helpers import (
    bearer,
    join_enterprise,
    login,
    random_id_number,
    random_phone,
    random_uscc,
    real_named,
    staff,
)

ENTERPRISES = "/api/v1/enterprises"


def _masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


def _bad_checksum(uscc: str) -> str:
    """The same code with a check character that does not match (still in the credit-code alphabet)."""
    wrong = next(c for c in USCC_ALPHABET if c != uscc[-1])
    return uscc[:-1] + wrong


def _field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


async def _enrol(services: Any, uscc: str, name: str, legal_rep_id_number: str) -> None:
    async with services.pool.acquire() as conn:
        await services.legal_entities.enrol(conn, uscc, name, legal_rep_id_number)


async def _representative_with_entity(client: Any, services: Any) -> tuple[dict[str, Any], str, str]:
    """An L2 resident and a credit code the legal-entity registry lists them as representative of."""
    rep = await real_named(client, services)
    uscc, name = random_uscc(), f"泰州测试{uuid.uuid4().hex[:8]}有限公司"
    await _enrol(services, uscc, name, rep["id_number"])
    return rep, uscc, name


async def _create(client: Any, tokens: dict[str, Any], name: str, uscc: str) -> Any:
    return await client.post(ENTERPRISES, json={"name": name, "uscc": uscc}, headers=bearer(tokens))


async def _invite(
    client: Any, admin: dict[str, Any], enterprise_id: str, phone: str, role: str = "member"
) -> Any:
    return await client.post(
        f"{ENTERPRISES}/{enterprise_id}/invitations",
        json={"phone": phone, "role": role},
        headers=bearer(admin),
    )


async def _answer(client: Any, person: dict[str, Any], invitation_id: str, answer: str) -> Any:
    return await client.post(f"{ENTERPRISES}/invitations/{invitation_id}/{answer}", headers=bearer(person))


async def _mine(client: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    listed = await client.get(f"{ENTERPRISES}/invitations", headers=bearer(person))
    assert listed.status_code == 200, listed.text
    return listed.json()["invitations"]  # type: ignore[no-any-return]


async def _member_ids(client: Any, admin: dict[str, Any], enterprise_id: str) -> set[str]:
    listing = await client.get(f"{ENTERPRISES}/{enterprise_id}/members", headers=bearer(admin))
    assert listing.status_code == 200, listing.text
    return {m["resident_id"] for m in listing.json()["members"]}


async def _remove(client: Any, admin: dict[str, Any], enterprise_id: str, resident_id: str) -> Any:
    return await client.delete(f"{ENTERPRISES}/{enterprise_id}/members/{resident_id}", headers=bearer(admin))


async def _enterprise(client: Any, services: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the admin's tokens, the created enterprise)."""
    rep, uscc, name = await _representative_with_entity(client, services)
    created = await _create(client, rep, name, uscc)
    assert created.status_code == 201, created.text
    return rep, created.json()


async def _admin_count(db: Any, enterprise_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM enterprises.enterprise_members WHERE enterprise_id = $1 AND role = 'admin'",
            uuid.UUID(enterprise_id),
        )
    )


# --- creation -----------------------------------------------------------------------------------------------


async def test_legal_representative_creates_enterprise_and_becomes_admin(client, services, db):
    rep, uscc, name = await _representative_with_entity(client, services)
    created = await _create(client, rep, name, uscc.lower())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["uscc"] == uscc and body["name"] == name
    assert body["my_role"] == "admin" and body["checksum_override"] is False and body["standing"] == "good"

    me = await client.get("/api/v1/me", headers=bearer(rep))
    assert me.status_code == 200
    assert me.json()["enterprises"] == [{"id": body["id"], "name": name, "uscc": uscc, "role": "admin"}]

    one = await client.get(f"{ENTERPRISES}/{body['id']}", headers=bearer(rep))
    assert one.status_code == 200 and one.json()["my_role"] == "admin"
    audited = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'enterprise.create' AND outcome = 'success' "
        "AND target_id = $1 AND actor_id = $2",
        body["id"],
        rep["resident_id"],
    )
    assert audited == 1


async def test_registry_name_matches_across_full_width_brackets_and_spaces(client, services):
    rep = await real_named(client, services)
    uscc = random_uscc()
    await _enrol(services, uscc, "泰州（海陵）测试有限公司", rep["id_number"])
    created = await client.post(
        ENTERPRISES, json={"name": "  泰州(海陵)测试有限公司 ", "uscc": uscc}, headers=bearer(rep)
    )
    assert created.status_code == 201, created.text


async def test_malformed_credit_codes_are_400_naming_uscc(client, services):
    rep, uscc, name = await _representative_with_entity(client, services)
    for bad_char in "IOZSV":
        bad = uscc[:5] + bad_char + uscc[6:]
        response = await _create(client, rep, name, bad)
        assert response.status_code == 400, (bad_char, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert _field(response) == "uscc" and bad_char in response.json()["errors"][0]["message"]

    for wrong_length in (uscc[:17], uscc + "0", ""):
        response = await _create(client, rep, name, wrong_length)
        assert response.status_code == 400, (wrong_length, response.text)
        assert _field(response) == "uscc"

    wrong_check = await client.post(
        ENTERPRISES, json={"name": name, "uscc": _bad_checksum(uscc)}, headers=bearer(rep)
    )
    assert wrong_check.status_code == 400 and _field(wrong_check) == "uscc"
    assert "check character" in wrong_check.json()["detail"]

    blank_name = await _create(client, rep, "   ", uscc)
    assert blank_name.status_code == 400 and _field(blank_name) == "name"
    # None of these created anything: the good code is still free.
    assert (await _create(client, rep, name, uscc)).status_code == 201


async def test_registry_refusals_name_the_field(client, services, db):
    rep, uscc, name = await _representative_with_entity(client, services)

    mismatch = await _create(client, rep, name + "分公司", uscc)
    assert mismatch.status_code == 422 and _field(mismatch) == "name"

    unknown = await _create(client, rep, name, random_uscc())
    assert unknown.status_code == 422 and _field(unknown) == "uscc"

    stranger = await real_named(client, services, name="孙权")
    not_rep = await _create(client, stranger, name, uscc)
    assert not_rep.status_code == 403 and _field(not_rep) == "uscc"

    inactive_uscc = random_uscc()
    async with services.pool.acquire() as conn:
        await services.legal_entities.enrol(conn, inactive_uscc, name, rep["id_number"], status="revoked")
    inactive = await _create(client, rep, name, inactive_uscc)
    assert inactive.status_code == 422 and _field(inactive) == "uscc"

    refused = await db.fetch(
        "SELECT outcome FROM audit.events WHERE action = 'enterprise.create' AND target_id = $1 ORDER BY id",
        uscc,
    )
    assert [r["outcome"] for r in refused] == ["name-mismatch", "not-representative"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM enterprises.enterprises WHERE uscc = ANY($1::text[])", [uscc, inactive_uscc]
        )
        == 0
    )


async def test_l1_resident_cannot_create(client, services):
    resident = await login(client)
    uscc = random_uscc()
    await _enrol(services, uscc, "泰州无名有限公司", random_id_number())
    response = await _create(client, resident, "泰州无名有限公司", uscc)
    assert response.status_code == 403
    assert response.json()["type"].endswith("level-required")
    anonymous = await client.post(ENTERPRISES, json={"name": "泰州无名有限公司", "uscc": uscc})
    assert anonymous.status_code == 401


async def test_second_registration_of_a_code_is_409(client, services):
    rep, uscc, name = await _representative_with_entity(client, services)
    first = await _create(client, rep, name, uscc)
    assert first.status_code == 201
    again = await _create(client, rep, name, uscc)
    assert again.status_code == 409 and _field(again) == "uscc"


async def test_concurrent_registrations_of_one_code_yield_one_enterprise(client, services, db):
    rep, uscc, name = await _representative_with_entity(client, services)
    answers = await asyncio.gather(*(_create(client, rep, name, uscc) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409], [a.text for a in answers]
    assert await db.fetchval("SELECT count(*) FROM enterprises.enterprises WHERE uscc = $1", uscc) == 1


# --- checksum override --------------------------------------------------------------------------------------


async def test_checksum_override_admits_a_registry_code_that_fails_the_checksum(client, services, db):
    rep = await real_named(client, services)
    uscc, name = _bad_checksum(random_uscc()), f"泰州老字号{uuid.uuid4().hex[:6]}茶社"
    await _enrol(services, uscc, name, rep["id_number"])

    refused = await _create(client, rep, name, uscc)
    assert refused.status_code == 400 and _field(refused) == "uscc"

    reason = "registry record predates GB 32100 check characters"
    by_resident = await client.post(
        "/api/v1/admin/uscc-overrides", json={"uscc": uscc, "reason": reason}, headers=bearer(rep)
    )
    assert by_resident.status_code == 403
    assert (await _create(client, rep, name, uscc)).status_code == 400

    admin = await staff(client, services)
    granted = await client.post(
        "/api/v1/admin/uscc-overrides", json={"uscc": uscc, "reason": reason}, headers=bearer(admin)
    )
    assert granted.status_code == 201, granted.text
    assert granted.json() == {"uscc": uscc, "status": "admitted"}
    twice = await client.post(
        "/api/v1/admin/uscc-overrides", json={"uscc": uscc, "reason": reason}, headers=bearer(admin)
    )
    assert twice.status_code == 409 and _field(twice) == "uscc"

    created = await _create(client, rep, name, uscc)
    assert created.status_code == 201, created.text
    assert created.json()["checksum_override"] is True

    rows = await db.fetch(
        "SELECT actor_type, actor_id, outcome, detail FROM audit.events "
        "WHERE action = 'admin.uscc_override' AND target_id = $1",
        uscc,
    )
    assert len(rows) == 1
    assert rows[0]["actor_type"] == "staff" and rows[0]["actor_id"] == admin["resident_id"]
    assert rows[0]["outcome"] == "success" and rows[0]["detail"]["reason"] == reason


async def test_override_is_refused_for_codes_that_need_none_or_are_malformed(client, services):
    admin = await staff(client, services)
    reason = "testing the override endpoint"
    valid = await client.post(
        "/api/v1/admin/uscc-overrides", json={"uscc": random_uscc(), "reason": reason}, headers=bearer(admin)
    )
    assert valid.status_code == 409 and _field(valid) == "uscc"
    overrides = "/api/v1/admin/uscc-overrides"
    malformed = await client.post(
        overrides, json={"uscc": "91321200MA1XK3T7QI", "reason": reason}, headers=bearer(admin)
    )
    assert malformed.status_code == 400 and _field(malformed) == "uscc"
    no_reason = await client.post(
        overrides, json={"uscc": _bad_checksum(random_uscc()), "reason": ""}, headers=bearer(admin)
    )
    assert no_reason.status_code == 400 and _field(no_reason) == "reason"


# --- members: by invitation, with the invitee's consent ---------------------------------------------------


async def test_a_member_joins_by_accepting_an_invitation_and_listing_is_masked(client, services, db):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    member = await login(client)

    invited = await _invite(client, admin, eid, member["phone"])
    assert invited.status_code == 201, invited.text
    invitation = invited.json()
    assert invitation["phone"] == _masked(member["phone"]) and member["phone"] not in invited.text
    assert invitation["role"] == "member" and invitation["status"] == "pending"

    # The invitee sees it from their own account, with the enterprise it comes from.
    mine = await _mine(client, member)
    assert [(i["id"], i["enterprise"]["id"], i["enterprise"]["name"], i["role"]) for i in mine] == [
        (invitation["id"], eid, enterprise["name"], "member")
    ]
    accepted = await _answer(client, member, invitation["id"], "accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["id"] == eid and accepted.json()["my_role"] == "member"
    assert await _mine(client, member) == []

    listing = await client.get(f"{ENTERPRISES}/{eid}/members", headers=bearer(admin))
    assert listing.status_code == 200
    people = {m["resident_id"]: m for m in listing.json()["members"]}
    assert set(people) == {admin["resident_id"], member["resident_id"]}
    assert people[admin["resident_id"]]["role"] == "admin"
    assert people[member["resident_id"]]["role"] == "member"
    assert people[member["resident_id"]]["phone"] == _masked(member["phone"])
    assert people[admin["resident_id"]]["phone"] == _masked(admin["phone"])
    assert people[admin["resident_id"]]["name"] == "周*"  # the real-named admin's name, masked
    assert member["phone"] not in listing.text and admin["phone"] not in listing.text

    # The member sees the enterprise too, with their role, and can read the member list.
    me = await client.get("/api/v1/me", headers=bearer(member))
    assert [(e["id"], e["role"]) for e in me.json()["enterprises"]] == [(eid, "member")]
    assert (await client.get(f"{ENTERPRISES}/{eid}/members", headers=bearer(member))).status_code == 200
    one = await client.get(f"{ENTERPRISES}/{eid}", headers=bearer(member))
    assert one.status_code == 200 and one.json()["my_role"] == "member"

    admin_view = await client.get(f"{ENTERPRISES}/{eid}/invitations", headers=bearer(admin))
    assert [(i["id"], i["status"]) for i in admin_view.json()["invitations"]] == [
        (invitation["id"], "accepted")
    ]
    audited = await db.fetch(
        "SELECT action, actor_id FROM audit.events WHERE target_id = $1 "
        "AND action IN ('enterprise.member_invite', 'enterprise.member_join') ORDER BY id",
        eid,
    )
    assert [(r["action"], r["actor_id"]) for r in audited] == [
        ("enterprise.member_invite", admin["resident_id"]),
        ("enterprise.member_join", member["resident_id"]),
    ]


async def test_the_invitation_answer_does_not_tell_whether_a_phone_is_registered(client, services):
    """The probe of issue 13: an administrator compares the answers for a registered and an unregistered phone."""
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    registered, unregistered = (await login(client))["phone"], random_phone()
    member = await login(client)
    await join_enterprise(client, admin, eid, member)

    def shape(response: Any) -> tuple[Any, ...]:
        body = response.json()
        return (
            response.status_code,
            response.headers["content-type"],
            sorted(body),
            body["role"],
            body["status"],
            body["answered_at"],
            len(body["phone"]),
            body["expires_at"] > body["invited_at"],
        )

    answers = [
        await _invite(client, admin, eid, phone) for phone in (registered, unregistered, member["phone"])
    ]
    assert shape(answers[0]) == shape(answers[1]) == shape(answers[2])
    assert answers[0].json()["status"] == "pending"
    # Inviting again renews the open invitation, again without a difference.
    again = [await _invite(client, admin, eid, phone, role="admin") for phone in (registered, unregistered)]
    assert shape(again[0]) == shape(again[1])
    assert (
        again[0].json()["id"] == answers[0].json()["id"] and again[1].json()["id"] == answers[1].json()["id"]
    )
    assert again[0].json()["role"] == "admin"
    # ...and the registered person was enrolled in nothing.
    assert await _member_ids(client, admin, eid) == {admin["resident_id"], member["resident_id"]}


async def test_nobody_becomes_a_member_without_accepting(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    invitee = await login(client)
    invited = await _invite(client, admin, eid, invitee["phone"], role="admin")
    assert invited.status_code == 201

    assert await _member_ids(client, admin, eid) == {admin["resident_id"]}
    assert (await client.get(f"{ENTERPRISES}/{eid}", headers=bearer(invitee))).status_code == 404
    assert (await client.post(f"{ENTERPRISES}/{eid}/code", headers=bearer(invitee))).status_code == 404
    assert (await client.get("/api/v1/me", headers=bearer(invitee))).json()["enterprises"] == []
    # Nobody else can answer for the invitee: someone else's invitation looks like none at all.
    stranger = await login(client)
    for answer in ("accept", "decline"):
        theirs = await _answer(client, stranger, invited.json()["id"], answer)
        ghost = await _answer(client, stranger, str(uuid.uuid4()), answer)
        assert theirs.status_code == ghost.status_code == 404
        assert theirs.json()["detail"] == ghost.json()["detail"]
    assert await _mine(client, stranger) == []
    assert (await _answer(client, admin, invited.json()["id"], "accept")).status_code == 404
    assert await _member_ids(client, admin, eid) == {admin["resident_id"]}
    # The old way in is gone.
    old = await client.post(
        f"{ENTERPRISES}/{eid}/members", json={"phone": invitee["phone"]}, headers=bearer(admin)
    )
    assert old.status_code in (404, 405)


async def test_an_invitation_waits_for_a_phone_that_has_no_account_yet(client, services):
    admin, enterprise = await _enterprise(client, services)
    phone = random_phone()
    assert (await _invite(client, admin, enterprise["id"], phone)).status_code == 201
    newcomer = await login(client, phone)
    [waiting] = await _mine(client, newcomer)
    assert waiting["enterprise"]["id"] == enterprise["id"]
    assert (await _answer(client, newcomer, waiting["id"], "accept")).status_code == 200
    assert newcomer["resident_id"] in await _member_ids(client, admin, enterprise["id"])


async def test_a_declined_invitation_enrols_nobody_and_stays_closed(client, services, db):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    invitee = await login(client)
    invitation = (await _invite(client, admin, eid, invitee["phone"])).json()

    declined = await _answer(client, invitee, invitation["id"], "decline")
    assert declined.status_code == 204, declined.text
    assert await _mine(client, invitee) == []
    late = await _answer(client, invitee, invitation["id"], "accept")
    assert late.status_code == 409 and late.json()["type"].endswith("invitation-answered")
    assert await _member_ids(client, admin, eid) == {admin["resident_id"]}
    admin_view = (await client.get(f"{ENTERPRISES}/{eid}/invitations", headers=bearer(admin))).json()
    assert [i["status"] for i in admin_view["invitations"]] == ["declined"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit.events WHERE action = 'enterprise.invitation_decline' "
            "AND target_id = $1 AND actor_id = $2",
            eid,
            invitee["resident_id"],
        )
        == 1
    )
    # A new invitation may be sent, and accepted.
    second = (await _invite(client, admin, eid, invitee["phone"])).json()
    assert second["id"] != invitation["id"]
    assert (await _answer(client, invitee, second["id"], "accept")).status_code == 200


async def test_an_invitation_expires_unanswered(client, services, monkeypatch):
    import datetime as dt

    from app_backend.enterprises.service import INVITATION_LIFETIME

    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    invitee = await login(client)
    invitation = (await _invite(client, admin, eid, invitee["phone"])).json()
    assert len(await _mine(client, invitee)) == 1

    later = dt.datetime.now(dt.UTC) + INVITATION_LIFETIME + dt.timedelta(minutes=1)
    monkeypatch.setattr(services.enterprises, "clock", lambda: later)
    assert await _mine(client, invitee) == []
    expired = await _answer(client, invitee, invitation["id"], "accept")
    assert expired.status_code == 410 and expired.json()["type"].endswith("invitation-expired")
    assert (await _answer(client, invitee, invitation["id"], "decline")).status_code == 410
    assert await _member_ids(client, admin, eid) == {admin["resident_id"]}
    admin_view = (await client.get(f"{ENTERPRISES}/{eid}/invitations", headers=bearer(admin))).json()
    assert [i["status"] for i in admin_view["invitations"]] == ["expired"]

    # Inviting again opens a fresh invitation, valid from the clock's now.
    renewed = (await _invite(client, admin, eid, invitee["phone"])).json()
    assert renewed["id"] != invitation["id"] and renewed["status"] == "pending"
    assert (await _answer(client, invitee, renewed["id"], "accept")).status_code == 200
    admin_view = (await client.get(f"{ENTERPRISES}/{eid}/invitations", headers=bearer(admin))).json()
    assert [(i["id"], i["status"]) for i in admin_view["invitations"]] == [
        (renewed["id"], "accepted"),
        (invitation["id"], "expired"),
    ]


async def test_a_withdrawn_invitation_cannot_be_accepted(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    invitee = await login(client)
    invitation = (await _invite(client, admin, eid, invitee["phone"])).json()
    withdrawn = await client.delete(
        f"{ENTERPRISES}/{eid}/invitations/{invitation['id']}", headers=bearer(admin)
    )
    assert withdrawn.status_code == 204, withdrawn.text
    assert await _mine(client, invitee) == []
    assert (await _answer(client, invitee, invitation["id"], "accept")).status_code == 409
    again = await client.delete(f"{ENTERPRISES}/{eid}/invitations/{invitation['id']}", headers=bearer(admin))
    assert again.status_code == 404


async def test_phone_is_normalised_when_inviting(client, services):
    admin, enterprise = await _enterprise(client, services)
    member = await login(client)
    phone = member["phone"]
    invited = await _invite(client, admin, enterprise["id"], f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}")
    assert invited.status_code == 201, invited.text
    [waiting] = await _mine(client, member)
    assert waiting["id"] == invited.json()["id"]


async def test_invitation_refusals(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]

    malformed = await _invite(client, admin, eid, "12345")
    assert malformed.status_code == 400 and _field(malformed) == "phone"

    bad_role = await _invite(client, admin, eid, (await login(client))["phone"], role="owner")
    assert bad_role.status_code == 400 and _field(bad_role) == "role"

    member = await login(client)
    await join_enterprise(client, admin, eid, member)
    # Inviting a member is answered like any invitation; accepting it is refused.
    invited = await _invite(client, admin, eid, member["phone"], role="admin")
    assert invited.status_code == 201
    duplicate = await _answer(client, member, invited.json()["id"], "accept")
    assert duplicate.status_code == 409 and duplicate.json()["type"].endswith("already-member")

    self_invited = await _invite(client, admin, eid, admin["phone"])
    assert self_invited.status_code == 201
    assert (await _answer(client, admin, self_invited.json()["id"], "accept")).status_code == 409


async def test_non_admin_member_cannot_change_members(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    member, other = await login(client), await login(client)
    await join_enterprise(client, admin, eid, member)

    invites = await _invite(client, member, eid, other["phone"])
    assert invites.status_code == 403
    sees = await client.get(f"{ENTERPRISES}/{eid}/invitations", headers=bearer(member))
    assert sees.status_code == 403
    removes = await _remove(client, member, eid, admin["resident_id"])
    assert removes.status_code == 403
    removes_self = await _remove(client, member, eid, member["resident_id"])
    assert removes_self.status_code == 403
    assert await _mine(client, other) == []
    assert await _member_ids(client, admin, eid) == {admin["resident_id"], member["resident_id"]}


async def test_outsiders_learn_nothing(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    outsider = await login(client)
    member = await login(client)
    await join_enterprise(client, admin, eid, member)

    missing = str(uuid.uuid4())
    for path in (f"{ENTERPRISES}/{eid}", f"{ENTERPRISES}/{eid}/members", f"{ENTERPRISES}/{eid}/invitations"):
        response = await client.get(path, headers=bearer(outsider))
        assert response.status_code == 404, path
        assert enterprise["name"] not in response.text and enterprise["uscc"] not in response.text
        # ...and the answer for a real enterprise is the same as for one that does not exist.
        ghost = await client.get(path.replace(eid, missing), headers=bearer(outsider))
        assert ghost.status_code == 404 and ghost.json()["detail"] == response.json()["detail"]

    assert (await _invite(client, outsider, eid, outsider["phone"])).status_code == 404
    kick = await _remove(client, outsider, eid, member["resident_id"])
    assert kick.status_code == 404
    assert (await client.get(f"{ENTERPRISES}/{eid}/members", headers=bearer(member))).status_code == 200
    assert (await client.get(f"{ENTERPRISES}/{eid}")).status_code == 401
    assert (await client.get(f"{ENTERPRISES}/invitations")).status_code == 401


async def test_admin_removes_a_member(client, services, db):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    member = await login(client)
    await join_enterprise(client, admin, eid, member)

    removed = await _remove(client, admin, eid, member["resident_id"])
    assert removed.status_code == 204 and removed.content == b""
    listing = await client.get(f"{ENTERPRISES}/{eid}/members", headers=bearer(admin))
    assert [m["resident_id"] for m in listing.json()["members"]] == [admin["resident_id"]]
    assert (await client.get(f"{ENTERPRISES}/{eid}", headers=bearer(member))).status_code == 404
    assert (await client.get("/api/v1/me", headers=bearer(member))).json()["enterprises"] == []

    again = await _remove(client, admin, eid, member["resident_id"])
    assert again.status_code == 404
    audited = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'enterprise.member_remove' "
        "AND target_id = $1 AND detail->>'member' = $2",
        eid,
        member["resident_id"],
    )
    assert audited == 1


async def test_last_admin_cannot_be_removed(client, services):
    admin, enterprise = await _enterprise(client, services)
    eid = enterprise["id"]
    member = await login(client)
    await join_enterprise(client, admin, eid, member)

    self_removal = await _remove(client, admin, eid, admin["resident_id"])
    assert self_removal.status_code == 409
    assert self_removal.json()["type"].endswith("last-admin")

    # With a second administrator appointed (and accepting), the first may leave.
    second = await login(client)
    await join_enterprise(client, admin, eid, second, role="admin")
    leave = await _remove(client, admin, eid, admin["resident_id"])
    assert leave.status_code == 204
    last = await _remove(client, second, eid, second["resident_id"])
    assert last.status_code == 409


async def test_two_admins_removing_each_other_concurrently_leave_one(client, services, db):
    for _ in range(5):
        first, enterprise = await _enterprise(client, services)
        eid = enterprise["id"]
        second = await login(client)
        await join_enterprise(client, first, eid, second, role="admin")

        answers = await asyncio.gather(
            _remove(client, first, eid, second["resident_id"]),
            _remove(client, second, eid, first["resident_id"]),
        )
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 204 and codes[1] in (404, 409), [a.text for a in answers]
        assert await _admin_count(db, eid) == 1
