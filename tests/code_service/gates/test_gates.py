"""Gates: the signed deny list and its deltas, offline verification with skew and a replay cache, and a deny list
of ten million entries that fits a gate's memory. Tap uploads: test_taps.py."""

from __future__ import annotations

import base64
import json
import uuid
from array import array
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from code_service.holder import DeviceWallet
from code_service.verifier import DenyList, OfflineVerifier, ReplayCache
from code_service.verifier.denylist import DenyListError, IdSet, unpack_ids
from code_service.verifier.format import Flags, Health, decode, sign_raw
from tests.helpers import (
    bearer,
    face_verified,
    feed_health,
    feed_insurance,
    login,
    machine_credential,
    opened,
    personal_code,
    register_device,
    rider,
    scene_keys_of,
    set_resident_status,
    signed,
    verify,
)

DENY = "/api/v1/gates/deny-list"
GATE_SCOPES = ["verify:transit", "verify:health", "gates:sync", "gates:taps"]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


async def _gate(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, GATE_SCOPES)


async def _document(client: Any, gate: dict[str, Any], since: int) -> dict[str, Any]:
    response = await signed(client, gate, "GET", f"{DENY}?since={since}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _body(jws: str) -> dict[str, Any]:
    return json.loads(_b64url(jws.split(".")[1]))  # type: ignore[no-any-return]


async def _offline(client: Any, gate: dict[str, Any], **options: Any) -> OfflineVerifier:
    """A gate that has just loaded the JWKS, its scene keys and a full deny-list snapshot."""
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json(), **options)
    offline.update_scene_keys(await scene_keys_of(client, gate))
    document = await _document(client, gate, 0)
    assert document["full"] is True
    offline.deny_list.apply_document(document["jws"], offline.key_for_kid)
    assert offline.deny_list.version == document["version"]
    return offline


async def _sync(client: Any, gate: dict[str, Any], offline: OfflineVerifier) -> dict[str, Any]:
    """The next sync: the changes after the version the gate holds."""
    before = offline.deny_list.version
    document = await _document(client, gate, before)
    offline.deny_list.apply_document(document["jws"], offline.key_for_kid)
    assert offline.deny_list.version == document["version"] >= before
    return document


async def _revoke(client: Any, person: dict[str, Any], credential_id: str) -> None:
    response = await client.delete(
        f"/api/v1/codes/device-credentials/{credential_id}", headers=bearer(person)
    )
    assert response.status_code == 204, response.text


async def _department(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["feeds:health", "feeds:insurance"], kind="department")


# --- the deny list ------------------------------------------------------------------------------------------


async def test_deny_list_needs_the_sync_scope(client, services):
    checkpoint = await machine_credential(client, services, ["verify:health"])
    refused = await signed(client, checkpoint, "GET", f"{DENY}?since=0")
    assert refused.status_code == 403, refused.text
    assert (await client.get(f"{DENY}?since=0")).status_code == 401
    gate = await _gate(client, services)
    for bad in ("-1", "abc"):
        response = await signed(client, gate, "GET", f"{DENY}?since={bad}")
        assert response.status_code == 400, response.text


async def test_revoked_device_is_denied_offline_after_the_next_sync(client, services):
    person = await rider(client, services)
    gate = await _gate(client, services)
    lost = await register_device(client, person, DeviceWallet.create())
    await _revoke(client, person, lost["id"])  # the list is not empty, so the gate holds a version above 0
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    offline = await _offline(client, gate)
    assert offline.deny_list.version > 0
    assert offline.verify(wallet.code(), "transit").allowed

    await _revoke(client, person, made["id"])
    online = (await verify(client, gate, wallet.code(), "transit")).json()
    assert online["allowed"] is False and online["reason"] == "denied-credential"
    # Offline the revocation arrives with the next sync, not before (the bound written in the spec).
    assert offline.verify(wallet.code(), "transit").allowed

    version = offline.deny_list.version
    delta = await _sync(client, gate, offline)
    assert delta["full"] is False and delta["version"] > version
    body = _body(delta["jws"])
    assert body["since"] == version and body["full"] is False
    assert int.from_bytes(bytes.fromhex(made["id"]), "big") in unpack_ids(body["credential"]["add"])
    verdict = offline.verify(wallet.code(), "transit")
    assert verdict.valid and not verdict.allowed and verdict.reason == "denied-credential"
    assert offline.verify(wallet.code(), "health").reason == "denied-credential"

    # A gate that starts from scratch gets the revocation in its full snapshot.
    fresh = await _offline(client, gate)
    assert fresh.verify(wallet.code(), "transit").reason == "denied-credential"
    # The resident's other phone is untouched.
    other = DeviceWallet.create()
    await register_device(client, person, other)
    assert offline.verify(other.code(), "transit").allowed


