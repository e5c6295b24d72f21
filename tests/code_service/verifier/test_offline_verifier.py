"""The gate-side verifier's fast paths against plain definitions: OfflineVerifier against the clean-room verifier
(written from docs/code-format.md alone) on mutated codes, clocks, scenes, deny lists and replays; Base45 and the
DER signature builder against the RFC and `encode_dss_signature`; the replay cache against its simple form."""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from code_service.verifier import DenyList, OfflineVerifier, ReplayCache, SceneKeys
from code_service.verifier.base45 import ALPHABET, b45decode, b45encode
from code_service.verifier.denylist import IdSet
from code_service.verifier.format import PREFIX, DeviceCode, decode, der_signature
from tests.code_service.verifier import cleanroom_verifier as cleanroom
from tests.code_service.verifier.test_code_format import GENUINE, REASONS
from tests.paths import TEST_VECTORS

VECTOR_DIR = TEST_VECTORS
SCENES = ("transit", "health", "medical", "enterprise")


@cache
def _vectors() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((VECTOR_DIR / "vectors.json").read_text(encoding="utf-8")))


@cache
def _jwks() -> dict[str, Any]:
    return json.loads((VECTOR_DIR / "keys.json").read_text(encoding="utf-8"))["jwks"]


@cache
def _scene_document() -> dict[str, Any]:
    return json.loads((VECTOR_DIR / "keys.json").read_text(encoding="utf-8"))["scene_keys"]


@cache
def _cleanroom_keys() -> dict[str, ec.EllipticCurvePublicKey]:
    return cleanroom.load_jwks(_jwks())


def _cleanroom_scene_keys(scene: str | None) -> dict[bytes, tuple[bytes, int]]:
    return cleanroom.load_scene_keys(_scene_document(), scene) if scene else {}


def _genuine() -> list[dict[str, Any]]:
    return [c for c in _vectors() if c["expected"]["valid"]]


def _gate(now: int, skew: int, deny: DenyList | None = None) -> OfflineVerifier:
    return OfflineVerifier(
        _jwks(), deny, skew=skew, clock=lambda: now, scene_keys=SceneKeys(_scene_document())
    )


def _mutated(code: str, index: int, mask: int) -> str:
    payload = bytearray(b45decode(code[len(PREFIX) :]))
    payload[index % len(payload)] ^= mask
    return PREFIX + b45encode(bytes(payload))


# -- the verdicts -----------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    case=st.sampled_from(_genuine()),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=0, max_value=255),  # 0: the code as it is
    shift=st.integers(min_value=-120, max_value=120),
    scene=st.sampled_from([None, *SCENES]),
)
def test_agrees_with_the_cleanroom_verifier(
    case: dict[str, Any], index: int, mask: int, shift: int, scene: str | None
) -> None:
    text = _mutated(case["code"], index, mask)
    now = case["now"] + shift
    ours = _gate(now, case["skew"]).verify(text, scene)
    theirs = cleanroom.verify(
        text,
        now,
        _cleanroom_keys(),
        skew=case["skew"],
        scene=scene,
        scene_keys=_cleanroom_scene_keys(scene),
        seen=set(),
    )
    assert (ours.valid, ours.reason) == (theirs.valid, theirs.reason)


