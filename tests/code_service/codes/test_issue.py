"""Issuing the one code: server codes, enterprise codes, device credentials, the platform keys, department feeds."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app_backend.identity.repository import SessionRepository
from code_service.holder import DeviceWallet
from code_service.verifier import OfflineVerifier
from code_service.verifier.denylist import DenyListError
from code_service.verifier.format import (
    MAX_CREDENTIAL_LIFETIME,
    TYPE_DEVICE,
    TYPE_ENTERPRISE,
    TYPE_PERSONAL,
    DeviceCode,
    Flags,
    Health,
    ServerCode,
    Standing,
    decode,
)
from tests.helpers import (
    bearer,
    enrol_person,
    enterprise_of,
    face_verified,
    feed_health,
    feed_insurance,
    join_enterprise,
    login,
    machine_credential,
    nobodys_id_number,
    opened,
    otp_from_outbox,
    personal_code,
    random_id_number,
    random_ip,
    real_named,
    register_device,
    rider,
    scene_keys_of,
    set_resident_status,
    set_transit,
    signed,
    verify,
)

PERSONAL = "/api/v1/codes/personal"
DEVICES = "/api/v1/codes/device-credentials"


def _field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


async def _issue(client: Any, person: dict[str, Any]) -> dict[str, Any]:
    issued = await client.post(PERSONAL, headers=bearer(person))
    assert issued.status_code == 200, issued.text
    return issued.json()  # type: ignore[no-any-return]


async def _department(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["feeds:health", "feeds:insurance"], kind="department")


async def _set_transit(services: Any, person: dict[str, Any], **state: bool) -> None:
    await set_transit(services, uuid.UUID(person["resident_id"]), **state)


# --- server codes -------------------------------------------------------------------------------------------


async def test_personal_code_lives_at_most_a_minute(client, services):
    person = await rider(client, services)
    before = int(time.time())
    issued = await _issue(client, person)
    after = int(time.time())
    assert issued["kind"] == "personal"
    assert before <= issued["issued_at"] <= after
    assert 0 < issued["expires_at"] - issued["issued_at"] <= 60
    code = decode(issued["code"])
    assert isinstance(code, ServerCode) and code.type == TYPE_PERSONAL
    assert code.issued_at == issued["issued_at"] and code.expires_at == issued["expires_at"]
    assert 1 <= code.lifetime <= 60
    assert len(issued["code"]) < 160  # a small QR, far below a device code


async def test_personal_code_needs_a_session(client):
    assert (await client.post(PERSONAL)).status_code == 401
    assert (await client.post(PERSONAL, headers={"Authorization": "Bearer nonsense"})).status_code == 401


async def test_every_code_is_unique_and_names_its_holder_only_to_the_platform(client, services):
    person = await rider(client, services)
    texts = [await personal_code(client, person) for _ in range(2)]
    first, second = decode(texts[0]), decode(texts[1])
    assert first.code_id != second.code_id
    # The holder field differs in every code (sealed with the code's own id); only the platform opens it.
    assert first.holder != second.holder
    assert (await opened(services, texts[0])).subject == (await opened(services, texts[1])).subject
    assert str((await opened(services, texts[0])).holder_id) == person["resident_id"]


async def test_images_carry_the_expiry(client, services):
    person = await rider(client, services)
    before = int(time.time())
    svg = await client.get("/api/v1/codes/personal.svg", headers=bearer(person))
    assert svg.status_code == 200 and svg.headers["cache-control"] == "no-store"
    assert before < int(svg.headers["x-code-expires-at"]) <= int(time.time()) + 60


async def test_entitlements_follow_the_feeds_and_the_transit_source(client, services):
    department = await _department(client, services)
    person = await face_verified(client, await real_named(client, services))  # L3: every scene open

    # Nothing known yet: no colour, not insured, no withholding agreement.
    issued = await _issue(client, person)
    assert issued["entitlements"] == {
        "health": "unknown",
        "may_ride": False,
        "ride_reason": "no-agreement",
        "insured": False,
    }
    flags = Flags.from_byte((await opened(services, issued["code"])).flags)
    assert (flags.health, flags.may_ride, flags.insured) == (Health.UNKNOWN, False, False)

    await feed_health(client, department, person["id_number"], "green")
    await feed_insurance(client, department, person["id_number"], True)
    await _set_transit(services, person, has_agreement=True, in_debt=False, blocked=False)
    issued = await _issue(client, person)
    assert issued["entitlements"] == {"health": "green", "may_ride": True, "ride_reason": "", "insured": True}
    flags = Flags.from_byte((await opened(services, issued["code"])).flags)
    assert (flags.health, flags.may_ride, flags.insured) == (Health.GREEN, True, True)
    assert flags.standing == Standing.UNKNOWN

    await _set_transit(services, person, has_agreement=True, in_debt=True, blocked=False)
    assert (await _issue(client, person))["entitlements"]["ride_reason"] == "in-debt"
    await _set_transit(services, person, has_agreement=True, in_debt=False, blocked=True)
    assert (await _issue(client, person))["entitlements"]["ride_reason"] == "blocked"

    await feed_health(client, department, person["id_number"], "yellow")
    await feed_insurance(client, department, person["id_number"], False)
    issued = await _issue(client, person)
    assert issued["entitlements"] == {
        "health": "yellow",
        "may_ride": False,
        "ride_reason": "blocked",
        "insured": False,
    }
    flags = Flags.from_byte((await opened(services, issued["code"])).flags)
    assert (flags.health, flags.may_ride, flags.insured) == (Health.YELLOW, False, False)


async def test_blocked_resident_cannot_get_codes(client, services):
    person = await rider(client, services)
    assert (await client.post(PERSONAL, headers=bearer(person))).status_code == 200
    await set_resident_status(client, services, person["resident_id"], "blocked")

    # Blocking ends every session, so the phone's token no longer works anywhere, and it cannot log in again.
    assert (await client.post(PERSONAL, headers=bearer(person))).status_code == 401
    wallet = DeviceWallet.create()
    again = await client.post(DEVICES, headers=bearer(person), json={"public_key": wallet.public_key_b64})
    assert again.status_code == 401

    # A session that outlived the block (a login racing it) still gets no code: issuing checks the account.
    resident_id = uuid.UUID(person["resident_id"])
    async with services.pool.acquire() as conn:
        session_id = await SessionRepository().create(conn, resident_id, 3600)
    raced = {"access_token": services.auth._access.issue(resident_id, session_id, 2)}
    for response in (
        await client.post(PERSONAL, headers=bearer(raced)),
        await client.get("/api/v1/codes/personal.png", headers=bearer(raced)),
        await client.post(DEVICES, headers=bearer(raced), json={"public_key": wallet.public_key_b64}),
    ):
        assert response.status_code == 403, response.text

    # Unblocked, the resident logs in again and gets codes.
    await set_resident_status(client, services, person["resident_id"], "active")
    back = await login(client, person["phone"])
    assert (await client.post(PERSONAL, headers=bearer(back))).status_code == 200


async def test_blocked_resident_is_refused_at_login(client, services):
    person = await real_named(client, services)
    await set_resident_status(client, services, person["resident_id"], "blocked")
    await services.redis.delete(f"otp:cool:{services.otp._phone_key(person['phone'])}")  # a minute later
    sent = await client.post(
        "/api/v1/auth/otp", json={"phone": person["phone"]}, headers={"X-Forwarded-For": random_ip()}
    )
    assert sent.status_code == 202, sent.text
    otp = await otp_from_outbox(client, person["phone"])
    refused = await client.post("/api/v1/auth/login", json={"phone": person["phone"], "otp": otp})
    assert refused.status_code == 403, refused.text


# --- enterprise codes ---------------------------------------------------------------------------------------


async def test_enterprise_code_for_members_only(client, services):
    rep, enterprise = await enterprise_of(client, services)
    issued = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(rep))
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["kind"] == "enterprise" and 0 < body["expires_at"] - body["issued_at"] <= 60
    assert body["entitlements"] is None  # a resident's entitlements never ride on an enterprise code
    code = decode(body["code"])
    assert isinstance(code, ServerCode) and code.type == TYPE_ENTERPRISE
    seen = await opened(services, body["code"], "enterprise")
    flags = Flags.from_byte(seen.flags)
    assert flags.standing == Standing.GOOD and flags.health == Health.UNKNOWN
    assert not flags.may_ride and not flags.insured
    # The enterprise is the holder, not its representative.
    assert (seen.holder_kind, str(seen.holder_id)) == ("enterprise", enterprise["id"])
    assert seen.subject != (await opened(services, await personal_code(client, rep))).subject

    member = await login(client)
    await join_enterprise(client, rep, enterprise["id"], member)
    by_member = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(member))
    assert by_member.status_code == 200, by_member.text
    assert (await opened(services, by_member.json()["code"], "enterprise")).subject == seen.subject

    stranger = await real_named(client, services)
    refused = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(stranger))
    assert refused.status_code == 404, refused.text
    nowhere = await client.post(f"/api/v1/enterprises/{uuid.uuid4()}/code", headers=bearer(rep))
    assert nowhere.status_code == 404, nowhere.text

    removed = await client.delete(
        f"/api/v1/enterprises/{enterprise['id']}/members/{member['resident_id']}", headers=bearer(rep)
    )
    assert removed.status_code == 204, removed.text
    gone = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(member))
    assert gone.status_code == 404, gone.text


# --- device credentials -------------------------------------------------------------------------------------


def _not_a_point() -> bytes:
    """A compressed encoding whose x has no y on P-256 (the first such x, found by asking the library)."""
    for x in range(1, 1000):
        candidate = b"\x02" + x.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), candidate)
        except ValueError:
            return candidate
    raise AssertionError("no invalid x below 1000")


async def test_device_credential_rejects_bad_public_keys(client, services, db):
    person = await rider(client, services)
    count_before = await db.fetchval(
        "SELECT count(*) FROM codes.device_credentials WHERE resident_id = $1",
        uuid.UUID(person["resident_id"]),
    )
    wallet = DeviceWallet.create()
    compressed = base64.b64decode(wallet.public_key_b64)
    bad_keys = [
        "not base64 at all!",
        base64.b64encode(compressed[:32]).decode(),  # wrong length
        base64.b64encode(compressed + b"\x00").decode(),  # wrong length
        base64.b64encode(b"\x05" + compressed[1:]).decode(),  # not a SEC1 prefix
        base64.b64encode(_not_a_point()).decode(),  # not on the curve
        base64.b64encode(b"\x04" + (1).to_bytes(32, "big") * 2).decode(),  # uncompressed, not on the curve
        "",
    ]
    for bad in bad_keys:
        response = await client.post(DEVICES, headers=bearer(person), json={"public_key": bad})
        assert response.status_code == 400, (bad, response.text)
        assert _field(response) == "public_key", (bad, response.text)
    missing = await client.post(DEVICES, headers=bearer(person), json={})
    assert missing.status_code == 400 and _field(missing) == "public_key", missing.text
    count_after = await db.fetchval(
        "SELECT count(*) FROM codes.device_credentials WHERE resident_id = $1",
        uuid.UUID(person["resident_id"]),
    )
    assert count_after == count_before


async def test_device_credential_binds_the_key_for_at_most_a_day(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    before = int(time.time())
    asked_with = base64.b64decode(wallet.public_key_b64)
    made = await register_device(client, person, wallet)
    assert made["not_after"] - made["not_before"] <= 86400
    # On the ten-minute grid that makes a window shared by many phones (docs/code-format.md section 10).
    assert made["not_before"] % 600 == 0 and before - 600 < made["not_before"] <= int(time.time())
    assert re.fullmatch(r"[0-9a-f]{16}", made["id"]) and re.fullmatch(r"[0-9a-f]{8}", made["kid"])
    assert made["entitlements"]["may_ride"] is True
    code = decode(wallet.code())
    assert isinstance(code, DeviceCode) and code.type == TYPE_DEVICE
    assert code.credential_id.hex() == made["id"] and code.kid.hex() == made["kid"]
    assert (code.not_before, code.not_after) == (made["not_before"], made["not_after"])
    assert 0 < code.not_after - code.not_before <= MAX_CREDENTIAL_LIFETIME
    assert code.device_key == asked_with
    assert (await opened(services, wallet.code())).subject == (
        await opened(services, await personal_code(client, person))
    ).subject
    assert (await verify(client, gate, wallet.code(), "transit")).json()["allowed"] is True


async def test_uncompressed_device_key_is_accepted(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    uncompressed = wallet.pending_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    compressed = base64.b64decode(wallet.public_key_b64)
    assert len(uncompressed) == 65
    made = await client.post(
        DEVICES, headers=bearer(person), json={"public_key": base64.b64encode(uncompressed).decode()}
    )
    assert made.status_code == 201, made.text
    wallet.load_credential(made.json()["credential"])
    code = wallet.code()
    # The credential carries the compressed form of the same point; the phone's codes verify.
    assert decode(code).device_key == compressed
    assert (await verify(client, gate, code, "transit")).json()["allowed"] is True


async def test_device_credentials_are_listed_and_revoked_by_their_owner_only(client, services):
    owner = await rider(client, services)
    other = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    made = await register_device(client, owner, wallet)

    listed = await client.get(DEVICES, headers=bearer(owner))
    assert listed.status_code == 200, listed.text
    mine = {c["id"]: c for c in listed.json()["credentials"]}
    assert made["id"] in mine and mine[made["id"]]["revoked_at"] is None
    theirs = await client.get(DEVICES, headers=bearer(other))
    assert made["id"] not in {c["id"] for c in theirs.json()["credentials"]}

    stolen = await client.delete(f"{DEVICES}/{made['id']}", headers=bearer(other))
    assert stolen.status_code == 404, stolen.text
    # Not an id at all: a 400 naming the parameter; an id of no live credential of theirs: 404.
    for nonsense in ("zz", "0" * 17):
        malformed = await client.delete(f"{DEVICES}/{nonsense}", headers=bearer(owner))
        assert malformed.status_code == 400 and malformed.json()["errors"][0]["field"] == "credential_id"
    assert (await client.delete(f"{DEVICES}/{'00' * 8}", headers=bearer(owner))).status_code == 404
    assert (await verify(client, gate, wallet.code(), "transit")).json()["allowed"] is True

    revoked = await client.delete(f"{DEVICES}/{made['id']}", headers=bearer(owner))
    assert revoked.status_code == 204, revoked.text
    again = await client.delete(f"{DEVICES}/{made['id']}", headers=bearer(owner))
    assert again.status_code == 404, again.text
    listed = {c["id"]: c for c in (await client.get(DEVICES, headers=bearer(owner))).json()["credentials"]}
    assert listed[made["id"]]["revoked_at"] is not None
    refused = (await verify(client, gate, wallet.code(), "transit")).json()
    assert refused["allowed"] is False and refused["reason"] == "denied-credential"


# --- platform keys ------------------------------------------------------------------------------------------


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_jwk(jwk: dict[str, Any]) -> None:
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256"
    assert re.fullmatch(r"[0-9a-f]{8}", jwk["kid"]), jwk
    assert "d" not in jwk
    x, y = _b64url(jwk["x"]), _b64url(jwk["y"])
    assert len(x) == len(y) == 32
    point = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()
    compressed = point.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    assert hashlib.sha256(compressed).digest()[:4].hex() == jwk["kid"]


async def test_jwks_lists_p256_keys(client, services):
    await personal_code(client, await rider(client, services))  # a key exists once anything was signed
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    assert keys
    for jwk in keys:
        _check_jwk(jwk)
    assert len({k["kid"] for k in keys}) == len(keys)


async def _rotate(services: Any) -> str:
    """An emergency rotation: the new key signs at once (tests/code_service/keys covers the staged kind)."""
    async with services.pool.acquire() as conn, conn.transaction():
        change = await services.codes.keys.rotate_now(conn)
    kid: str = change.key.kid
    return kid


async def _sync(client: Any, gate: dict[str, Any], offline: OfflineVerifier) -> None:
    document = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    assert document.status_code == 200, document.text
    offline.deny_list.apply_document(document.json()["jws"], offline.key_for_kid)
    offline.update_scene_keys(await scene_keys_of(client, gate))


async def test_rotation_keeps_unexpired_codes_valid_and_retires_old_keys(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "verify:health", "gates:sync"])
    old_code = await personal_code(client, person)
    wallet = DeviceWallet.create()
    old_credential = await register_device(client, person, wallet)
    old_kid = decode(old_code).kid.hex()
    assert old_credential["kid"] == old_kid
    jwks_before = (await client.get("/.well-known/jwks.json")).json()
    gate_before = OfflineVerifier(jwks_before)
    await _sync(client, gate, gate_before)

    new_kid = await _rotate(services)
    assert new_kid != old_kid

    jwks = (await client.get("/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert {old_kid, new_kid} <= kids
    for jwk in jwks["keys"]:
        _check_jwk(jwk)

    # Codes and credentials signed before the rotation keep working, online and offline.
    online = (await verify(client, gate, old_code, "transit")).json()
    assert online["allowed"] is True, online
    device_online = (await verify(client, gate, wallet.code(), "transit")).json()
    assert device_online["allowed"] is True, device_online
    offline = OfflineVerifier(jwks)
    await _sync(client, gate, offline)
    assert offline.verify(old_code, "health").allowed is False  # no colour known: nothing to read
    assert offline.verify(old_code, "health").reason == "no-entitlement"
    assert offline.verify(old_code, "transit").allowed
    assert offline.verify(wallet.code(), "transit").allowed

    # New codes and credentials use the new key.
    assert decode(await personal_code(client, person)).kid.hex() == new_kid
    assert (await register_device(client, person, DeviceWallet.create()))["kid"] == new_kid

    # The deny list is now signed by the new key: a gate that never refreshed its JWKS cannot apply it.
    stale = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    try:
        gate_before.deny_list.apply_document(stale.json()["jws"], gate_before.key_for_kid)
    except DenyListError:
        pass
    else:
        raise AssertionError("a deny list signed by an unknown key was applied")
    gate_before.update_keys(jwks)
    gate_before.deny_list.apply_document(stale.json()["jws"], gate_before.key_for_kid)

    # A day (and the margin) after it stopped signing, the old key leaves the JWKS (the clock is moved by moving
    # its retirement back in time; tests/code_service/keys moves the clock).
    await db.execute(
        "UPDATE codes.signing_keys SET retire_at = now() - interval '1 minute' WHERE kid = $1", old_kid
    )
    services.codes.keys.invalidate()
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid not in kids and new_kid in kids
    retired = (await verify(client, gate, old_code, "health")).json()
    assert retired == {"allowed": False, "reason": "unknown-key", "scene": "health", "code_type": "personal"}


async def test_a_key_still_publishes_until_a_day_after_rotation(client, services, db):
    await personal_code(client, await rider(client, services))
    old_kid = (await client.get("/.well-known/jwks.json")).json()["keys"][0]["kid"]
    new_kid = await _rotate(services)
    await db.execute(
        "UPDATE codes.signing_keys SET retire_at = now() + interval '1 minute' WHERE kid = $1", old_kid
    )
    services.codes.keys.invalidate()
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= kids


# --- department feeds ---------------------------------------------------------------------------------------


async def test_feeds_need_the_right_scope_and_a_signature(client, services):
    health_only = await machine_credential(client, services, ["feeds:health"], kind="department")
    person = await real_named(client, services)
    wrong = await signed(
        client,
        health_only,
        "PUT",
        "/api/v1/feeds/insurance",
        {"id_number": person["id_number"], "insured": True},
    )
    assert wrong.status_code == 403, wrong.text
    wrong_bulk = await signed(
        client,
        health_only,
        "PUT",
        "/api/v1/feeds/insurance/bulk",
        {"items": [{"id_number": person["id_number"], "insured": True}]},
    )
    assert wrong_bulk.status_code == 403, wrong_bulk.text
    gate = await machine_credential(client, services, ["verify:health"])
    assert (
        await signed(
            client, gate, "PUT", "/api/v1/feeds/health", {"id_number": person["id_number"], "colour": "red"}
        )
    ).status_code == 403
    unsigned = await client.put(
        "/api/v1/feeds/health", json={"id_number": person["id_number"], "colour": "red"}
    )
    assert unsigned.status_code == 401, unsigned.text
    # None of that changed anything.
    assert (await _issue(client, person))["entitlements"]["health"] == "unknown"
    assert (await _issue(client, person))["entitlements"]["insured"] is False


async def test_feed_rejects_a_bad_id_number_naming_it(client, services):
    department = await _department(client, services)
    good = random_id_number()
    for bad in ("12345", good[:-1] + ("0" if good[-1] != "0" else "1"), "32120219990230001X"):
        response = await signed(
            client, department, "PUT", "/api/v1/feeds/health", {"id_number": bad, "colour": "red"}
        )
        assert response.status_code == 400, (bad, response.text)
        assert _field(response) == "id_number", response.text
    colour = await signed(
        client, department, "PUT", "/api/v1/feeds/health", {"id_number": good, "colour": "blue"}
    )
    assert colour.status_code == 400 and _field(colour) == "colour", colour.text


async def test_bulk_feed_with_a_bad_item_names_it_and_stores_nothing(client, services):
    department = await _department(client, services)
    person = await real_named(client, services)
    items = [
        {"id_number": person["id_number"], "colour": "red"},
        {"id_number": random_id_number(), "colour": "yellow"},
        {"id_number": "not-an-id", "colour": "green"},
    ]
    response = await signed(client, department, "PUT", "/api/v1/feeds/health/bulk", {"items": items})
    assert response.status_code == 400, response.text
    assert _field(response) == "items[2].id_number", response.text
    assert (await _issue(client, person))["entitlements"]["health"] == "unknown"

    insurance = await signed(
        client,
        department,
        "PUT",
        "/api/v1/feeds/insurance/bulk",
        {"items": [{"id_number": person["id_number"], "insured": True}, {"id_number": "x", "insured": True}]},
    )
    assert insurance.status_code == 400 and _field(insurance) == "items[1].id_number", insurance.text
    assert (await _issue(client, person))["entitlements"]["insured"] is False

    too_many = await signed(
        client,
        department,
        "PUT",
        "/api/v1/feeds/health/bulk",
        {"items": [{"id_number": person["id_number"], "colour": "red"}] * 1001},
    )
    assert too_many.status_code == 400 and _field(too_many) == "items", too_many.text
    empty = await signed(client, department, "PUT", "/api/v1/feeds/health/bulk", {"items": []})
    assert empty.status_code == 400 and _field(empty) == "items", empty.text


async def test_bulk_feed_of_a_hundred(client, services):
    department = await _department(client, services)
    residents = [await face_verified(client, await real_named(client, services)) for _ in range(2)]
    numbers = [r["id_number"] for r in residents] + [nobodys_id_number() for _ in range(98)]
    assert len(set(numbers)) == 100
    items = [{"id_number": n, "colour": "green"} for n in numbers]
    response = await signed(client, department, "PUT", "/api/v1/feeds/health/bulk", {"items": items})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 100, "changed": 100, "holders_with_accounts": 2}
    # The same batch again changes nothing.
    again = await signed(client, department, "PUT", "/api/v1/feeds/health/bulk", {"items": items})
    assert again.json() == {"accepted": 100, "changed": 0, "holders_with_accounts": 0}
    for resident in residents:
        assert (await _issue(client, resident))["entitlements"]["health"] == "green"

    insured = [{"id_number": n, "insured": True, "scheme": "职工医保"} for n in numbers]
    response = await signed(client, department, "PUT", "/api/v1/feeds/insurance/bulk", {"items": insured})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 100, "changed": 100, "holders_with_accounts": 2}
    for resident in residents:
        assert (await _issue(client, resident))["entitlements"]["insured"] is True


async def test_bulk_feed_of_a_thousand_with_scheme_names(client, services):
    department = await _department(client, services)
    person = await face_verified(client, await real_named(client, services))
    numbers = [person["id_number"]] + [nobodys_id_number() for _ in range(999)]
    items = [{"id_number": n, "insured": True, "scheme": "泰州市城乡居民基本医疗保险"} for n in numbers]
    response = await signed(client, department, "PUT", "/api/v1/feeds/insurance/bulk", {"items": items})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1000 and response.json()["holders_with_accounts"] == 1
    assert (await _issue(client, person))["entitlements"]["insured"] is True


async def test_status_that_arrives_before_the_account_applies_once_real_named(client, services):
    department = await _department(client, services)
    id_number = random_id_number()
    fed = await feed_health(client, department, id_number, "yellow")
    assert fed == {"accepted": 1, "changed": 1, "holders_with_accounts": 0}
    tokens = await login(client)
    await enrol_person(services, "孙权", id_number, tokens["phone"])
    named = await client.post(
        "/api/v1/me/real-name", json={"name": "孙权", "id_number": id_number}, headers=bearer(tokens)
    )
    assert named.status_code == 200, named.text
    assert (await _issue(client, tokens))["entitlements"]["health"] == "yellow"


async def test_a_device_key_is_bound_to_one_credential_only(client, services):
    """A device key is a tracking id if it outlives a credential: a key bound before is refused with 409 naming
    public_key (v1 bound the same phone key every day), and the wallet asks with a fresh key each time."""
    person = await rider(client, services)
    wallet = DeviceWallet.create()
    first_key = wallet.public_key_b64
    first = await register_device(client, person, wallet)
    again = await client.post(DEVICES, headers=bearer(person), json={"public_key": first_key})
    assert again.status_code == 409 and "public_key" in again.text, again.text
    other = await rider(client, services)  # nor can anyone else bind it
    assert (
        await client.post(DEVICES, headers=bearer(other), json={"public_key": first_key})
    ).status_code == 409
    assert wallet.public_key_b64 != first_key  # the wallet moved on to a fresh pending key
    second = await register_device(client, person, wallet)
    assert second["id"] != first["id"]
    assert decode(wallet.code()).device_key != base64.b64decode(first_key)


async def test_scene_minimum_levels_decide_what_a_code_carries(client, services):
    """The medical scene requires L3: an L2 resident the insurance feed marks insured carries insured = 0 and the
    hospital's online verification answers no-entitlement, until they pass face verification."""
    department = await _department(client, services)
    person = await rider(client, services)  # L2, may ride
    hospital = await machine_credential(client, services, ["verify:medical"])
    await feed_insurance(client, department, person["id_number"], True)
    issued = await _issue(client, person)
    assert issued["entitlements"]["insured"] is False and issued["entitlements"]["may_ride"] is True
    assert Flags.from_byte((await opened(services, issued["code"], "medical")).flags).insured is False
    answer = (await verify(client, hospital, issued["code"], "medical")).json()
    assert (answer["allowed"], answer["reason"]) == (False, "no-entitlement"), answer
    assert "voucher" not in answer

    await face_verified(client, person)
    issued = await _issue(client, person)
    assert issued["entitlements"]["insured"] is True
    answer = (await verify(client, hospital, issued["code"], "medical")).json()
    assert (answer["allowed"], answer["reason"]) == (True, "ok"), answer


async def test_an_l1_resident_without_an_agreement_is_told_the_level_comes_first(client, services):
    """Issue 13 probe: an L1 rider's code said `no-agreement`, though no agreement would let an L1 ride."""
    person = await login(client)
    issued = await _issue(client, person)
    assert (issued["entitlements"]["may_ride"], issued["entitlements"]["ride_reason"]) == (
        False,
        "level-required",
    )


async def test_an_l1_resident_gets_no_scene_entitlement(client, services):
    person = await login(client)  # L1: a phone number only
    async with services.pool.acquire() as conn:
        await services.payments.transit.grant_agreement(conn, uuid.UUID(person["resident_id"]))
        await services.codes.facts.invalidate_resident(conn, uuid.UUID(person["resident_id"]))
    issued = await _issue(client, person)
    assert issued["entitlements"]["may_ride"] is False
    assert issued["entitlements"]["ride_reason"] == "level-required"
    gate = await machine_credential(client, services, ["verify:transit"])
    answer = (await verify(client, gate, issued["code"], "transit")).json()
    assert (answer["allowed"], answer["reason"]) == (False, "no-entitlement"), answer