async def test_red_status_supersedes_live_device_credentials(client, services):
    person = await rider(client, services)
    department = await _department(client, services)
    gate = await _gate(client, services)
    await feed_health(client, department, person["id_number"], "green")
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    assert made["entitlements"]["health"] == "green"
    assert Flags.from_byte((await opened(services, wallet.code(), "health")).flags).health == Health.GREEN
    offline = await _offline(client, gate)
    assert offline.verify(wallet.code(), "health").flags.health == Health.GREEN

    await feed_health(client, department, person["id_number"], "red")
    # The credential still says green, so it ends: online at once, offline at the next sync.
    online = (await verify(client, gate, wallet.code(), "health")).json()
    assert online == {
        "allowed": False,
        "reason": "denied-credential",
        "scene": "health",
        "code_type": "device",
    }
    listed = (await client.get("/api/v1/codes/device-credentials", headers=bearer(person))).json()
    assert {c["id"]: c for c in listed["credentials"]}[made["id"]]["revoked_at"] is not None
    await _sync(client, gate, offline)
    assert offline.verify(wallet.code(), "health").reason == "denied-credential"
    assert offline.verify(wallet.code(), "transit").reason == "denied-credential"

    # The phone fetches a new credential, which carries red.
    renewed = DeviceWallet.create()
    fresh = await register_device(client, person, renewed)
    assert fresh["entitlements"]["health"] == "red"
    assert Flags.from_byte((await opened(services, renewed.code(), "health")).flags).health == Health.RED
    verdict = offline.verify(renewed.code(), "health")
    assert verdict.reason == "ok" and verdict.flags.health == Health.RED  # the checkpoint reads red
    online = (await verify(client, gate, renewed.code(), "health")).json()
    assert online["colour"] == "red" and online["allowed"] is False

    # A better status does not end the credential (it only under-states the holder until renewed).
    for better in ("yellow", "green"):
        await feed_health(client, department, person["id_number"], better)
        still = (await verify(client, gate, renewed.code(), "transit")).json()
        assert still["allowed"] is True, (better, still)
    await _sync(client, gate, offline)
    assert offline.verify(renewed.code(), "transit").allowed
    # A worse one again does.
    await feed_health(client, department, person["id_number"], "yellow")
    assert (await verify(client, gate, renewed.code(), "transit")).json()["reason"] == "denied-credential"


async def test_insurance_ending_supersedes_live_device_credentials(client, services):
    person = await face_verified(client, await rider(client, services))  # medical needs L3
    department = await _department(client, services)
    hospital = await machine_credential(client, services, ["verify:medical", "gates:sync"])
    await feed_insurance(client, department, person["id_number"], True)
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    assert Flags.from_byte((await opened(services, wallet.code(), "medical")).flags).insured
    offline = await _offline(client, hospital)
    await feed_insurance(client, department, person["id_number"], False)
    online = (await verify(client, hospital, wallet.code(), "medical")).json()
    assert online["reason"] == "denied-credential"
    await _sync(client, hospital, offline)
    assert offline.verify(wallet.code(), "medical").reason == "denied-credential"


async def test_blocked_account_is_denied_offline_until_unblocked(client, services):
    """The deny list names the holder's live credentials (kind account), never the holder: a v1 list carried the
    holder's stable subject, which every gate could match against every code."""
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    credential_id = bytes.fromhex(made["id"])
    code = await personal_code(client, person)
    offline = await _offline(client, gate)
    assert not offline.deny_list.denies("account", credential_id)

    await set_resident_status(client, services, person["resident_id"], "blocked")
    delta = await _sync(client, gate, offline)
    assert offline.deny_list.denies("account", credential_id)
    assert unpack_ids(_body(delta["jws"])["account"]["add"]).tolist() == [
        int.from_bytes(credential_id, "big")
    ]
    verdict = offline.verify(wallet.code(), "transit")
    assert verdict.valid and verdict.reason == "denied-account"
    assert offline.verify(wallet.code(), "health").reason == "denied-account"
    # Online, every code of the account is refused at once, the server code too.
    online = (await verify(client, gate, code, "transit")).json()
    assert online["reason"] == "denied-account", online

    await set_resident_status(client, services, person["resident_id"], "active")
    delta = await _sync(client, gate, offline)
    assert int.from_bytes(credential_id, "big") in unpack_ids(_body(delta["jws"])["account"]["remove"])
    assert not offline.deny_list.denies("account", credential_id)
    assert offline.verify(wallet.code(), "transit").allowed  # the phone's credential of the day works again
    back = await login(client, person["phone"])
    assert offline.verify(await personal_code(client, back), "transit").allowed
    assert (await _offline(client, gate)).deny_list.denies("account", credential_id) is False


