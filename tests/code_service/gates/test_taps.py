"""Tap uploads: a tap is a proof. Each carries the scanned code (or the operator's own online verification) and is
verified at its own time, within the upload delay, at most one entry and one exit per code; the rider is who the
verified code belongs to. Refused taps are answered per tap, stored, counted and listed to their operator."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from code_service.gates.service import MAX_UPLOAD_DELAY
from code_service.gates.tasks import purge_refused_taps
from code_service.holder import DeviceWallet
from code_service.verification.service import CLOCK_SKEW
from code_service.verifier import OfflineVerifier
from code_service.verifier.base45 import b45decode, b45encode
from code_service.verifier.format import TYPE_PERSONAL, Flags, decode, encode_server_code, kid_for
from tests.helpers import (
    bearer,
    code_minter,
    machine_credential,
    opened,
    personal_code,
    register_device,
    rider,
    scene_keys_of,
    signed,
    verify,
)

TAPS = "/api/v1/gates/taps"
REFUSED = "/api/v1/gates/taps/refused"
GATE_SCOPES = ["verify:transit", "gates:sync", "gates:taps"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tap(
    tap_id: str, direction: str, at: dt.datetime, code: str | None = None, **more: Any
) -> dict[str, Any]:
    tap: dict[str, Any] = {
        "tap_id": tap_id,
        "gate_id": "g-07",
        "line": "1",
        "station": "泰州站",
        "direction": direction,
        "tapped_at": at.isoformat(),
    }
    if code is not None:
        tap["code"] = code
    return {**tap, **more}


async def _upload(client: Any, gate: dict[str, Any], taps: list[dict[str, Any]]) -> Any:
    return await signed(client, gate, "POST", TAPS, {"taps": taps})


def _statuses(response: Any) -> list[tuple[str, str | None]]:
    assert response.status_code == 200, response.text[:500]
    return [(t["status"], t.get("reason")) for t in response.json()["taps"]]


def _field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


async def _stored(db: Any, prefix: str) -> list[Any]:
    return list(
        await db.fetch(
            "SELECT tap_id, resident_id, code_id, credential_id FROM codes.taps WHERE tap_id LIKE $1 ORDER BY tap_id",
            prefix + "%",
        )
    )


async def _refused_rows(db: Any, prefix: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT tap_id, reason FROM codes.refused_taps WHERE tap_id LIKE $1 ORDER BY tap_id", prefix + "%"
    )
    return [(r["tap_id"], r["reason"]) for r in rows]


def _refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("tzt_taps_refused_total", {"reason": reason}) or 0.0


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}-"


async def _offline(client: Any, gate: dict[str, Any]) -> OfflineVerifier:
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    offline.update_scene_keys(await scene_keys_of(client, gate))
    document = (await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")).json()
    offline.deny_list.apply_document(document["jws"], offline.key_for_kid)
    return offline


def _with_signature_byte_flipped(code: str) -> str:
    payload = bytearray(b45decode(code[4:]))
    payload[-1] ^= 0x01
    return code[:4] + b45encode(bytes(payload))


# --- proven taps --------------------------------------------------------------------------------------------


async def test_taps_of_scanned_codes_are_stored_with_the_rider_the_platform_derived(client, services, db):
    """An offline gate verified a server code and a phone's device code and uploads what it scanned."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    offline = await _offline(client, gate)
    prefix = _prefix()
    taps = []
    for i, code in enumerate((await personal_code(client, person), wallet.code())):
        assert offline.verify(code, "transit").allowed
        taps.append(_tap(f"{prefix}{i}", "in", _now(), code, rider_token="rt_gate"))
    response = await _upload(client, gate, taps)
    assert response.json()["accepted"] == 2 and _statuses(response) == [("accepted", None)] * 2
    rows = await _stored(db, prefix)
    assert {str(r["resident_id"]) for r in rows} == {person["resident_id"]}
    assert rows[0]["credential_id"] is None and bytes(rows[1]["credential_id"]).hex() == made["id"]
    assert bytes(rows[1]["code_id"]) == decode(taps[1]["code"]).code_id