@pytest.mark.parametrize("kid", [None, b"\xee\xee\xee\xee"], ids=["known-kid", "unknown-kid"])
def test_a_device_key_that_is_no_point_is_malformed_before_anything_else(kid: bytes | None) -> None:
    """docs/code-format.md section 6, step 1.5: checked before the key id (step 2) and the signatures."""
    case = next(c for c in _genuine() if decode(c["code"]).type == 3)
    payload = bytearray(b45decode(case["code"][len(PREFIX) :]))
    if kid is not None:
        payload[1:5] = kid
    payload[34] = 0x05  # neither 02 nor 03
    text = PREFIX + b45encode(bytes(payload))
    assert _gate(case["now"], case["skew"]).verify(text, "transit").reason == "malformed"
    theirs = cleanroom.verify(
        text, case["now"], _cleanroom_keys(), skew=case["skew"], scene="transit", seen=set()
    )
    assert theirs.reason == "malformed"


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(_genuine()),
    denied=st.sets(st.sampled_from(["credential", "account", "debtor"])),
    other=st.sets(st.sampled_from(["credential", "account", "debtor"])),
    as_change=st.booleans(),
    scene=st.sampled_from([None, *SCENES]),
)
def test_deny_list_agrees_with_the_cleanroom_verifier(
    case: dict[str, Any], denied: set[str], other: set[str], as_change: bool, scene: str | None
) -> None:
    """Entries for this code's credential (a server code's code_id, which must not count), and for other ids, held
    in the sorted base of the sets or as changes since the last compaction."""
    code = decode(case["code"])
    ids = {kind: code.credential_id if isinstance(code, DeviceCode) else code.code_id for kind in denied}
    entries = {kind: {ids[kind]} if kind in ids else set() for kind in ("credential", "account", "debtor")}
    for kind in other:
        entries[kind].add(bytes.fromhex("00112233445566ff"))
    deny = DenyList()
    for kind, held in entries.items():
        values = [int.from_bytes(i, "big") for i in held]
        if as_change:
            for value in values:
                deny.sets[kind].add(value)
        else:
            deny.sets[kind] = IdSet(values)
    ours = _gate(case["now"], case["skew"], deny).verify(case["code"], scene)
    theirs = cleanroom.verify(
        case["code"],
        case["now"],
        _cleanroom_keys(),
        skew=case["skew"],
        scene=scene,
        scene_keys=_cleanroom_scene_keys(scene),
        seen=set(),
        deny=entries,
    )
    assert (ours.valid, ours.reason) == (theirs.valid, theirs.reason)


@pytest.mark.parametrize("case", _genuine(), ids=[c["name"] for c in _genuine()])
def test_verdict_fields_are_the_decoded_fields(case: dict[str, Any]) -> None:
    gate = _gate(case["now"], case["skew"])
    if case.get("without_scene_keys"):
        gate.scene_keys = SceneKeys()
    verdict = gate.verify(case["code"], case.get("scene"))
    code = decode(case["code"])
    expected = case["decoded"]
    assert verdict.scene == (case.get("scene") or "")
    assert (verdict.code_type, verdict.code_id, verdict.epoch, verdict.holder) == (
        code.type,
        code.code_id,
        code.epoch,
        code.holder,
    )
    assert verdict.code_id.hex() == expected["replay_id"]
    assert verdict.credential_id == (code.credential_id if isinstance(code, DeviceCode) else b"")
    if verdict.reason == "ok" and "scene_bits" in expected:
        assert verdict.flags.to_byte() == expected["scene_bits"]  # the scene's field, nothing else
    elif verdict.reason == case["expected"]["reason"] != "replayed":
        assert verdict.flags.to_byte() == 0
    with pytest.raises(AttributeError):
        verdict.reason = "ok"  # type: ignore[misc]  # verdicts are immutable


@pytest.mark.parametrize("name", ["scene-transit-server", "scene-transit-device", "scene-medical-insured"])
def test_a_code_is_accepted_once_and_a_refused_one_is_not_used_up(name: str) -> None:
    case = next(c for c in _vectors() if c["name"] == name)
    scene = case["scene"]
    code = decode(case["code"])
    deny = DenyList()
    gate = _gate(case["now"], case["skew"], deny)
    assert gate.verify(case["code"], scene, consume=False).reason == "ok"
    if isinstance(code, DeviceCode):
        deny.sets["account"].add(int.from_bytes(code.credential_id, "big"))
        assert gate.verify(case["code"], scene).reason == "denied-account"
        deny.sets["account"].remove(int.from_bytes(code.credential_id, "big"))
    else:
        gate.scene_keys = SceneKeys()  # a scene key missing: refused, and not used up either
        assert gate.verify(case["code"], scene).reason == "no-scene-key"
        gate.scene_keys = SceneKeys(_scene_document())
    first, again = gate.verify(case["code"], scene), gate.verify(case["code"], scene)
    assert (first.reason, first.valid, again.reason, again.valid) == ("ok", True, "replayed", True)
    assert gate.verify(case["code"], scene, consume=False).reason == "ok"  # looks, records nothing
    assert gate.verify(case["code"], "health").reason == "ok"  # a checkpoint may check twice (green)
    assert gate.verify(case["code"], None).reason == "ok"