async def test_a_debtor_is_listed_by_credential_and_issued_no_ride(client, services):
    """A fare debt lists every live credential of the rider as debtor (transit only); what is issued during the
    debt carries may-ride 0; repaying takes the entries off."""
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    offline = await _offline(client, gate)
    resident_id = uuid.UUID(person["resident_id"])
    async with services.pool.acquire() as conn, conn.transaction():
        await services.codes.transit_gates.deny_debtor(conn, resident_id, "test: fare refused")
    await _sync(client, gate, offline)
    assert offline.deny_list.denies("debtor", bytes.fromhex(made["id"]))
    assert offline.verify(wallet.code(), "transit").reason == "denied-debt"
    assert offline.verify(wallet.code(), "health", consume=False).reason != "denied-debt"
    async with services.pool.acquire() as conn, conn.transaction():
        await services.codes.transit_gates.allow_debtor(conn, resident_id, "test: repaid")
    await _sync(client, gate, offline)
    assert not offline.deny_list.denies("debtor", bytes.fromhex(made["id"]))
    assert offline.verify(wallet.code(), "transit").allowed


async def test_since_a_version_from_the_future_gets_a_full_snapshot(client, services):
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    await _revoke(client, person, made["id"])
    head = (await _document(client, gate, 0))["version"]
    assert head > 0

    future = await _document(client, gate, head + 1000)
    assert future["full"] is True and future["version"] == head
    assert _body(future["jws"])["full"] is True

    # A gate whose version is ahead of the server (a restored database) resets to the snapshot.
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    offline.deny_list.version = head + 1000
    offline.deny_list.apply_document(future["jws"], offline.key_for_kid)
    assert offline.deny_list.version == head
    assert offline.deny_list.denies("credential", bytes.fromhex(made["id"]))
    assert offline.verify(wallet.code(), "transit").reason == "denied-credential"

    # Nothing changed since the head: an empty delta that keeps the version.
    empty = await _document(client, gate, head)
    assert empty["full"] is False and empty["version"] == head


def _resign(jws: str, body: dict[str, Any] | None = None, header: dict[str, Any] | None = None) -> str:
    """The same document with its header or body replaced, keeping the original signature."""
    header_b64, payload_b64, signature = jws.split(".")
    if header is not None:
        header_b64 = _b64url_encode(json.dumps(header).encode())
    if body is not None:
        payload_b64 = _b64url_encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{header_b64}.{payload_b64}.{signature}"


async def test_tampered_deny_list_is_refused(client, services):
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    await _revoke(client, person, made["id"])
    offline = await _offline(client, gate)
    version = offline.deny_list.version
    assert offline.deny_list.denies("credential", bytes.fromhex(made["id"]))

    jws = (await _document(client, gate, 0))["jws"]
    header = json.loads(_b64url(jws.split(".")[0]))
    body = _body(jws)
    assert header["alg"] == "ES256" and offline.key_for_kid(header["kid"]) is not None
    # A forged full snapshot that would clear every revocation.
    cleared = {**body, "version": version + 1, "credential": {"add": "", "remove": ""}}
    attacker = ec.generate_private_key(ec.SECP256R1())
    h, p, _ = _resign(jws, body=cleared).split(".")
    forged_signature = _b64url_encode(sign_raw(attacker, f"{h}.{p}".encode()))
    header_b64, payload_b64, signature_b64 = jws.split(".")
    flipped = signature_b64[:10] + ("A" if signature_b64[10] != "A" else "B") + signature_b64[11:]
    tampered = [
        _resign(jws, body=cleared),  # body changed, signature kept
        f"{h}.{p}.{forged_signature}",  # signed by a key that is not the platform's, under its kid
        _resign(jws, header={**header, "kid": "00000000"}),  # a kid the gate does not know
        _resign(jws, header={**header, "alg": "none"}),
        f"{header_b64}.{payload_b64}.{flipped}",
        f"{header_b64}.{payload_b64}",
        f"{header_b64}.{payload_b64}.",
        "not a jws at all",
        "",
    ]
    for document in tampered:
        with pytest.raises(DenyListError):
            offline.deny_list.apply_document(document, offline.key_for_kid)
        assert offline.deny_list.version == version
        assert offline.deny_list.denies("credential", bytes.fromhex(made["id"]))
    assert offline.verify(wallet.code(), "transit").reason == "denied-credential"
    # The genuine document still applies.
    offline.deny_list.apply_document(jws, offline.key_for_kid)