async def test_each_tap_of_a_mixed_batch_names_its_own_rider(client, services, db):
    """The riders of a batch's codes are read together (one statement): each tap still gets the rider of its own
    code, and refused codes between them change nothing."""
    riders = [await rider(client, services) for _ in range(3)]
    gate = await machine_credential(client, services, GATE_SCOPES)
    prefix = _prefix()
    taps, expected = [], {}
    for n, person in enumerate(riders):
        wallet = DeviceWallet.create()
        await register_device(client, person, wallet)
        for kind, code in (("p", await personal_code(client, person)), ("d", wallet.code())):
            taps.append(_tap(f"{prefix}{n}{kind}", "in", _now(), code))
            expected[f"{prefix}{n}{kind}"] = person["resident_id"]
        taps.append(_tap(f"{prefix}{n}x", "in", _now(), _with_signature_byte_flipped(code)))
    taps.append(_tap(f"{prefix}m", "in", _now(), "TZ2:not-a-code"))
    response = await _upload(client, gate, taps)
    statuses = dict(zip((t["tap_id"] for t in taps), _statuses(response), strict=True))
    assert {tap_id for tap_id, (status, _) in statuses.items() if status == "accepted"} == set(expected)
    assert statuses[f"{prefix}m"] == ("refused", "malformed")
    assert all(statuses[f"{prefix}{n}x"][0] == "refused" for n in range(3))
    assert {r["tap_id"]: str(r["resident_id"]) for r in await _stored(db, prefix)} == expected


