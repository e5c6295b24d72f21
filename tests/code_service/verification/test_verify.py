"""Online verification: each scene learns only its fields, single use where a second use costs money, live
statuses, refusals with a reason, and the holder's scan history."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.codes.service import CREDENTIAL_RECORD_LEN, credential_key, credential_record
from code_service.holder import DeviceWallet
from code_service.verifier.base45 import ALPHABET, b45encode
from code_service.verifier.format import (
    ES256,
    PREFIX,
    TYPE_PERSONAL,
    Flags,
    Health,
    decode,
    encode_device_code,
    encode_server_code,
    raw_signature,
    seal_holder,
    sign_raw,
    signs_again,
    verify_raw,
)
from tests.helpers import (
    bearer,
    enterprise_of,
    face_verified,
    feed_health,
    feed_insurance,
    machine_credential,
    opened,
    personal_code,
    real_named,
    register_device,
    rider,
    set_resident_status,
    set_transit,
    signed,
    verify,
)

SCENES = ["verify:transit", "verify:health", "verify:medical", "verify:enterprise"]
COMMON = {"allowed", "reason", "scene", "code_type"}
TRANSIT = COMMON | {"rider_token", "verification_id"}  # the id a gate may upload as its tap's proof
HEALTH = COMMON | {"colour", "masked_name"}
MEDICAL = COMMON | {"insured", "voucher", "voucher_expires_in", "masked_name"}
ENTERPRISE = COMMON | {"enterprise_name", "uscc", "standing"}


def _field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


async def _verified(client: Any, verifier: dict[str, Any], code: str, scene: str) -> dict[str, Any]:
    response = await verify(client, verifier, code, scene)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _department(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["feeds:health", "feeds:insurance"], kind="department")


async def _covered(client: Any, services: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rider with a green colour and insurance (face verified: the medical scene needs L3), and the department
    that fed them."""
    person = await face_verified(client, await rider(client, services))
    department = await _department(client, services)
    await feed_health(client, department, person["id_number"], "green")
    await feed_insurance(client, department, person["id_number"], True)
    return person, department


# --- minimal disclosure -------------------------------------------------------------------------------------


async def test_each_scene_gets_only_its_fields(client, services):
    person, _ = await _covered(client, services)
    everything = await machine_credential(client, services, SCENES)
    rep, enterprise = await enterprise_of(client, services)

    transit = await _verified(client, everything, await personal_code(client, person), "transit")
    assert set(transit) == TRANSIT, transit
    assert transit["allowed"] is True and transit["reason"] == "ok" and transit["scene"] == "transit"
    assert transit["code_type"] == "personal" and transit["rider_token"].startswith("rt_")

    health = await _verified(client, everything, await personal_code(client, person), "health")
    assert set(health) == HEALTH, health
    assert health["allowed"] is True and health["colour"] == "green"
    assert health["masked_name"] != person["name"] and health["masked_name"].endswith("*")
    assert health["masked_name"][0] == person["name"][0]

    medical = await _verified(client, everything, await personal_code(client, person), "medical")
    assert set(medical) == MEDICAL, medical
    assert medical["allowed"] is True and medical["insured"] is True and medical["voucher"].startswith("mv_")
    assert medical["masked_name"] == health["masked_name"]
    assert 0 < medical["voucher_expires_in"] <= 600

    member_code = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(rep))
    inspected = await _verified(client, everything, member_code.json()["code"], "enterprise")
    assert set(inspected) == ENTERPRISE, inspected
    assert inspected == {
        "allowed": True,
        "reason": "ok",
        "scene": "enterprise",
        "code_type": "enterprise",
        "enterprise_name": enterprise["name"],
        "uscc": enterprise["uscc"],
        "standing": "good",
    }

    # The same code, scene by scene, with a device code too.
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    for scene, fields in (("transit", TRANSIT), ("health", HEALTH), ("medical", MEDICAL)):
        answer = await _verified(client, everything, wallet.code(), scene)
        assert set(answer) == fields and answer["code_type"] == "device" and answer["allowed"], answer