async def test_a_delta_must_follow_the_gates_version(client, services):
    person = await rider(client, services)
    gate = await _gate(client, services)
    offline = await _offline(client, gate)
    start = offline.deny_list.version
    wallets, made = [], []
    for _ in range(2):
        wallet = DeviceWallet.create()
        made.append(await register_device(client, person, wallet))
        wallets.append(wallet)
    await _revoke(client, person, made[0]["id"])
    middle = (await _document(client, gate, 0))["version"]
    await _revoke(client, person, made[1]["id"])
    assert middle > start

    skipping = await _document(client, gate, middle)  # the changes after `middle`, not after `start`
    assert skipping["full"] is False
    with pytest.raises(DenyListError):
        offline.deny_list.apply_document(skipping["jws"], offline.key_for_kid)
    assert offline.deny_list.version == start
    assert offline.verify(wallets[0].code(), "transit").allowed  # nothing half-applied

    with pytest.raises(DenyListError):
        DenyList().apply_document(skipping["jws"], offline.key_for_kid)  # a gate that never synced

    await _sync(client, gate, offline)
    assert offline.deny_list.version == skipping["version"]
    for wallet in wallets:
        assert offline.verify(wallet.code(), "transit").reason == "denied-credential"
    # Applying the same delta twice is refused too: it no longer follows.
    with pytest.raises(DenyListError):
        offline.deny_list.apply_document(skipping["jws"], offline.key_for_kid)


async def test_full_snapshot_drops_credential_entries_past_their_life(client, services, db):
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    await _revoke(client, person, made["id"])
    credential = bytes.fromhex(made["id"])
    assert (await _offline(client, gate)).deny_list.denies("credential", credential)
    # 26 hours later (the entry moved back in time): the credential has expired anyway, so snapshots omit it.
    await db.execute(
        "UPDATE codes.deny_changes SET at = now() - interval '26 hours' WHERE kind = 'credential' AND entry = $1",
        credential,
    )
    assert not (await _offline(client, gate)).deny_list.denies("credential", credential)


# --- offline verification -----------------------------------------------------------------------------------


async def test_offline_replay_cache_opens_the_gate_once(client, services):
    person = await rider(client, services)
    gate = await _gate(client, services)
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    offline = await _offline(client, gate)

    server_code = await personal_code(client, person)
    first = offline.verify(server_code, "transit")
    assert first.allowed and first.code_id == decode(server_code).code_id
    again = offline.verify(server_code, "transit")
    assert again.valid and not again.allowed and again.reason == "replayed"

    device_code = wallet.code()
    assert offline.verify(device_code, "transit").allowed
    assert offline.verify(device_code, "transit").reason == "replayed"
    assert offline.verify(wallet.code(), "transit").allowed  # the phone's next code is a new one

    # A checkpoint may look twice; a look without consuming does not use the code up either.
    health_code = wallet.code()
    assert offline.verify(health_code, "health").reason == "no-entitlement"  # no colour known yet
    peek = wallet.code()
    assert offline.verify(peek, "transit", consume=False).allowed
    assert offline.verify(peek, "transit").allowed
    assert offline.verify(peek, "transit").reason == "replayed"

    # Another gate of another station that cannot share the cache accepts it once too (the taps tell).
    elsewhere = await _offline(client, gate)
    assert elsewhere.verify(server_code, "transit").allowed


def test_replay_cache_forgets_codes_that_can_no_longer_be_valid():
    cache = ReplayCache(capacity=3)
    assert cache.first_use(b"a", until=100, now=10)
    assert not cache.first_use(b"a", until=100, now=50)
    assert cache.first_use(b"b", until=200, now=60)
    assert cache.first_use(b"a", until=300, now=101)  # "a" expired at 100 and was forgotten
    assert not cache.first_use(b"b", until=300, now=150)


