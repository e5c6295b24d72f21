"""The code format (docs/code-format.md): committed test vectors through the reference codec and through a clean-room
verifier written from the document alone; Base45 and decoding properties; QR sizes; flags."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import segno
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from code_service.verifier import vectors as generator
from code_service.verifier.base45 import ALPHABET, b45decode, b45encode
from code_service.verifier.format import (
    DEVICE_CODE_LEN,
    FLAGS,
    MAX_CREDENTIAL_LIFETIME,
    MAX_SERVER_LIFETIME,
    PREFIX,
    SCENE_BITS,
    SERVER_CODE_LEN,
    TYPE_ENTERPRISE,
    DeviceCode,
    Flags,
    FormatError,
    Health,
    ServerCode,
    Standing,
    UnsupportedVersion,
    decode,
    kid_for,
    load_point,
    scene_mask,
    verify_raw,
)
from tests.code_service.verifier import cleanroom_verifier as cleanroom
from tests.paths import TEST_VECTORS

VECTOR_DIR = TEST_VECTORS
DEVICE_WINDOW = 30
REASONS = {
    "ok",
    "unsupported-version",
    "malformed",
    "unknown-key",
    "bad-signature",
    "bad-device-signature",
    "not-yet-valid",
    "expired",
    "replayed",
    "denied-credential",
    "denied-account",
    "denied-debt",
    "no-entitlement",
    "no-scene-key",
}
GENUINE = {
    "ok",
    "replayed",
    "denied-credential",
    "denied-account",
    "denied-debt",
    "no-entitlement",
    "no-scene-key",
}
SCENES: dict[str, tuple[Callable[[ServerCode | DeviceCode, Flags], bool], bool]] = {
    # scene: (entitled, given the scene's clear bits as Flags; accepted once)
    "transit": (lambda c, f: c.type != TYPE_ENTERPRISE and f.may_ride, True),
    "health": (lambda c, f: c.type != TYPE_ENTERPRISE and f.health != Health.UNKNOWN, False),
    "medical": (lambda c, f: c.type != TYPE_ENTERPRISE and f.insured, True),
    "enterprise": (lambda c, f: c.type == TYPE_ENTERPRISE and f.standing != Standing.UNKNOWN, False),
}


@cache
def key_file() -> dict[str, Any]:
    return json.loads((VECTOR_DIR / "keys.json").read_text(encoding="utf-8"))


@cache
def vector_list() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((VECTOR_DIR / "vectors.json").read_text(encoding="utf-8")))


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_key(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey:
    x, y = (int.from_bytes(_b64url(jwk[c]), "big") for c in ("x", "y"))
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


@cache
def trusted_keys() -> dict[bytes, ec.EllipticCurvePublicKey]:
    return {bytes.fromhex(jwk["kid"]): _public_key(jwk) for jwk in key_file()["jwks"]["keys"]}


@cache
def cleanroom_keys() -> dict[str, ec.EllipticCurvePublicKey]:
    return cleanroom.load_jwks(key_file()["jwks"])


@cache
def scene_key_table() -> dict[tuple[str, bytes], bytes]:
    table = {}
    for epoch in key_file()["scene_keys"]["epochs"]:
        for scene, key in epoch["keys"].items():
            table[(scene, bytes.fromhex(epoch["epoch"]))] = _b64url(key)
    return table


# -- (a) the reference check: format.py primitives plus the rules of section 6 ---------------------------------


def reference_verdict(
    text: str,
    now: int,
    skew: int,
    scene: str | None = None,
    seen: frozenset[bytes] = frozenset(),
    deny: dict[str, list[str]] | None = None,
    with_scene_keys: bool = True,
) -> str:
    try:
        code = decode(text)
        if isinstance(code, ServerCode):
            if not 1 <= code.lifetime <= MAX_SERVER_LIFETIME:
                raise FormatError("lifetime")
            device_key = None
        else:
            if not 0 < code.not_after - code.not_before <= MAX_CREDENTIAL_LIFETIME:
                raise FormatError("credential window")
            device_key = load_point(code.device_key)
    except UnsupportedVersion:
        return "unsupported-version"
    except FormatError:
        return "malformed"

    key = trusted_keys().get(code.kid)
    if key is None:
        return "unknown-key"
    if isinstance(code, ServerCode):
        if not verify_raw(key, code.signature, code.signed):
            return "bad-signature"
        if now < code.issued_at - skew:
            return "not-yet-valid"
        if now >= code.expires_at + skew:
            return "expired"
    else:
        assert device_key is not None
        if not verify_raw(key, code.credential_signature, code.credential):
            return "bad-signature"
        if not verify_raw(device_key, code.device_signature, code.signed):
            return "bad-device-signature"
        if now < code.not_before - skew or code.shown_at > now + skew:
            return "not-yet-valid"
        if now > code.not_after + skew or code.shown_at < now - DEVICE_WINDOW - skew:
            return "expired"

    if isinstance(code, DeviceCode) and deny:
        listed = {kind for kind, ids in deny.items() if code.credential_id.hex() in ids}
        if "credential" in listed:
            return "denied-credential"
        if "account" in listed:
            return "denied-account"
        if "debtor" in listed and scene == "transit":
            return "denied-debt"

    if scene is not None:
        entitled, once = SCENES[scene]
        if (code.type == TYPE_ENTERPRISE) != (scene == "enterprise"):
            return "no-entitlement"
        scene_key = scene_key_table().get((scene, code.epoch)) if with_scene_keys else None
        if scene_key is None:
            return "no-scene-key"
        clear = FLAGS[(code.masked_flags ^ scene_mask(scene_key, code.nonce, scene)) & SCENE_BITS[scene]]
        if not entitled(code, clear):
            return "no-entitlement"
        if once and code.code_id in seen:
            return "replayed"
    return "ok"


def _reference(case: dict[str, Any]) -> str:
    seen = frozenset(bytes.fromhex(h) for h in case.get("seen", ()))
    return reference_verdict(
        case["code"],
        case["now"],
        case["skew"],
        case.get("scene"),
        seen,
        case.get("deny"),
        not case.get("without_scene_keys"),
    )


def _ids(cases: tuple[dict[str, Any], ...]) -> list[str]:
    return [c["name"] for c in cases]


def test_vector_files_are_well_formed() -> None:
    cases = vector_list()
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))
    for c in cases:
        assert set(c) <= {
            "name",
            "code",
            "now",
            "skew",
            "scene",
            "seen",
            "deny",
            "without_scene_keys",
            "expected",
            "notes",
            "decoded",
        }
        assert c["expected"]["reason"] in REASONS
        assert c["expected"]["valid"] == (c["expected"]["reason"] in GENUINE)
        assert c.get("scene") in (None, *SCENES)
        assert ("decoded" in c) == c["expected"]["valid"]
        assert c["notes"]
    covered = {c["expected"]["reason"] for c in cases}
    assert covered == REASONS  # every reason of section 6 has a vector


@pytest.mark.parametrize("case", vector_list(), ids=_ids(vector_list()))
def test_vector_through_reference_codec(case: dict[str, Any]) -> None:
    reason = _reference(case)
    assert (reason in GENUINE, reason) == (case["expected"]["valid"], case["expected"]["reason"]), case[
        "notes"
    ]


@pytest.mark.parametrize(
    "case",
    [c for c in vector_list() if c["expected"]["valid"]],
    ids=[c["name"] for c in vector_list() if c["expected"]["valid"]],
)
def test_decoded_fields_match_the_codec(case: dict[str, Any]) -> None:
    described = generator.describe(case["code"])
    assert described == {k: v for k, v in case["decoded"].items() if k != "scene_bits"}
    parsed = cleanroom.parse(case["code"])
    expected = case["decoded"]
    assert (
        parsed.type,
        parsed.kid.hex(),
        parsed.epoch.hex(),
        parsed.holder.hex(),
        parsed.flags,
        parsed.replay_id.hex(),
    ) == (
        expected["type"],
        expected["kid"],
        expected["epoch"],
        expected["holder"],
        expected["flags"]["masked"],
        expected["replay_id"],
    )
    if "scene_bits" in expected:
        verdict = cleanroom.verify_case(case, cleanroom_keys(), key_file()["scene_keys"])
        assert verdict.scene_bits == (expected["scene_bits"] if verdict.reason != "no-entitlement" else 0)
    if parsed.type == 3:
        assert (
            parsed.credential_id.hex(),
            parsed.not_before,
            parsed.not_after,
            parsed.shown_at,
            parsed.counter,
        ) == (
            expected["credential_id"],
            expected["not_before"],
            expected["not_after"],
            expected["shown_at"],
            expected["counter"],
        )
    else:
        assert (parsed.nonce.hex(), parsed.issued_at, parsed.lifetime) == (
            expected["code_id"],
            expected["issued_at"],
            expected["lifetime"],
        )


def test_key_file_matches_its_seeds() -> None:
    doc = key_file()
    derived = {}
    for seed in doc["seeds"].values():
        private = generator.derive_key(seed.encode())
        derived[kid_for(private.public_key()).hex()] = private.private_numbers().private_value
    jwks = doc["jwks"]["keys"] + doc["untrusted"]["keys"] + doc["devices"]
    assert len(jwks) == len(derived) == 5
    for jwk in jwks:
        assert jwk["kid"] == kid_for(_public_key(jwk)).hex()
        assert len(jwk["kid"]) == 8 and jwk["kid"] == jwk["kid"].lower()
        assert derived[jwk["kid"]] == int.from_bytes(_b64url(jwk["d"]), "big")
    for device in doc["devices"]:
        assert bytes.fromhex(device["compressed"]) == generator.compressed_point(_public_key(device))
    untrusted = {k["kid"] for k in doc["untrusted"]["keys"]}
    assert untrusted.isdisjoint(k["kid"] for k in doc["jwks"]["keys"])


def test_committed_vectors_match_the_generator_apart_from_signatures() -> None:
    """A re-run changes signature bytes only: every other member of every case, and keys.json, are the same."""
    keys_doc, cases = generator.build()
    assert json.loads(json.dumps(keys_doc)) == key_file()
    fresh = [{k: v for k, v in c.items() if k != "code"} for c in json.loads(json.dumps(cases))]
    committed = [{k: v for k, v in c.items() if k != "code"} for c in vector_list()]
    assert fresh == committed
    for new, old in zip(cases, vector_list(), strict=True):
        assert len(new["code"]) == len(old["code"]), new["name"]


def test_generator_writes_both_files(tmp_path: Path) -> None:
    assert generator.main([str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "vectors.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in written] == [c["name"] for c in vector_list()]
    assert generator.main([]) == 2


# -- (b) the clean-room verifier agrees on every vector ---------------------------------------------------------


def test_cleanroom_imports_nothing_from_the_project() -> None:
    source = Path(cleanroom.__file__).read_text(encoding="utf-8")
    imported = {
        line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imported <= {
        "__future__",
        "base64",
        "json",
        "hashlib",
        "hmac",
        "re",
        "struct",
        "collections",
        "dataclasses",
        "typing",
        "cryptography",
    }


def test_cleanroom_loads_only_the_trusted_keys() -> None:
    assert set(cleanroom_keys()) == {k["kid"] for k in key_file()["jwks"]["keys"]}
    forged = dict(key_file()["jwks"]["keys"][0], kid=key_file()["jwks"]["keys"][1]["kid"])
    assert (
        cleanroom.load_jwks({"keys": [forged, {"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "00"}]})
        == {}
    )


@pytest.mark.parametrize("case", vector_list(), ids=_ids(vector_list()))
def test_vector_through_cleanroom_verifier(case: dict[str, Any]) -> None:
    verdict = cleanroom.verify_case(case, cleanroom_keys(), key_file()["scene_keys"])
    assert (verdict.valid, verdict.reason) == (case["expected"]["valid"], case["expected"]["reason"]), case[
        "notes"
    ]
    assert verdict.reason == _reference(case)


def test_cleanroom_records_replay_ids_in_once_scenes() -> None:
    by_name = {c["name"]: c for c in vector_list()}
    seen: set[bytes] = set()
    transit = cleanroom.load_scene_keys(key_file()["scene_keys"], "transit")
    health = cleanroom.load_scene_keys(key_file()["scene_keys"], "health")
    for name in ("scene-transit-server", "scene-transit-device"):
        case = by_name[name]
        first = cleanroom.verify(
            case["code"], case["now"], cleanroom_keys(), scene="transit", scene_keys=transit, seen=seen
        )
        again = cleanroom.verify(
            case["code"], case["now"], cleanroom_keys(), scene="transit", scene_keys=transit, seen=seen
        )
        assert (first.reason, again.reason) == ("ok", "replayed")
        assert (first.valid, again.valid) == (True, True)  # genuine both times, let through once
    checkpoint = by_name["scene-health-red"]
    for _ in range(2):
        verdict = cleanroom.verify(
            checkpoint["code"],
            checkpoint["now"],
            cleanroom_keys(),
            scene="health",
            scene_keys=health,
            seen=seen,
        )
        assert verdict.reason == "ok"


def test_cleanroom_agrees_with_every_vector_and_decoded_field() -> None:
    """Section 12 as a vendor reads it: every verdict, and every decoded field (masks and clear flags included)."""
    assert cleanroom.check_vectors(key_file(), list(vector_list())) == []


def test_cleanroom_replay_store_keeps_an_id_while_its_code_can_pass() -> None:
    """Section 7: a server code's id until `now >= issued_at + lifetime + skew`, a device code's until
    `now > shown_at + 30 + skew`; after that the store may forget it, because step 5 refuses the code."""
    by_name = {c["name"]: c for c in vector_list()}
    transit = cleanroom.load_scene_keys(key_file()["scene_keys"], "transit")
    store = cleanroom.ReplayStore()
    for name in ("scene-transit-server", "scene-transit-device"):
        case = by_name[name]
        for reason in ("ok", "replayed"):
            verdict = cleanroom.verify(
                case["code"], case["now"], cleanroom_keys(), scene="transit", scene_keys=transit, seen=store
            )
            assert verdict.reason == reason
    server, device = (
        cleanroom.parse(by_name[n]["code"]) for n in ("scene-transit-server", "scene-transit-device")
    )
    assert store.until == {
        server.replay_id: server.issued_at + server.lifetime + 5 - 1,
        device.replay_id: device.shown_at + 30 + 5,
    }
    store.record(b"later", 0, device.shown_at + 30 + 5 + 1)  # the device code can no longer pass
    assert set(store.until) == {server.replay_id, b"later"}
    store.record(b"later", 0, server.issued_at + server.lifetime + 5)  # nor the server code
    assert set(store.until) == {b"later"}


def _deny_document(payload: dict[str, Any], jwk: dict[str, str], typ: str = "tzt-deny+json") -> str:
    """A deny-list JWS (section 8.1) signed with a test key of keys.json."""

    def b64url(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64url(json.dumps({"alg": "ES256", "kid": jwk["kid"], "typ": typ}).encode())
    body = b64url(json.dumps(payload).encode())
    private = ec.derive_private_key(int.from_bytes(_b64url(jwk["d"]), "big"), ec.SECP256R1())
    r, s = decode_dss_signature(private.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _id_list(*hex_ids: str) -> str:
    return base64.b64encode(b"".join(bytes.fromhex(i) for i in sorted(hex_ids))).decode()


def test_cleanroom_applies_deny_documents_as_the_spec_says() -> None:
    """Full snapshot replaces, delta removes then adds; refused and left unchanged: a delta from another version, an
    older snapshot (a replayed answer), an untrusted kid, a changed payload, another typ."""
    keys = cleanroom_keys()
    first, second = key_file()["jwks"]["keys"]
    none = {"add": "", "remove": ""}
    full = {
        "version": 10, "since": 0, "full": True, "issued_at": 1_767_225_600,
        "credential": {"add": _id_list("57db77bf34ceade0"), "remove": ""},
        "account": {"add": _id_list("36b6018bbd1ceef3"), "remove": ""},
        "debtor": none,
    }  # fmt: skip
    deny = {"credential": set(), "account": set(), "debtor": set()}
    assert cleanroom.apply_deny_document(deny, 0, _deny_document(full, first), keys) == 10
    delta = {
        "version": 12, "since": 10, "full": False, "issued_at": 1_767_225_660,
        "credential": {"add": _id_list("0000000000000001"), "remove": ""},
        "account": {"add": "", "remove": _id_list("36b6018bbd1ceef3")},
        "debtor": {"add": _id_list("36b6018bbd1ceef3"), "remove": ""},
    }  # fmt: skip
    assert cleanroom.apply_deny_document(deny, 10, _deny_document(delta, second), keys) == 12
    after = {
        "credential": {bytes.fromhex("57db77bf34ceade0"), bytes.fromhex("0000000000000001")},
        "account": set(),
        "debtor": {bytes.fromhex("36b6018bbd1ceef3")},
    }
    assert deny == after
    untrusted = key_file()["untrusted"]["keys"][0]
    body = _deny_document(dict(full, version=20), first).split(".")
    changed = base64.urlsafe_b64encode(json.dumps(dict(full, version=21)).encode()).rstrip(b"=").decode()
    for refused in (
        _deny_document(delta, first),  # since 10, but 12 is held
        _deny_document(full, first),  # version 10 < 12: an old answer replayed
        _deny_document(dict(full, version=30), untrusted),
        f"{body[0]}.{changed}.{body[2]}",
        _deny_document(dict(full, version=30), first, typ="JWT"),
        _deny_document({k: v for k, v in dict(full, version=30).items() if k != "debtor"}, first),
    ):
        with pytest.raises(cleanroom.DenyDocumentRefused):
            cleanroom.apply_deny_document(deny, 12, refused, keys)
        assert deny == after


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from([c for c in vector_list() if c["expected"]["valid"]]),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
    shift=st.integers(min_value=-120, max_value=120),
)
def test_verifiers_agree_on_mutated_codes(case: dict[str, Any], index: int, mask: int, shift: int) -> None:
    """Any one changed byte and any clock: the reference check and the clean-room verifier give the same reason."""
    payload = bytearray(b45decode(case["code"][len(PREFIX) :]))
    payload[index % len(payload)] ^= mask
    text = PREFIX + b45encode(bytes(payload))
    now = case["now"] + shift
    scene = case.get("scene")
    ours = reference_verdict(text, now, case["skew"], scene)
    theirs = cleanroom.verify(
        text,
        now,
        cleanroom_keys(),
        skew=case["skew"],
        scene=scene,
        scene_keys=cleanroom.load_scene_keys(key_file()["scene_keys"], scene) if scene else None,
    )
    assert ours == theirs.reason
    assert ours != "ok"


# -- (c) Base45 and decoding properties -----------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_base45_round_trip(data: bytes) -> None:
    text = b45encode(data)
    assert b45decode(text) == data
    assert len(text) == len(data) // 2 * 3 + len(data) % 2 * 2
    assert set(text) <= set(ALPHABET)
    assert cleanroom.base45_encode(data) == text
    assert cleanroom.base45_decode(text) == data


def test_base45_rfc9285_examples() -> None:
    for raw, text in ((b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"ietf!", "QED8WEX0"), (b"", "")):
        assert b45encode(raw) == text and b45decode(text) == raw
    for bad in ("GGW", "A", "ABCD", "a00", "::"):
        with pytest.raises(ValueError):
            b45decode(bad)


def _structured_payload() -> st.SearchStrategy[bytes]:
    header = st.sampled_from([0x21, 0x22, 0x23, 0x20, 0x24, 0x11, 0x31, 0x01, 0xFF])
    length = st.sampled_from([SERVER_CODE_LEN - 1, SERVER_CODE_LEN, DEVICE_CODE_LEN, DEVICE_CODE_LEN + 1])
    return st.tuples(header, length).flatmap(
        lambda t: st.binary(min_size=t[1] - 1, max_size=t[1] - 1).map(lambda body: bytes([t[0]]) + body)
    )


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=ALPHABET),
        st.text(alphabet=ALPHABET + "abc\n\r\t#", min_size=130, max_size=310),
        st.binary(max_size=250).map(b45encode),
        _structured_payload().map(b45encode),
    )
)
def test_decode_raises_only_format_error(tail: str) -> None:
    text = PREFIX + tail
    try:
        code = decode(text)
    except FormatError:
        pass
    else:
        assert isinstance(code, ServerCode | DeviceCode)
    assert issubclass(FormatError, ValueError)
    # the clean-room verifier never raises either
    verdict = cleanroom.verify(text, 1_767_225_600, cleanroom_keys(), scene="transit", seen=set())
    assert verdict.reason in REASONS


@given(st.text())
def test_decode_refuses_anything_without_the_prefix(text: str) -> None:
    if not text.startswith(PREFIX):
        with pytest.raises(FormatError):
            decode(text)


@pytest.mark.parametrize("prefix", ["TZ1:", "TZ0:", "TZ3:", "TZ10:", "TZ02:"])
def test_other_version_prefixes_are_unsupported_not_malformed(prefix: str) -> None:
    """A gate can tell "update the app / show a fresh code" from "not a Taizhou Tong code"."""
    with pytest.raises(UnsupportedVersion):
        decode(prefix + "ABC")
    assert cleanroom.verify(prefix + "ABC", 1_767_225_600, cleanroom_keys()).reason == "unsupported-version"
    for other in ("TZ:ABC", "TZA:ABC", "tz1:ABC", "TZ2ABC"):
        assert cleanroom.verify(other, 1_767_225_600, cleanroom_keys()).reason == "malformed"


# -- (d) QR sizes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "chars", "max_version"),
    [
        ("server-personal-valid", 148, 6),
        ("server-enterprise-valid", 148, 6),
        ("device-valid", 306, 10),
    ],
)
def test_qr_version_at_level_m(name: str, chars: int, max_version: int) -> None:
    code = next(c["code"] for c in vector_list() if c["name"] == name)
    assert len(code) == chars
    qr = segno.make(code, error="m", boost_error=False, micro=False)
    assert qr.mode == "alphanumeric"
    assert qr.error == "M"
    assert qr.version <= max_version
    assert qr.version == max_version  # the spec's table states the exact version
    assert segno.make(code, error="m", micro=False).version == qr.version  # boosting never grows the symbol


def test_every_well_formed_vector_fits_its_version() -> None:
    for case in vector_list():
        try:
            code = decode(case["code"])
        except FormatError:
            continue
        limit = 10 if isinstance(code, DeviceCode) else 6
        assert segno.make(case["code"], error="m", micro=False).version <= limit, case["name"]


# -- (e) flags ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", range(64))
def test_flags_round_trip(value: int) -> None:
    flags = Flags.from_byte(value)
    assert flags.to_byte() == value
    assert (flags.health, flags.may_ride, flags.insured, flags.standing) == (
        value & 3,
        bool(value & 4),
        bool(value & 8),
        (value >> 4) & 3,
    )


@pytest.mark.parametrize("value", range(64, 256))
def test_flags_with_reserved_bits_are_refused(value: int) -> None:
    with pytest.raises(ValueError):
        Flags.from_byte(value)


@pytest.mark.parametrize("value", [0x40, 0x80, 0xC0, 0xFF])
def test_codes_with_reserved_flag_bits_do_not_decode(value: int) -> None:
    valid = next(c for c in vector_list() if c["name"] == "server-personal-valid")
    payload = bytearray(b45decode(valid["code"][len(PREFIX) :]))
    payload[31] = value
    with pytest.raises(FormatError):
        decode(PREFIX + b45encode(bytes(payload)))
    device = next(c for c in vector_list() if c["name"] == "device-valid")
    payload = bytearray(b45decode(device["code"][len(PREFIX) :]))
    payload[33] = value
    with pytest.raises(FormatError):
        decode(PREFIX + b45encode(bytes(payload)))


def test_device_replay_id_layout() -> None:
    case = next(c for c in vector_list() if c["name"] == "device-valid")
    code = decode(case["code"])
    assert isinstance(code, DeviceCode)
    assert code.code_id == code.credential_id + struct.pack(">IH", code.shown_at, code.counter)
    assert len(code.code_id) == 14
    assert code.code_id.hex() == case["decoded"]["replay_id"]