def test_an_unknown_scene_entitles_nothing() -> None:
    case = next(c for c in _vectors() if c["name"] == "server-personal-valid")
    verdict = _gate(case["now"], case["skew"]).verify(case["code"], "cinema")
    assert (verdict.valid, verdict.reason) == (True, "no-entitlement")


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=ALPHABET + "abc\n\r\t#é").map(lambda t: PREFIX + t),
        st.binary(max_size=250).map(lambda b: PREFIX + b45encode(b)),
        st.sampled_from(_vectors()).map(lambda c: c["code"][: len(c["code"]) // 2]),
    ),
    st.sampled_from([None, "", *SCENES, "cinema"]),
)
def test_never_raises(text: str, scene: str | None) -> None:
    verdict = _gate(1_767_225_600, 5).verify(text, scene)
    assert verdict.reason in REASONS
    assert verdict.valid == (verdict.reason in GENUINE)


# -- Base45 and DER ---------------------------------------------------------------------------------------------


def _plain_b45decode(text: str) -> bytes | None:
    try:
        return cleanroom.base45_decode(text)
    except cleanroom.Malformed:
        return None


def _ours(text: str) -> bytes | None:
    try:
        return b45decode(text)
    except ValueError:
        return None


def test_base45_every_triple_and_pair() -> None:
    """All 91,125 triples and 2,025 pairs, alone and after a valid triple: the boundaries 65,535 and 255 included."""
    for triple in map("".join, itertools.product(ALPHABET, repeat=3)):
        assert _ours(triple) == _plain_b45decode(triple), triple
    for pair in map("".join, itertools.product(ALPHABET, repeat=2)):
        assert _ours(pair) == _plain_b45decode(pair), pair
        assert _ours("FGW" + pair) == _plain_b45decode("FGW" + pair), pair
    assert b45decode("FGW") == b"\xff\xff" and b45decode("U5") == b"\xff"
    for bad in ("GGW", "V5", "FGWGGW", "GGWFGW", "FGW:::FGW"):
        assert _ours(bad) is None, bad


def test_base45_encode_every_pair_in_one_go() -> None:
    """All 65,536 pairs in one input, so every 64-bit lane of the encoder's big integer holds a different value
    (its multiply-and-shift division is exact only below 2^16), then odd lengths around them."""
    every_pair = b"".join(n.to_bytes(2, "big") for n in range(65536))
    assert b45encode(every_pair) == cleanroom.base45_encode(every_pair)
    for tail in (b"", b"\x00", b"\xff", b"\x00\xff\xfe"):
        data = b"\xff\xff\x00\x00" + tail
        assert b45encode(data) == cleanroom.base45_encode(data)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=ALPHABET, max_size=320),
        st.text(alphabet=ALPHABET + "a\n\x00é\U0001f600", max_size=40),
        st.text(max_size=40),
        st.binary(max_size=300).map(b45encode),
    )
)
def test_base45_decode_matches_the_plain_definition(text: str) -> None:
    assert _ours(text) == _plain_b45decode(text)


@st.composite
def _scalar_half(draw: st.DrawFn) -> bytes:
    """32 bytes, often with leading zero bytes or the top bit set: the cases DER treats specially."""
    zeros = draw(st.sampled_from([0, 0, 0, 1, 2, 31, 32]))
    body = bytearray(draw(st.binary(min_size=32 - zeros, max_size=32 - zeros)))
    if body and draw(st.booleans()):
        body[0] |= 0x80
    return bytes(zeros) + bytes(body)


@settings(max_examples=1000, deadline=None)
@given(_scalar_half(), _scalar_half())
def test_der_signature_is_encode_dss_signature(r: bytes, s: bytes) -> None:
    assert der_signature(r, s) == encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))


# -- the replay cache -------------------------------------------------------------------------------------------


class _PlainReplayCache:
    """The cache's definition: evict from the oldest entry while it is expired or the cache is full."""

    def __init__(self, capacity: int) -> None:
        self.seen: OrderedDict[bytes, float] = OrderedDict()
        self.capacity = capacity

    def first_use(self, code_id: bytes, until: float, now: float) -> bool:
        while self.seen:
            oldest, expiry = next(iter(self.seen.items()))
            if expiry >= now and len(self.seen) < self.capacity:
                break
            del self.seen[oldest]
        if code_id in self.seen:
            return False
        self.seen[code_id] = until
        return True


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(
        st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), st.integers(0, 40), st.integers(0, 15)),
        max_size=60,
    ),
)
def test_replay_cache_matches_its_definition(capacity: int, steps: list[tuple[bytes, int, int]]) -> None:
    ours, plain = ReplayCache(capacity), _PlainReplayCache(capacity)
    now = 0
    for code_id, life, step in steps:
        now += step
        assert ours.first_use(code_id, now + life, now) == plain.first_use(code_id, now + life, now)
