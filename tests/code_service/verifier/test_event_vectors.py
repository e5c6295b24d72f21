"""The event scene's vectors (docs/test-vectors/event-vectors.json: the event scene and printed tickets): the shipped
gate verifier and the clean-room verifier give every expected verdict and admission; the signed attendee list of
keys.json loads, and a changed or foreign one does not; the committed file is what the generator makes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import segno

from code_service.verifier import OfflineVerifier, SceneKeys
from code_service.verifier import vectors as generator
from code_service.verifier.attendees import AttendeeListError
from code_service.verifier.denylist import IdSet
from code_service.verifier.format import TicketCode, decode
from tests.code_service.verifier import cleanroom_verifier as cleanroom
from tests.paths import TEST_VECTORS

CASES = json.loads((TEST_VECTORS / "event-vectors.json").read_text(encoding="utf-8"))
KEYS = json.loads((TEST_VECTORS / "keys.json").read_text(encoding="utf-8"))


def _gate(case: dict[str, Any]) -> OfflineVerifier:
    scene = case.get("scene")
    keys = SceneKeys()
    if scene not in (None, "event") and not case.get("without_scene_keys"):
        document = KEYS["scene_keys"]
        keys = SceneKeys(
            {
                **document,
                "epochs": [
                    {**e, "keys": {s: k for s, k in e["keys"].items() if s == scene}}
                    for e in document["epochs"]
                ],
            }
        )
    gate = OfflineVerifier(KEYS["jwks"], skew=case["skew"], clock=lambda: case["now"], scene_keys=keys)
    for kind, ids in case.get("deny", {}).items():
        gate.deny_list.sets[kind] = IdSet(int(i, 16) for i in ids)
    if "attendees" in case:
        gate.attendees.load(case["attendees"])
        gate.attendees.admitted = {uuid.UUID(t).bytes for t in case.get("admitted", [])}
    return gate


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_gate_verifier_matches_every_event_vector(case: dict[str, Any]) -> None:
    verdict = _gate(case).verify(case["code"], case.get("scene"), entrance=case.get("entrance", ""))
    expected = case["expected"]
    assert (verdict.valid, verdict.reason) == (expected["valid"], expected["reason"]), case["notes"]
    if "admission" in expected:
        assert {
            "ticket": str(uuid.UUID(bytes=verdict.ticket)),
            "section": verdict.section,
            "seat": verdict.seat,
        } == expected["admission"]


def test_the_cleanroom_verifier_agrees_with_every_event_vector() -> None:
    assert cleanroom.check_event_vectors(KEYS, CASES) == []


def test_every_reason_of_the_event_scene_has_a_vector() -> None:
    reasons = {c["expected"]["reason"] for c in CASES if c.get("scene") == "event"}
    assert {
        "ok",
        "online-only",
        "no-ticket",
        "wrong-entrance",
        "already-admitted",
        "no-entitlement",
    } <= reasons
    assert {"printed-valid", "event-printed-ok", "printed-transit"} <= {c["name"] for c in CASES}


def test_a_printed_ticket_decodes_and_fits_qr_version_7() -> None:
    for case in CASES:
        if case["expected"]["valid"] and case["decoded"]["type"] == 4:
            parsed = decode(case["code"])
            assert isinstance(parsed, TicketCode)
            assert case["decoded"] == generator.describe(case["code"])
            assert len(case["code"]) == 168
            assert segno.make(case["code"], error="m", micro=False).version <= 7


def test_the_signed_attendee_list_loads_and_a_changed_or_foreign_one_does_not() -> None:
    gate = OfflineVerifier(KEYS["jwks"])
    gate.update_attendees(KEYS["attendee_list_jws"])
    event = next(c for c in CASES if c["name"] == "event-device-ok")
    assert gate.attendees.occasion_id == uuid.UUID(event["attendees"]["occasion"]).bytes
    assert len(gate.attendees.tickets) == len(event["attendees"]["tickets"])
    held = cleanroom.load_attendee_document(KEYS["attendee_list_jws"], cleanroom.load_jwks(KEYS["jwks"]))
    assert held.occasion == gate.attendees.occasion_id
    head, body, signature = KEYS["attendee_list_jws"].split(".")
    changed = f"{head}.{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{signature}"
    with pytest.raises(AttendeeListError):
        OfflineVerifier(KEYS["jwks"]).update_attendees(changed)
    with pytest.raises(AttendeeListError):
        OfflineVerifier(KEYS["untrusted"]).update_attendees(KEYS["attendee_list_jws"])
    with pytest.raises(ValueError):
        cleanroom.load_attendee_document(changed, cleanroom.load_jwks(KEYS["jwks"]))


def test_committed_event_vectors_are_what_the_generator_makes() -> None:
    """Apart from signature bytes (a cryptography without deterministic ECDSA signs differently)."""
    fresh = [
        {k: v for k, v in c.items() if k != "code"} for c in json.loads(json.dumps(generator.build_event()))
    ]
    assert fresh == [{k: v for k, v in c.items() if k != "code"} for c in CASES]