async def _enterprise_code(client: Any, services: Any) -> tuple[dict[str, Any], str]:
    rep, enterprise = await enterprise_of(client, services)
    issued = await client.post(f"/api/v1/enterprises/{enterprise['id']}/code", headers=bearer(rep))
    assert issued.status_code == 200, issued.text
    return enterprise, issued.json()["code"]


async def test_refusals_disclose_nothing_of_the_holder(client, services):
    person = await real_named(client, services)  # no colour, no insurance, no agreement
    everything = await machine_credential(client, services, SCENES)
    transit = await _verified(client, everything, await personal_code(client, person), "transit")
    assert transit == {
        "allowed": False,
        "reason": "no-agreement",
        "scene": "transit",
        "code_type": "personal",
    }
    health = await _verified(client, everything, await personal_code(client, person), "health")
    assert set(health) == HEALTH and health["colour"] == "unknown" and health["allowed"] is False
    medical = await _verified(client, everything, await personal_code(client, person), "medical")
    # Below the medical scene's minimum level (L3): refused before anything of the holder is read.
    assert medical == {
        "allowed": False,
        "reason": "no-entitlement",
        "scene": "medical",
        "code_type": "personal",
    }
    await face_verified(client, person)
    medical = await _verified(client, everything, await personal_code(client, person), "medical")
    assert set(medical) == COMMON | {"insured", "masked_name"}, medical
    assert medical["insured"] is False and medical["allowed"] is False and medical["reason"] == "not-insured"


async def test_scene_outside_the_scopes_is_refused(client, services):
    person, _ = await _covered(client, services)
    checkpoint = await machine_credential(client, services, ["verify:health"])
    code = await personal_code(client, person)
    for scene in ("transit", "medical", "enterprise"):
        refused = await verify(client, checkpoint, code, scene)
        assert refused.status_code == 403, refused.text
    taps_only = await machine_credential(client, services, ["gates:taps", "gates:sync"])
    assert (await verify(client, taps_only, code, "health")).status_code == 403
    # The refusals used nothing up: the code still opens a gate once.
    gate = await machine_credential(client, services, ["verify:transit"])
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True