async def test_a_batch_of_500_taps_is_idempotent(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    prefix = _prefix()
    start = _now() - dt.timedelta(hours=1)
    taps = []
    for i in range(250):  # an entry and an exit of each code
        code = code_at(start + dt.timedelta(seconds=i))
        at = start + dt.timedelta(seconds=i, milliseconds=500)
        taps += [_tap(f"{prefix}{i:04d}i", "in", at, code), _tap(f"{prefix}{i:04d}o", "out", at, code)]
    first = await _upload(client, gate, taps)
    assert (first.json()["accepted"], first.json()["duplicates"], first.json()["refused"]) == (500, 0, 0)
    again = await _upload(client, gate, taps)
    assert (again.json()["accepted"], again.json()["duplicates"], again.json()["refused"]) == (0, 500, 0)
    assert _statuses(again) == [("duplicate", None)] * 500
    assert len(await _stored(db, prefix)) == 500


async def test_the_largest_batch_fits(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    prefix = _prefix()
    station = "泰州火车站东广场公交枢纽" * 2
    at = _now() - dt.timedelta(minutes=5)
    taps = [
        _tap(f"{prefix}{i}", "single", at, code_at(at), station=station, rider_token="rt_" + "a" * 24)
        for i in range(5000)
    ]
    response = await _upload(client, gate, taps)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["accepted"] == 5000
    assert len(await _stored(db, prefix)) == 5000
    too_many = await _upload(client, gate, [*taps, _tap(f"{prefix}x", "single", at, code_at(at))])
    assert too_many.status_code == 400 and _field(too_many) == "taps", too_many.text[:300]


async def test_retry_after_partial_overlap_counts_duplicates(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    prefix = _prefix()
    at = _now() - dt.timedelta(minutes=5)
    taps = [_tap(f"{prefix}{i:03d}", "single", at, code_at(at)) for i in range(452)]
    first = await _upload(client, gate, taps[:300])
    assert first.json()["accepted"] == 300
    # The gate lost the answer and retries from tap 200 with new ones added.
    retry = await _upload(client, gate, taps[200:450])
    assert (retry.json()["accepted"], retry.json()["duplicates"]) == (150, 100)
    # The same tap twice in one batch counts once.
    doubled = await _upload(client, gate, [taps[450], taps[450], taps[451]])
    assert (doubled.json()["accepted"], doubled.json()["duplicates"]) == (2, 1)
    assert [t["tap_id"] for t in doubled.json()["taps"]] == [taps[450]["tap_id"], taps[451]["tap_id"]]
    assert len(await _stored(db, prefix)) == 452


async def test_two_operators_may_use_the_same_tap_id(client, services, db):
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    tap_id = "T-" + secrets.token_hex(6)
    at = _now()
    for operator in (metro, bus):  # each its own rider's code: tap ids are the operator's
        receipt = await _upload(client, operator, [_tap(tap_id, "single", at, code_at(at))])
        assert _statuses(receipt) == [("accepted", None)], "each operator's fare counts"


async def test_an_online_verification_is_a_proof_for_its_own_operator_only(client, services, db):
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    answer = (await verify(client, metro, await personal_code(client, person), "transit")).json()
    assert answer["allowed"] and answer["verification_id"], answer
    prefix = _prefix()
    verified = {"verification_id": answer["verification_id"]}
    # Another operator cannot bill this rider with it, nor can a time far from the verification's.
    foreign = await _upload(client, bus, [_tap(f"{prefix}bus", "in", _now(), **verified)])
    assert _statuses(foreign) == [("refused", "unknown-verification")]
    moved = _now() - dt.timedelta(seconds=CLOCK_SKEW + 60)
    assert _statuses(await _upload(client, metro, [_tap(f"{prefix}late", "in", moved, **verified)])) == [
        ("refused", "outside-window")
    ]
    unknown = {"verification_id": str(uuid.uuid4())}
    assert _statuses(await _upload(client, metro, [_tap(f"{prefix}none", "in", _now(), **unknown)])) == [
        ("refused", "unknown-verification")
    ]
    own = await _upload(client, metro, [_tap(f"{prefix}own", "in", _now(), **verified)])
    assert _statuses(own) == [("accepted", None)]
    rows = await _stored(db, prefix)
    assert [(r["tap_id"], str(r["resident_id"])) for r in rows] == [(f"{prefix}own", person["resident_id"])]

    # A refused verification is no proof: it carries no id.
    stranger = await rider(client, services, agreement=False)
    refused = (await verify(client, metro, await personal_code(client, stranger), "transit")).json()
    assert not refused["allowed"] and "verification_id" not in refused


# --- refused taps -------------------------------------------------------------------------------------------


async def test_an_invented_pair_of_taps_40_days_back_is_refused(client, services, db):
    """The reproduction of issue 13: a claimed subject and random code ids are no longer understood, and even a
    genuine code of that day is too old to upload."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    subject = (await opened(services, await personal_code(client, person))).subject.hex()
    back = _now() - dt.timedelta(days=40)
    invented = [
        {**_tap("inv-in", "in", back), "subject": subject, "code_id": secrets.token_hex(8)},
        {
            **_tap("inv-out", "out", back + dt.timedelta(minutes=30)),
            "subject": subject,
            "code_id": secrets.token_hex(8),
        },
    ]
    claimed = await _upload(client, gate, invented)
    assert claimed.status_code == 400 and _field(claimed) == "taps[0].subject", claimed.text

    code_at = await code_minter(client, services, person)
    prefix = _prefix()
    before = _refusals("too-late")
    pair = [
        _tap(f"{prefix}in", "in", back, code_at(back)),
        _tap(
            f"{prefix}out", "out", back + dt.timedelta(minutes=30), code_at(back + dt.timedelta(minutes=30))
        ),
    ]
    response = await _upload(client, gate, pair)
    assert _statuses(response) == [("refused", "too-late")] * 2
    assert response.json()["refused"] == 2 and response.json()["accepted"] == 0
    assert await _stored(db, prefix) == []
    assert await _refused_rows(db, prefix) == [(f"{prefix}in", "too-late"), (f"{prefix}out", "too-late")]
    assert _refusals("too-late") == before + 2
    # Just inside the bound, an outage's taps are still taken.
    late = _now() - dt.timedelta(seconds=MAX_UPLOAD_DELAY - 600)
    assert _statuses(
        await _upload(client, gate, [_tap(f"{prefix}outage", "single", late, code_at(late))])
    ) == [("accepted", None)]


async def test_forged_and_malformed_codes_are_refused(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    genuine = await personal_code(client, person)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    issued = decode(genuine)
    # A well-formed code of the right epoch and holder field, signed by a key the platform never published.
    own_key = encode_server_code(
        stranger_key,
        kid_for(stranger_key.public_key()),
        TYPE_PERSONAL,
        issued.code_id,
        issued.holder,
        int(_now().timestamp()),
        60,
        Flags(may_ride=True),
        issued.epoch,
        {scene: secrets.token_bytes(32) for scene in ("transit", "health", "medical", "enterprise")},
    )
    prefix = _prefix()
    at = _now()
    response = await _upload(
        client,
        gate,
        [
            _tap(f"{prefix}1", "in", at, _with_signature_byte_flipped(genuine)),
            _tap(f"{prefix}2", "in", at, own_key),
            _tap(f"{prefix}3", "in", at, "TZ2:garbage"),
            _tap(f"{prefix}4", "in", at, "hello"),
            _tap(f"{prefix}5", "in", at, "TZ1:" + genuine[4:]),
        ],
    )
    assert _statuses(response) == [
        ("refused", "bad-signature"),
        ("refused", "unknown-key"),
        ("refused", "malformed"),
        ("refused", "malformed"),
        ("refused", "unsupported-version"),
    ]
    assert await _stored(db, prefix) == []


async def test_a_code_is_proven_only_inside_its_window_and_never_in_the_future(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    issued_at = _now() - dt.timedelta(hours=2)
    code = code_at(issued_at)
    prefix = _prefix()
    cases = [
        (issued_at - dt.timedelta(seconds=CLOCK_SKEW + 5), "not-yet-valid"),
        (issued_at + dt.timedelta(seconds=60 + CLOCK_SKEW + 5), "expired"),
        (_now() + dt.timedelta(minutes=10), "future"),
    ]
    taps = [_tap(f"{prefix}{i}", "in", at, code) for i, (at, _) in enumerate(cases)]
    assert _statuses(await _upload(client, gate, taps)) == [("refused", reason) for _, reason in cases]
    # The same code at a time inside its window (skew included) is a proof.
    inside = _tap(f"{prefix}ok", "in", issued_at + dt.timedelta(seconds=60 + CLOCK_SKEW - 5), code)
    assert _statuses(await _upload(client, gate, [inside])) == [("accepted", None)]


async def test_a_code_gives_one_entry_and_one_exit_over_every_gate(client, services, db):
    """Two offline gates that cannot share a replay cache both let the same code through: the taps tell."""
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    code = await personal_code(client, person)
    here, there = await _offline(client, metro), await _offline(client, bus)
    assert here.verify(code, "transit").allowed and there.verify(code, "transit").allowed
    prefix = _prefix()
    at = _now()
    entry = await _upload(client, metro, [_tap(f"{prefix}a-in", "in", at, code)])
    assert _statuses(entry) == [("accepted", None)]
    replayed = await _upload(
        client,
        bus,
        [
            _tap(f"{prefix}b-in", "in", at, code, gate_id="bus-3"),
            _tap(f"{prefix}b-single", "single", at, code, gate_id="bus-3"),
            _tap(f"{prefix}b-out", "out", at, code, gate_id="bus-3"),
            _tap(f"{prefix}b-out2", "out", at, code, gate_id="bus-4"),
        ],
    )
    # The metro's entry came first: the bus's claims on it are another operator's; its own second exit a replay.
    assert _statuses(replayed) == [
        ("refused", "claimed-by-another-operator"),
        ("refused", "claimed-by-another-operator"),
        ("accepted", None),
        ("refused", "replayed"),
    ]
    # Re-uploading the same taps is idempotent: the accepted ones are duplicates, the refused stay refused.
    assert _statuses(await _upload(client, metro, [_tap(f"{prefix}a-in", "in", at, code)])) == [
        ("duplicate", None)
    ]
    before = _refusals("claimed-by-another-operator")
    again = await _upload(client, bus, [_tap(f"{prefix}b-in", "in", at, code, gate_id="bus-3")])
    assert _statuses(again) == [("refused", "claimed-by-another-operator")]
    assert _refusals("claimed-by-another-operator") == before
    assert [r["tap_id"] for r in await _stored(db, prefix)] == [f"{prefix}a-in", f"{prefix}b-out"]

    # The online verification of a code already tapped in does not give it a second entry either.
    fresh = await personal_code(client, person)
    answer = (await verify(client, metro, fresh, "transit")).json()
    both = await _upload(
        client,
        metro,
        [
            _tap(f"{prefix}c-code", "in", _now(), fresh),
            _tap(f"{prefix}c-online", "in", _now(), verification_id=answer["verification_id"]),
        ],
    )
    assert _statuses(both) == [("accepted", None), ("refused", "replayed")]


async def test_a_phone_revoked_before_its_tap_is_no_proof(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    wallet = DeviceWallet.create()
    made = await register_device(client, person, wallet)
    offline = await _offline(client, gate)
    before_code, before_at = wallet.code(), _now()
    revoked = await client.delete(f"/api/v1/codes/device-credentials/{made['id']}", headers=bearer(person))
    assert revoked.status_code == 204, revoked.text
    after_code = wallet.code()
    assert offline.verify(after_code, "transit").allowed  # the gate's list is older than the revocation
    prefix = _prefix()
    response = await _upload(
        client,
        gate,
        [_tap(f"{prefix}1", "in", before_at, before_code), _tap(f"{prefix}2", "in", _now(), after_code)],
    )
    assert _statuses(response) == [("accepted", None), ("refused", "denied")]


async def test_bad_taps_are_refused_naming_the_field_and_store_nothing(client, services, db):
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    code_at = await code_minter(client, services, person)
    prefix = _prefix()
    at = _now()
    good = [_tap(f"{prefix}{i}", "single", at, code_at(at)) for i in range(3)]
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([good[0], {**good[1], "direction": "sideways"}], "taps[1].direction"),
        # The claims a gate used to make are not understood any more.
        ([{**good[0], "subject": "00" * 8}], "taps[0].subject"),
        ([{**good[0], "code_id": "11" * 8}], "taps[0].code_id"),
        ([{**good[0], "credential_id": "22" * 8}], "taps[0].credential_id"),
        ([{k: v for k, v in good[0].items() if k != "code"}], "taps[0].code"),
        ([{**good[0], "verification_id": str(uuid.uuid4())}], "taps[0].code"),
        ([{**good[0], "verification_id": "nope"}], "taps[0].verification_id"),
        ([{**good[0], "code": ""}], "taps[0].code"),
        ([{**good[0], "tapped_at": "yesterday"}], "taps[0].tapped_at"),
        ([{**good[0], "tapped_at": "2026-11-21T08:00:00"}], "taps[0].tapped_at"),  # no zone: no time
        # Times no gate records (PostgreSQL cannot even store the first): a 400, not a 500.
        ([good[0], {**good[1], "tapped_at": "0001-01-01T00:00:00+08:00"}], "taps[1].tapped_at"),
        ([{**good[0], "tapped_at": "9999-12-31T23:59:59-14:00"}], "taps[0].tapped_at"),
        ([{**good[0], "tap_id": ""}], "taps[0].tap_id"),
        ([{k: v for k, v in good[0].items() if k != "gate_id"}], "taps[0].gate_id"),
        ([good[0], {**good[1], "fare": 200}], "taps[1].fare"),
        ([], "taps"),
    ]
    for taps, field in cases:
        response = await _upload(client, gate, taps)
        assert response.status_code == 400, (field, response.text)
        assert _field(response) == field, response.text
    assert await _stored(db, prefix) == [] and await _refused_rows(db, prefix) == []
    assert _statuses(await _upload(client, gate, good)) == [("accepted", None)] * 3


async def test_taps_need_the_taps_scope_and_a_signature(client, services, db):
    prefix = _prefix()
    person = await rider(client, services)
    sync_only = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    tap = _tap(f"{prefix}0", "single", _now(), await personal_code(client, person))
    refused = await _upload(client, sync_only, [tap])
    assert refused.status_code == 403, refused.text
    assert (await signed(client, sync_only, "GET", REFUSED)).status_code == 403
    unsigned = await client.post(TAPS, json={"taps": [tap]})
    assert unsigned.status_code == 401, unsigned.text
    assert (await client.get(REFUSED)).status_code == 401
    assert await _stored(db, prefix) == []


async def test_the_operator_sees_its_refused_taps_and_no_one_else_does(client, services, db):
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    code_at: Callable[[dt.datetime], str] = await code_minter(client, services, person)
    prefix = _prefix()
    back = _now() - dt.timedelta(days=40)
    await _upload(client, bus, [_tap(f"{prefix}bus", "in", back, code_at(back))])
    taps = [
        _tap(f"{prefix}1", "in", back, code_at(back)),
        _tap(f"{prefix}2", "in", _now(), "TZ2:garbage"),
        _tap(f"{prefix}3", "in", _now() + dt.timedelta(hours=1), code_at(_now())),
    ]
    await _upload(client, metro, taps)
    first = await signed(client, metro, "GET", f"{REFUSED}?since=0&limit=2")
    assert first.status_code == 200, first.text
    page = first.json()
    assert [(r["tap_id"], r["reason"], r["gate_id"]) for r in page["refused"]] == [
        (f"{prefix}1", "too-late", "g-07"),
        (f"{prefix}2", "malformed", "g-07"),
    ]
    rest = (await signed(client, metro, "GET", f"{REFUSED}?since={page['next']}")).json()
    assert [(r["tap_id"], r["reason"]) for r in rest["refused"]] == [(f"{prefix}3", "future")]
    assert (await signed(client, metro, "GET", f"{REFUSED}?since={rest['next']}")).json() == {
        "refused": [],
        "next": rest["next"],
    }
    for bad in ("-1", "abc", str(2**63)):
        response = await signed(client, metro, "GET", f"{REFUSED}?since={bad}")
        assert response.status_code == 400, (bad, response.text)
    assert (await signed(client, metro, "GET", f"{REFUSED}?limit=0")).status_code == 400


async def test_gates_uploading_one_code_at_the_same_moment_get_one_tap(client, services, db):
    """Two gates upload taps of one code at once: the check before storing cannot see the other's, the store's own
    constraint on the code's entry and exit slots does (a single tap takes both)."""
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    for first, second in (("single", "out"), ("in", "single"), ("out", "out")):
        code = await personal_code(client, person)
        prefix = _prefix()
        answers = await asyncio.gather(
            _upload(client, metro, [_tap(f"{prefix}m", first, _now(), code)]),
            _upload(client, bus, [_tap(f"{prefix}b", second, _now(), code)]),
        )
        outcomes = sorted(_statuses(a)[0] for a in answers)
        assert outcomes == [("accepted", None), ("refused", "claimed-by-another-operator")], (first, second)
        assert len(await _stored(db, prefix)) == 1


async def test_a_verification_not_written_yet_is_looked_up_again_when_the_tap_is_sent_again(
    client, services, db
):
    """Scan records are written in batches by the process that verified; another process may be asked about the
    verification first. The tap is refused then, and proven when the gate sends it again."""
    person = await rider(client, services)
    gate = await machine_credential(client, services, GATE_SCOPES)
    subject = (await opened(services, await personal_code(client, person))).subject
    verification_id = uuid.uuid4()
    prefix = _prefix()
    tap = _tap(f"{prefix}1", "in", _now(), verification_id=str(verification_id))
    assert _statuses(await _upload(client, gate, [tap])) == [("refused", "unknown-verification")]
    # The other process's record arrives.
    await db.execute(
        """INSERT INTO codes.scans (at, subject, organisation_id, organisation_name, key_id, scene, verdict,
                                    reason, verification_id, replay_id)
           VALUES (now(), $1, $2, 'metro', $3, 'transit', 'allowed', 'ok', $4, $5)""",
        subject,
        uuid.UUID(gate["organisation"]["id"]),
        gate["key_id"],
        verification_id,
        secrets.token_bytes(8),
    )
    assert _statuses(await _upload(client, gate, [tap])) == [("accepted", None)]
    assert _statuses(await _upload(client, gate, [tap])) == [("duplicate", None)]
    assert await _refused_rows(db, prefix) == []
    assert [str(r["resident_id"]) for r in await _stored(db, prefix)] == [person["resident_id"]]


async def test_an_operator_cannot_bill_a_code_another_operator_verified_or_upload_without_transit(
    client, services, db
):
    """Issue 13 probe: a second operator uploaded a code only the metro had verified online and the rider was
    charged by it (the metro's own tap then refused); a hospital given gates:taps uploaded a code it had scanned
    at a health check."""
    person = await rider(client, services)
    metro = await machine_credential(client, services, GATE_SCOPES)
    bus = await machine_credential(client, services, GATE_SCOPES)
    code = await personal_code(client, person)
    assert (await verify(client, metro, code, "transit")).json()["allowed"]
    prefix = _prefix()
    taken = await _upload(client, bus, [_tap(f"{prefix}bus", "single", _now(), code)])
    assert _statuses(taken) == [("refused", "shown-to-another-operator")]
    own = await _upload(client, metro, [_tap(f"{prefix}metro", "in", _now(), code)])
    assert _statuses(own) == [("accepted", None)]  # the metro's ride stands
    assert [r["tap_id"] for r in await _stored(db, prefix)] == [f"{prefix}metro"]

    hospital = await machine_credential(client, services, ["verify:health", "verify:medical", "gates:taps"])
    scanned = await personal_code(client, person)
    assert (await verify(client, hospital, scanned, "health")).status_code == 200
    refused = await signed(
        client, hospital, "POST", TAPS, {"taps": [_tap(f"{prefix}hospital", "single", _now(), scanned)]}
    )
    assert refused.status_code == 403 and "verify:transit" in refused.json()["detail"], refused.text
    assert [r["tap_id"] for r in await _stored(db, prefix)] == [f"{prefix}metro"]


async def test_refused_taps_are_kept_ninety_days(client, services, db):
    gate = await machine_credential(client, services, GATE_SCOPES)
    prefix = _prefix()
    await _upload(
        client, gate, [_tap(f"{prefix}old", "in", _now(), "hello"), _tap(f"{prefix}new", "in", _now(), "x")]
    )
    await db.execute(
        "UPDATE codes.refused_taps SET received_at = now() - interval '91 days' WHERE tap_id = $1",
        f"{prefix}old",
    )
    assert await purge_refused_taps({"platform": services.platform}) >= 1
    left = await db.fetch("SELECT tap_id FROM codes.refused_taps WHERE tap_id LIKE $1", prefix + "%")
    assert [r["tap_id"] for r in left] == [f"{prefix}new"]