async def test_skew_tolerance_for_server_codes(client, services):
    person = await rider(client, services)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    scene_keys = await scene_keys_of(client, await _gate(client, services))
    code = await personal_code(client, person)
    issued = decode(code)
    start, end = issued.issued_at, issued.expires_at

    def at(now: float, skew: int = 30) -> str:
        gate = OfflineVerifier(jwks, skew=skew, clock=lambda: now)
        gate.update_scene_keys(scene_keys)
        return gate.verify(code, "transit").reason

    assert at(start) == "ok"
    assert at(start - 20) == "ok"  # the gate's clock 20 s behind: within the tolerance
    assert at(start - 20, skew=0) == "not-yet-valid"
    assert at(start - 60) == "not-yet-valid"  # 60 s behind: the code looks as if from the future
    assert at(end + 20) == "ok"  # 20 s ahead: a code that just expired still passes
    assert at(end + 20, skew=0) == "expired"
    assert at(end + 29) == "ok" and at(end + 30) == "expired"  # the end is exclusive
    assert at(end + 60) == "expired"


async def test_skew_tolerance_for_device_codes(client, services):
    person = await rider(client, services)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    probe = DeviceWallet.create()
    made = await register_device(client, person, probe)
    shown = made["not_before"] + 10
    wallet = DeviceWallet(private_key=probe.private_key, credential=probe.credential, clock=lambda: shown)
    scene_keys = await scene_keys_of(client, await _gate(client, services))

    def at(now: float, skew: int = 30) -> str:
        gate = OfflineVerifier(jwks, skew=skew, clock=lambda: now)
        gate.update_scene_keys(scene_keys)
        return gate.verify(wallet.code(), "transit").reason

    assert at(shown) == "ok"
    assert at(shown - 20) == "ok"  # the gate 20 s behind the phone
    assert at(shown - 20, skew=0) == "not-yet-valid"
    assert at(shown - 60) == "not-yet-valid"
    assert at(shown + 50) == "ok"  # the 30 s window plus 30 s of tolerance
    assert at(shown + 60) == "ok" and at(shown + 61) == "expired"
    assert at(shown + 31, skew=0) == "expired"
    # A phone 5 minutes slow makes codes the gate sees as long expired.
    slow = DeviceWallet(private_key=probe.private_key, credential=probe.credential, clock=lambda: shown - 300)
    assert OfflineVerifier(jwks, clock=lambda: shown).verify(slow.code(), "transit").reason == "expired"
    # Past the credential's end, however fresh the phone's signature.
    late = made["not_after"] + 31
    stale = DeviceWallet(private_key=probe.private_key, credential=probe.credential, clock=lambda: late)
    assert OfflineVerifier(jwks, clock=lambda: late).verify(stale.code(), "transit").reason == "expired"


# --- capacity -----------------------------------------------------------------------------------------------


def test_a_million_entry_deny_list_takes_eight_bytes_each():
    count = 1_000_000
    step = (2**64 - 1) // count
    ids = array("Q", range(step, step * (count + 1), step))
    assert len(ids) == count
    denied = IdSet.from_sorted(ids)
    assert len(denied) == count
    assert denied.memory_bytes() <= 8_100_000  # so ten million entries take about 81 MB
    for i in (0, 1, 499_999, 500_000, count - 1):
        assert ids[i] in denied
        assert ids[i] + 1 not in denied and ids[i] - 1 not in denied
    assert 0 not in denied and 2**64 - 1 not in denied

    # Changes since the snapshot live in small sets until compaction; lookups stay right either way.
    denied.add(ids[0] + 1)
    denied.remove(ids[1])
    assert ids[0] + 1 in denied and ids[1] not in denied and ids[2] in denied
    assert len(denied) == count
    denied.remove(ids[0] + 1)
    assert ids[0] + 1 not in denied
    for i in range(60_000):  # past the compaction threshold
        denied.add(ids[i] + 7)
    assert denied.memory_bytes() <= (count + 60_000) * 8 + 60 * 60_000
    assert (
        ids[100] + 7 in denied and ids[1] not in denied and ids[2] in denied and ids[70_000] + 7 not in denied
    )


def test_snapshots_must_be_sorted_and_unique():
    with pytest.raises(ValueError):
        IdSet.from_sorted(array("Q", [3, 2]))
    with pytest.raises(ValueError):
        IdSet.from_sorted(array("Q", [2, 2]))
    assert 5 in IdSet.from_sorted(array("Q", [1, 5, 9]))