async def test_unknown_scene_and_bad_bodies_name_the_field(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    code = await personal_code(client, person)
    unknown = await verify(client, gate, code, "canteen")
    assert unknown.status_code == 400 and _field(unknown) == "scene", unknown.text
    no_code = await signed(client, gate, "POST", "/api/v1/verify", {"scene": "transit"})
    assert no_code.status_code == 400 and _field(no_code) == "code", no_code.text
    too_long = await verify(client, gate, "TZ1:" + "A" * 2000, "transit")
    assert too_long.status_code == 400 and _field(too_long) == "code", too_long.text
    unsigned = await client.post("/api/v1/verify", json={"code": code, "scene": "transit"})
    assert unsigned.status_code == 401, unsigned.text
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True


# --- rider tokens -------------------------------------------------------------------------------------------


async def test_rider_tokens_are_pseudonymous_per_operator(client, services):
    person = await rider(client, services)
    other = await rider(client, services)
    metro = await machine_credential(client, services, ["verify:transit"])
    bus = await machine_credential(client, services, ["verify:transit"])
    at_metro = [
        (await _verified(client, metro, await personal_code(client, person), "transit")) for _ in range(2)
    ]
    at_bus = await _verified(client, bus, await personal_code(client, person), "transit")
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    by_device = await _verified(client, metro, wallet.code(), "transit")
    other_at_metro = await _verified(client, metro, await personal_code(client, other), "transit")

    tokens = [a["rider_token"] for a in (*at_metro, by_device)]
    assert len(set(tokens)) == 1  # stable for one operator, whichever code the rider shows
    assert at_bus["rider_token"] != tokens[0]  # another operator cannot link the two
    assert other_at_metro["rider_token"] != tokens[0]
    subject = (await opened(services, await personal_code(client, person))).subject.hex()
    assert subject not in tokens[0] and subject not in at_bus["rider_token"]


# --- single use ---------------------------------------------------------------------------------------------


async def test_medical_code_is_single_use(client, services):
    person, _ = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical"])
    code = await personal_code(client, person)
    first = await _verified(client, hospital, code, "medical")
    assert first["allowed"] is True
    second = await _verified(client, hospital, code, "medical")
    assert second == {"allowed": False, "reason": "replayed", "scene": "medical", "code_type": "personal"}
    # Another hospital cannot use it either.
    elsewhere = await machine_credential(client, services, ["verify:medical"])
    assert (await _verified(client, elsewhere, code, "medical"))["reason"] == "replayed"


async def test_concurrent_medical_presentations_yield_one_voucher(client, services):
    person, _ = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical"])
    for code in (await personal_code(client, person), await _device_code(client, person)):
        answers = await asyncio.gather(*(verify(client, hospital, code, "medical") for _ in range(10)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        allowed = [a.json() for a in answers if a.json()["allowed"]]
        assert len(allowed) == 1 and allowed[0]["voucher"].startswith("mv_")
        assert {a.json()["reason"] for a in answers if not a.json()["allowed"]} == {"replayed"}


async def _device_code(client: Any, person: dict[str, Any]) -> str:
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    return wallet.code()


async def test_transit_device_code_is_single_use_but_the_next_one_works(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    code = wallet.code()
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True
    assert (await _verified(client, gate, code, "transit"))["reason"] == "replayed"
    assert (await _verified(client, gate, wallet.code(), "transit"))["allowed"] is True


async def test_health_checks_may_repeat(client, services):
    person, _ = await _covered(client, services)
    checkpoint = await machine_credential(client, services, ["verify:health"])
    code = await personal_code(client, person)
    for _ in range(3):
        assert (await _verified(client, checkpoint, code, "health"))["allowed"] is True


async def test_a_refused_presentation_does_not_use_up_the_code(client, services):
    """docs/code-format.md, section 6, step 8: only an accepted code is recorded in the replay store."""
    person = await rider(client, services)
    resident_id = uuid.UUID(person["resident_id"])
    gate = await machine_credential(client, services, ["verify:transit"])
    code = await personal_code(client, person)
    await set_transit(services, resident_id, has_agreement=True, in_debt=True, blocked=False)
    assert (await _verified(client, gate, code, "transit"))["reason"] == "in-debt"
    # the rider pays at the machine next to the gate
    await set_transit(services, resident_id, has_agreement=True, in_debt=False, blocked=False)
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True
    assert (await _verified(client, gate, code, "transit"))["reason"] == "replayed"


async def test_an_accepted_code_stays_used_through_a_later_refusal(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    code = await personal_code(client, person)
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True
    await set_resident_status(client, services, person["resident_id"], "blocked")
    assert (await _verified(client, gate, code, "transit"))["reason"] == "denied-account"
    await set_resident_status(client, services, person["resident_id"], "active")
    assert (await _verified(client, gate, code, "transit"))["reason"] == "replayed"


# --- vouchers -----------------------------------------------------------------------------------------------


async def test_voucher_is_redeemed_once_by_the_hospital_that_scanned(client, services):
    person, _ = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical"])
    other_hospital = await machine_credential(client, services, ["verify:medical"])
    answer = await _verified(client, hospital, await personal_code(client, person), "medical")
    voucher = answer["voucher"]

    stolen = await signed(
        client, other_hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher}
    )
    assert stolen.status_code == 404, stolen.text

    redeemed = await signed(client, hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["insured"] is True and redeemed.json()["masked_name"] == answer["masked_name"]
    assert redeemed.json()["settlement_ref"].startswith("ms_")
    assert set(redeemed.json()) == {"insured", "masked_name", "settlement_ref"}

    again = await signed(client, hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher})
    assert again.status_code == 404, again.text
    unknown = await signed(
        client,
        hospital,
        "POST",
        "/api/v1/verify/vouchers/redeem",
        {"voucher": "mv_" + secrets.token_urlsafe(18)},
    )
    assert unknown.status_code == 404, unknown.text


async def test_concurrent_redemptions_settle_once(client, services):
    person, _ = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical"])
    voucher = (await _verified(client, hospital, await personal_code(client, person), "medical"))["voucher"]
    answers = await asyncio.gather(
        *(
            signed(client, hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher})
            for _ in range(8)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [404] * 7


async def test_redeeming_needs_the_medical_scope(client, services):
    person, _ = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical", "verify:health"])
    voucher = (await _verified(client, hospital, await personal_code(client, person), "medical"))["voucher"]
    checkpoint = await machine_credential(client, services, ["verify:health"])
    refused = await signed(client, checkpoint, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher})
    assert refused.status_code == 403, refused.text
    ok = await signed(client, hospital, "POST", "/api/v1/verify/vouchers/redeem", {"voucher": voucher})
    assert ok.status_code == 200, ok.text


# --- code types ---------------------------------------------------------------------------------------------


async def test_wrong_code_type_for_the_scene(client, services):
    person, _ = await _covered(client, services)
    everything = await machine_credential(client, services, SCENES)
    _, enterprise_code = await _enterprise_code(client, services)
    for scene in ("transit", "health", "medical"):
        answer = await _verified(client, everything, enterprise_code, scene)
        assert answer == {
            "allowed": False,
            "reason": "wrong-code-type",
            "scene": scene,
            "code_type": "enterprise",
        }
    personal = await personal_code(client, person)
    answer = await _verified(client, everything, personal, "enterprise")
    assert answer == {
        "allowed": False,
        "reason": "wrong-code-type",
        "scene": "enterprise",
        "code_type": "personal",
    }
    device = await _verified(client, everything, await _device_code(client, person), "enterprise")
    assert device["reason"] == "wrong-code-type" and device["code_type"] == "device"
    # A refusal for the code type did not use up the personal code at the gate.
    assert (await _verified(client, everything, personal, "transit"))["allowed"] is True


# --- forged, tampered, expired ------------------------------------------------------------------------------


def _flip(text: str, index: int) -> str:
    original = text[index]
    replacement = ALPHABET[(ALPHABET.index(original) + 1) % len(ALPHABET)]
    return text[:index] + replacement + text[index + 1 :]


async def test_tampered_code_is_refused_never_a_server_error(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    code = await personal_code(client, person)
    middle = _flip(code, len(code) // 2)
    answer = await _verified(client, gate, middle, "transit")
    assert answer["allowed"] is False and answer["reason"] in {"bad-signature", "malformed"}, answer
    assert "rider_token" not in answer

    # Every single-character change anywhere in the payload is refused with a reason.
    for index in range(4, len(code)):
        response = await verify(client, gate, _flip(code, index), "transit")
        assert response.status_code == 200, (index, response.text)
        body = response.json()
        assert body["allowed"] is False, (index, body)
        assert body["reason"] in {"bad-signature", "malformed", "unknown-key"}, (index, body)
    for garbage in ("hello", "TZ2:%%%", "TZ:" + code[4:], code[:-1], code + "A", code.lower()):
        response = await verify(client, gate, garbage, "transit")
        assert response.status_code == 200, (garbage, response.text)
        assert response.json() == {"allowed": False, "reason": "malformed", "scene": "transit"}
    # Another version's code (version 1 is retired) is told apart: the gate asks for an updated app.
    for other_version in ("TZ1:", "TZ1:%%%", "TZ1:" + code[4:], "TZ3:" + code[4:]):
        response = await verify(client, gate, other_version, "transit")
        assert response.json() == {"allowed": False, "reason": "unsupported-version", "scene": "transit"}
    # None of that used the genuine code up.
    assert (await _verified(client, gate, code, "transit"))["allowed"] is True


async def test_tampered_device_code_is_refused(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    code = wallet.code()
    for index in (len(code) // 2, len(code) - 10):
        answer = await _verified(client, gate, _flip(code, index), "transit")
        assert answer["allowed"] is False
        assert answer["reason"] in {"bad-signature", "bad-device-signature", "malformed"}, answer
    # Another phone's key cannot sign codes under this credential.
    thief = DeviceWallet.create()
    thief.credential, thief.private_key = wallet.credential, thief.pending_key
    stolen = await _verified(client, gate, thief.code(), "transit")
    assert stolen["allowed"] is False and stolen["reason"] == "bad-device-signature"


# --- device credentials: the platform's record stands in for its signature online ----------------------------


def _record_key(wallet: DeviceWallet) -> str:
    return credential_key(wallet.credential[9:17])


async def test_a_registered_credential_has_its_record(client, services):
    person = await rider(client, services)
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    record = await services.redis.get(_record_key(wallet))
    assert record == credential_record(wallet.credential, wallet.private_key.public_key())
    assert len(record) == CREDENTIAL_RECORD_LEN
    assert 24 * 3600 < await services.redis.ttl(_record_key(wallet)) <= 24 * 3600 + 120


async def test_device_codes_verify_with_the_record_missing_or_wrong_and_it_is_written_again(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    key = _record_key(wallet)
    good = await services.redis.get(key)
    assert (await _verified(client, gate, wallet.code(), "transit"))["allowed"] is True

    await services.redis.delete(key)  # evicted, or Redis restarted empty
    assert (await _verified(client, gate, wallet.code(), "transit"))["allowed"] is True
    assert await services.redis.get(key) == good
    assert await services.redis.ttl(key) > 23 * 3600

    other = DeviceWallet.create()
    wrong = credential_record(wallet.credential[:-1] + b"\0", other.pending_key.public_key())
    for bad in (b"garbage", b"\x01" * CREDENTIAL_RECORD_LEN, wrong):
        await services.redis.set(key, bad)
        assert (await _verified(client, gate, wallet.code(), "transit"))["allowed"] is True, bad
        assert await services.redis.get(key) == good


async def test_a_credential_edited_by_its_holder_is_refused_and_uses_up_nothing(client, services):
    """The phone holds its device key, so it can sign codes under a credential it edited (here: the flags, to
    claim green health and insurance). The platform's signature no longer covers those bytes, and the record of
    the genuine credential does not match them either."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "verify:health"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    edited = bytearray(wallet.credential)
    edited[33] ^= Flags(Health.GREEN, may_ride=True, insured=True).to_byte()  # whatever the mask, bits change
    shown_at = int(time.time())
    forged = encode_device_code(wallet.private_key, bytes(edited), shown_at, 7)
    genuine = encode_device_code(wallet.private_key, wallet.credential, shown_at, 7)
    assert decode(forged).code_id == decode(genuine).code_id
    for scene in ("transit", "health"):
        answer = await _verified(client, gate, forged, scene)
        assert answer == {"allowed": False, "reason": "bad-signature", "scene": scene, "code_type": "device"}
    # The forged code claimed nothing: the genuine one with the same replay id still rides, once.
    assert (await _verified(client, gate, genuine, "transit"))["allowed"] is True
    assert (await _verified(client, gate, genuine, "transit"))["reason"] == "replayed"


async def test_a_device_key_that_is_no_point_is_malformed_whatever_else_is_wrong(client, services):
    """docs/code-format.md section 6: the device key is checked in step 1, before the key id and signatures."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    for kid in (wallet.credential[1:5], b"\xee\xee\xee\xee"):  # a known key id, and an unknown one
        broken = bytearray(wallet.credential)
        broken[1:5] = kid
        broken[34] = 0x05  # neither 02 nor 03: no compressed point
        code = encode_device_code(wallet.private_key, bytes(broken), int(time.time()), 1)
        assert (await _verified(client, gate, code, "transit"))["reason"] == "malformed", kid


async def test_expired_server_code(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "verify:health"])
    subject = (await opened(services, await personal_code(client, person))).subject
    signer = await services.codes.keys.signer()
    epoch = await services.codes.scene_keys.current()
    seal_key = services.codes.verification._seal_key
    now = int(time.time())

    def crafted(issued_at: int) -> str:
        code_id = secrets.token_bytes(8)
        return encode_server_code(
            signer.private_key,
            signer.kid_bytes,
            TYPE_PERSONAL,
            code_id,
            seal_holder(seal_key, code_id, subject),
            issued_at,
            60,
            Flags(health=Health.GREEN, may_ride=True),
            epoch.epoch,
            epoch.keys,
        )

    old = await _verified(client, gate, crafted(now - 200), "transit")
    assert old == {"allowed": False, "reason": "expired", "scene": "transit", "code_type": "personal"}
    assert (await _verified(client, gate, crafted(now - 200), "health"))["reason"] == "expired"
    future = await _verified(client, gate, crafted(now + 200), "transit")
    assert future["allowed"] is False and future["reason"] == "not-yet-valid"
    # Within the 30 s tolerance a code that expired a moment ago still passes.
    assert (await _verified(client, gate, crafted(now - 70), "transit"))["allowed"] is True


# --- the platform checks its own signatures by signing again ---------------------------------------------------

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _with_signature(code: str, signature: bytes) -> str:
    signed = decode(code).signed
    return PREFIX + b45encode(signed + signature)


def _other_s(signature: bytes) -> bytes:
    """The same signature with n − s for s: it verifies just as well, and signing never makes it."""
    s = int.from_bytes(signature[32:], "big")
    return signature[:32] + (_P256_ORDER - s).to_bytes(32, "big")


def test_platform_signatures_are_reproducible_and_only_a_reproduction_counts():
    key = ec.generate_private_key(ec.SECP256R1())
    data = secrets.token_bytes(28)
    signature = sign_raw(key, data)
    assert sign_raw(key, data) == signature and verify_raw(key.public_key(), signature, data)
    assert signs_again(key, signature, data)
    # Valid signatures signing does not make, and invalid ones, are not reproduced: they must be verified.
    random_nonce = raw_signature(key.sign(data, ES256))
    assert verify_raw(key.public_key(), random_nonce, data) and not signs_again(key, random_nonce, data)
    assert verify_raw(key.public_key(), _other_s(signature), data)
    assert not signs_again(key, _other_s(signature), data)
    assert not signs_again(key, signature, data + b"\0")
    assert not signs_again(key, signature[:-1], data)


async def test_server_codes_signed_any_valid_way_verify_and_forgeries_do_not(client, services):
    """Online, the signing key's own codes are checked by signing them again (KeyService.signed); a valid
    signature it does not reproduce (a random nonce, or n − s) is verified instead, and is as good."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    signer = await services.codes.keys.signer()

    async def presented(make_signature: Any) -> dict[str, Any]:
        code = await personal_code(client, person)  # a fresh code id each time: transit is single use
        signed = decode(code).signed
        return await _verified(client, gate, _with_signature(code, make_signature(signed)), "transit")

    assert (await presented(lambda signed: sign_raw(signer.private_key, signed)))["allowed"] is True
    random_nonce = await presented(lambda signed: raw_signature(signer.private_key.sign(signed, ES256)))
    assert random_nonce["allowed"] is True, random_nonce
    other_s = await presented(lambda signed: _other_s(sign_raw(signer.private_key, signed)))
    assert other_s["allowed"] is True, other_s
    impostor = ec.generate_private_key(ec.SECP256R1())
    forged = await presented(lambda signed: sign_raw(impostor, signed))
    assert forged["allowed"] is False and forged["reason"] == "bad-signature", forged
    garbage = await presented(lambda signed: secrets.token_bytes(64))
    assert garbage["allowed"] is False and garbage["reason"] == "bad-signature", garbage


async def test_a_credential_signed_with_a_random_nonce_verifies_though_its_record_differs(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    signer = await services.codes.keys.signer()
    credential = wallet.credential[:-64]
    resigned = DeviceWallet(
        private_key=wallet.private_key,
        credential=credential + raw_signature(signer.private_key.sign(credential, ES256)),
    )
    assert resigned.credential != wallet.credential
    answer = await _verified(client, gate, resigned.code(), "transit")
    assert answer["allowed"] is True, answer
    forged = DeviceWallet(
        private_key=wallet.private_key,
        credential=credential + _other_s(wallet.credential[-64:])[:32] + bytes(32),
    )
    refused = await _verified(client, gate, forged.code(), "transit")
    assert refused["allowed"] is False and refused["reason"] == "bad-signature", refused


async def test_device_code_from_a_phone_five_minutes_slow_is_expired(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    wallet = DeviceWallet.create(clock=lambda: time.time() - 300)
    await register_device(client, person, wallet)
    answer = await _verified(client, gate, wallet.code(), "transit")
    assert answer == {"allowed": False, "reason": "expired", "scene": "transit", "code_type": "device"}
    fast = DeviceWallet(
        private_key=wallet.private_key, credential=wallet.credential, clock=lambda: time.time() + 300
    )
    ahead = await _verified(client, gate, fast.code(), "transit")
    assert ahead["allowed"] is False and ahead["reason"] == "not-yet-valid"
    right = DeviceWallet(private_key=wallet.private_key, credential=wallet.credential)
    assert (await _verified(client, gate, right.code(), "transit"))["allowed"] is True


# --- live statuses ------------------------------------------------------------------------------------------


async def test_red_status_reaches_online_verify_at_once(client, services):
    person, department = await _covered(client, services)
    checkpoint = await machine_credential(client, services, ["verify:health"])
    code = await personal_code(client, person)  # issued while green
    assert Flags.from_byte((await opened(services, code, "health")).flags).health == Health.GREEN
    assert (await _verified(client, checkpoint, code, "health"))["colour"] == "green"
    await feed_health(client, department, person["id_number"], "red")
    answer = await _verified(client, checkpoint, code, "health")
    assert answer["colour"] == "red" and answer["allowed"] is False and answer["reason"] == "health-red"
    assert set(answer) == HEALTH


async def test_insurance_ending_reaches_online_verify_at_once(client, services):
    person, department = await _covered(client, services)
    hospital = await machine_credential(client, services, ["verify:medical"])
    code = await personal_code(client, person)
    await feed_insurance(client, department, person["id_number"], False)
    answer = await _verified(client, hospital, code, "medical")
    assert answer["allowed"] is False and answer["reason"] == "not-insured" and "voucher" not in answer


async def test_rider_in_debt_is_refused_at_the_gate(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    code = await personal_code(client, person)  # issued while in good standing
    resident_id = uuid.UUID(person["resident_id"])
    await set_transit(services, resident_id, has_agreement=True, in_debt=True, blocked=False)
    answer = await _verified(client, gate, code, "transit")
    assert answer == {"allowed": False, "reason": "in-debt", "scene": "transit", "code_type": "personal"}
    assert (await _verified(client, gate, await _device_code(client, person), "transit"))[
        "reason"
    ] == "in-debt"


async def test_blocking_the_account_refuses_online_at_once(client, services):
    person, _ = await _covered(client, services)
    everything = await machine_credential(client, services, SCENES)
    codes = {scene: await personal_code(client, person) for scene in ("transit", "health", "medical")}
    device = await _device_code(client, person)
    await set_resident_status(client, services, person["resident_id"], "blocked")
    for scene, code in codes.items():
        answer = await _verified(client, everything, code, scene)
        assert answer == {
            "allowed": False,
            "reason": "denied-account",
            "scene": scene,
            "code_type": "personal",
        }
    assert (await _verified(client, everything, device, "transit"))["reason"] == "denied-account"


# --- scan history -------------------------------------------------------------------------------------------


async def test_scans_show_in_the_holders_history_only(client, services):
    person, _ = await _covered(client, services)
    other = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    checkpoint = await machine_credential(client, services, ["verify:health"])
    code = await personal_code(client, person)
    await verify(client, gate, code, "transit")
    await verify(client, gate, code, "transit")  # a replay is recorded too
    await verify(client, checkpoint, await personal_code(client, person), "health")

    history = await client.get("/api/v1/me/scans", headers=bearer(person))
    assert history.status_code == 200, history.text
    scans = history.json()["scans"]
    seen = [(s["organisation"], s["scene"], s["verdict"], s["reason"]) for s in scans]
    assert (checkpoint["organisation"]["name"], "health", "allowed", "ok") in seen
    assert (gate["organisation"]["name"], "transit", "allowed", "ok") in seen
    assert (gate["organisation"]["name"], "transit", "denied", "replayed") in seen
    assert len(scans) == 3
    assert [s["at"] for s in scans] == sorted((s["at"] for s in scans), reverse=True)
    assert set(scans[0]) == {"at", "scene", "verdict", "reason", "organisation"}

    theirs = (await client.get("/api/v1/me/scans", headers=bearer(other))).json()["scans"]
    assert theirs == []
    await verify(client, gate, await personal_code(client, other), "transit")
    theirs = (await client.get("/api/v1/me/scans", headers=bearer(other))).json()["scans"]
    assert len(theirs) == 1 and theirs[0]["organisation"] == gate["organisation"]["name"]
    assert len((await client.get("/api/v1/me/scans", headers=bearer(person))).json()["scans"]) == 3
    assert (await client.get("/api/v1/me/scans")).status_code == 401


# --- the seam other paths call: a code text verified for a scene at a time ------------------------------------


async def test_verify_code_names_the_holder_from_the_code_itself(client, services):
    """VerificationService.verify_code is what uploaded taps call: the rider comes from the verified code (its
    sealed holder), never from a claimed id, and only when the code was valid at the claimed time."""
    person = await rider(client, services)
    code = await personal_code(client, person)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    device = wallet.code()
    now = time.time()

    server = await opened(services, code, "transit", now)
    assert (server.valid, server.reason, server.code_type) == (True, "ok", "personal")
    assert (server.holder_kind, str(server.holder_id)) == ("resident", person["resident_id"])
    assert server.replay_id == decode(code).code_id and server.credential_id is None
    assert Flags.from_byte(server.flags).may_ride

    by_device = await opened(services, device, "transit", now)
    assert by_device.allowed and str(by_device.holder_id) == person["resident_id"]
    assert by_device.subject == server.subject
    assert by_device.credential_id == bytes.fromhex(made["id"]) and len(by_device.replay_id) == 14

    # Back-dated, forward-dated, tampered, another version, another scene: refused, with no holder named.
    for text, at, reason in (
        (code, now - 40 * 86_400, "not-yet-valid"),
        (code, now + 3600, "expired"),
        (code[:40] + ("0" if code[40] != "0" else "1") + code[41:], now, None),
        ("TZ1:" + code[4:], now, "unsupported-version"),
    ):
        refused = await opened(services, text, "transit", at)
        assert not refused.valid and refused.holder_id is None, refused
        assert reason is None or refused.reason == reason, refused
    enterprise = await opened(services, code, "enterprise", now)
    assert (enterprise.valid, enterprise.reason) == (True, "no-entitlement")
