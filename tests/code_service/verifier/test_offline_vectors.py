"""The shipped gate verifier agrees with every committed test vector of docs/code-format.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from code_service.verifier import OfflineVerifier, SceneKeys
from code_service.verifier.denylist import IdSet
from tests.paths import TEST_VECTORS

VECTORS = TEST_VECTORS
CASES = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
KEYS = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))
JWKS = KEYS["jwks"]


def scene_keys_for(scene: str | None) -> dict[str, Any]:
    """What GET /api/v1/gates/scene-keys gives a verifier of this one scene."""
    document = KEYS["scene_keys"]
    return {
        **document,
        "epochs": [
            {**epoch, "keys": {s: k for s, k in epoch["keys"].items() if s == scene}}
            for epoch in document["epochs"]
        ],
    }


def gate_for(case: dict[str, Any]) -> OfflineVerifier:
    keys = SceneKeys() if case.get("without_scene_keys") else SceneKeys(scene_keys_for(case.get("scene")))
    gate = OfflineVerifier(JWKS, skew=case["skew"], clock=lambda: case["now"], scene_keys=keys)
    for seen in case.get("seen", []):
        gate.replay.first_use(bytes.fromhex(seen), case["now"] + 3600, case["now"])
    for kind, ids in case.get("deny", {}).items():
        gate.deny_list.sets[kind] = IdSet(int(i, 16) for i in ids)
    return gate


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_offline_verifier_matches_vector(case):
    verdict = gate_for(case).verify(case["code"], case.get("scene"))
    assert (verdict.valid, verdict.reason) == (case["expected"]["valid"], case["expected"]["reason"]), case[
        "notes"
    ]


@pytest.mark.parametrize(
    "case", [c for c in CASES if "scene_bits" in c.get("decoded", {})], ids=lambda c: c["name"]
)
def test_a_scene_verifier_reads_its_own_bits_and_nothing_else(case):
    """The verdict exposes the scene's field in the clear, and zero for every other scene's bits."""
    verdict = gate_for(case).verify(case["code"], case["scene"], consume=False)
    assert verdict.flags.to_byte() == (
        case["decoded"]["scene_bits"] if verdict.reason != "no-entitlement" else 0
    )
