"""The shipped gate verifier agrees with every committed test vector of docs/code-format.md."""

from __future__ import annotations

import json

import pytest

from code_service.verifier import OfflineVerifier
from tests.paths import TEST_VECTORS

VECTORS = TEST_VECTORS
CASES = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
JWKS = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))["jwks"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_offline_verifier_matches_vector(case):
    gate = OfflineVerifier(JWKS, skew=case["skew"], clock=lambda: case["now"])
    for seen in case.get("seen", []):
        gate.replay.first_use(bytes.fromhex(seen), case["now"] + 3600, case["now"])
    verdict = gate.verify(case["code"], case.get("scene"))
    assert (verdict.valid, verdict.reason) == (case["expected"]["valid"], case["expected"]["reason"]), case[
        "notes"
    ]
