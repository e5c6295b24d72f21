"""Test vectors for docs/code-format.md: `python -m code_service.verifier.vectors docs/test-vectors`.

Writes `keys.json` (test keys only: private scalars, scene keys and the test seal key included) and `vectors.json`
(a list of cases). Every key, holder, id and time is derived from fixed seeds and one fixed instant, so a re-run
yields the same cases; ECDSA signatures are randomised, so the signature bytes (and therefore the code texts) differ
between runs. The files in docs/test-vectors are generated once and committed; tests read the committed files.

Codes that the platform would never issue (lifetime 0, reserved flag bits, a device key that is not a point, a
credential longer than a day, a version-1 code) are packed by hand here and signed with the real test keys, so that
only the rule under test fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.base45 import b45decode, b45encode
from code_service.verifier.format import (
    DEVICE_CODE_LEN,
    PREFIX,
    SCENE_BITS,
    SCENES,
    SERVER_CODE_LEN,
    TYPE_DEVICE,
    TYPE_ENTERPRISE,
    TYPE_PERSONAL,
    TYPE_TICKET,
    VERSION,
    DeviceCode,
    Flags,
    Health,
    ServerCode,
    Standing,
    TicketCode,
    clear_flags,
    compressed_point,
    decode,
    encode_credential,
    encode_device_code,
    encode_server_code,
    encode_ticket_code,
    full_mask,
    kid_for,
    scene_mask,
    seal_holder,
    sign_raw,
)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, the verifier's clock in every case
SKEW = 5  # seconds of clock tolerance every case assumes
DEVICE_WINDOW = 30
# Reasons a genuine, in-date code can get (`valid` true); only "ok" lets the holder through.
GENUINE = (
    "ok",
    "online-only",
    "no-ticket",
    "wrong-entrance",
    "already-admitted",
    "no-entitlement",
    "no-scene-key",
    "replayed",
    "denied-credential",
    "denied-account",
    "denied-debt",
)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

KEY_SEEDS = {
    "platform-1": b"tzt-test-platform-1",
    "platform-2": b"tzt-test-platform-2",
    "untrusted-1": b"tzt-test-untrusted-1",
    "device-1": b"tzt-test-device-1",
    "device-2": b"tzt-test-device-2",
}


# Scene-key epochs of the vectors: epoch-1 and epoch-2 are in keys.json; epoch-3 is not (a verifier that has
# not refreshed since it appeared).
EPOCHS = ("epoch-1", "epoch-2")
EPOCH_WINDOWS = {"epoch-1": (NOW - 7 * 86_400, NOW + 86_400), "epoch-2": (NOW - 86_400, NOW + 8 * 86_400)}
SEAL_KEY = hashlib.sha256(b"tzt-test-seal-key").digest()  # the platform's; verifiers never have it


def epoch_id(label: str) -> bytes:
    return hashlib.sha256(b"tzt-test-epoch:" + label.encode()).digest()[:4]


def scene_key(scene: str, epoch_label: str) -> bytes:
    return hashlib.sha256(f"tzt-test-scene-key:{scene}:{epoch_label}".encode()).digest()


def epoch_keys(epoch_label: str) -> dict[str, bytes]:
    return {scene: scene_key(scene, epoch_label) for scene in SCENES}


def scene_keys_document() -> dict[str, Any]:
    """The test scene keys, in the shape of GET /api/v1/gates/scene-keys for a verifier allowed every scene."""
    return {
        "issued_at": NOW,
        "epochs": [
            {
                "epoch": epoch_id(label).hex(),
                "not_before": EPOCH_WINDOWS[label][0],
                "not_after": EPOCH_WINDOWS[label][1],
                "keys": {scene: _b64url(key) for scene, key in epoch_keys(label).items()},
            }
            for label in EPOCHS
        ],
    }


# The event scene's fixtures: one occasion, its tickets, the device credentials its attendee list names.
EVENT_OCCASION = uuid.UUID(bytes=hashlib.sha256(b"tzt-test-occasion-1").digest()[:16])
EVENT_TICKETS = {
    label: uuid.UUID(bytes=hashlib.sha256(f"tzt-test-ticket:{label}".encode()).digest()[:16])
    for label in ("ticket-1", "ticket-2", "printed-1", "printed-2")
}


def _event_credentials() -> dict[str, bytes]:
    return {
        label: ident(label) for label in ("credential-event-1", "credential-event-2", "credential-event-3")
    }


def attendee_list_document() -> dict[str, Any]:
    """The verified payload of the event cases' attendee list (docs/code-format.md 7.1)."""
    cred = _event_credentials()
    return {
        "occasion": str(EVENT_OCCASION),
        "issued_at": NOW - 300,
        "refresh_within": 300,
        "tickets": [
            {
                "ticket": str(EVENT_TICKETS["ticket-1"]),
                "entrances": ["东门", "北门"],
                "section": "A区",
                "seat": "3排12座",
                "credentials": [cred["credential-event-1"].hex(), cred["credential-event-3"].hex()],
            },
            {
                "ticket": str(EVENT_TICKETS["ticket-2"]),
                "entrances": [],
                "section": "B区",
                "seat": "1排1座",
                "credentials": [cred["credential-event-2"].hex()],
            },
            {
                "ticket": str(EVENT_TICKETS["printed-1"]),
                "entrances": ["南门"],
                "section": "C区",
                "seat": "5排8座",
                "credentials": [],
            },
        ],
    }


def attendee_list_jws(key: ec.EllipticCurvePrivateKey) -> str:
    """attendee_list_document() signed as GET /api/v1/gates/attendees signs it."""
    header = _b64url(
        json.dumps(
            {"alg": "ES256", "kid": kid_for(key.public_key()).hex(), "typ": "tzt-attendees+json"}
        ).encode()
    )
    payload = _b64url(
        json.dumps(attendee_list_document(), separators=(",", ":"), ensure_ascii=False).encode()
    )
    return f"{header}.{payload}." + _b64url(sign_raw(key, f"{header}.{payload}".encode()))


def _ticket_payload(
    key: ec.EllipticCurvePrivateKey, ticket: uuid.UUID, not_before: int, not_after: int
) -> bytes:
    """A printed ticket packed by hand (its window unchecked), signed."""
    signed = struct.pack(
        ">B4s16s16sII",
        (VERSION << 4) | TYPE_TICKET,
        kid_for(key.public_key()),
        EVENT_OCCASION.bytes,
        ticket.bytes,
        not_before,
        not_after,
    )
    return signed + sign_raw(key, signed)


def derive_key(seed: bytes) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(seed).digest(), "big") % P256_ORDER
    return ec.derive_private_key(scalar, ec.SECP256R1())


def ident(label: str) -> bytes:
    """A fixed 8-byte id (subject, code id, credential id) from a label."""
    return hashlib.sha256(b"tzt-test-id:" + label.encode()).digest()[:8]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(key: ec.EllipticCurvePrivateKey, *, private: bool) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    out = {
        "kty": "EC",
        "crv": "P-256",
        "kid": kid_for(key.public_key()).hex(),
        "alg": "ES256",
        "use": "sig",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    if private:
        out["d"] = _b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    return out


# -- hand packing (lets a case break exactly one rule) -------------------------------------------------------


def server_payload(
    key: ec.EllipticCurvePrivateKey,
    *,
    header: int = (VERSION << 4) | TYPE_PERSONAL,
    kid: bytes | None = None,
    epoch: bytes | None = None,
    holder: bytes,
    code_id: bytes,
    issued_at: int,
    lifetime: int = 60,
    flags: int,
) -> bytes:
    """`flags` is the byte as carried (already masked)."""
    signed = struct.pack(
        ">B4s4s8s8sIHB",
        header,
        kid if kid is not None else kid_for(key.public_key()),
        epoch if epoch is not None else epoch_id("epoch-2"),
        code_id,
        seal_holder(SEAL_KEY, code_id, holder),
        issued_at,
        lifetime,
        flags,
    )
    return signed + sign_raw(key, signed)


def credential(
    key: ec.EllipticCurvePrivateKey,
    *,
    kid: bytes | None = None,
    credential_id: bytes,
    holder: bytes,
    not_before: int,
    not_after: int,
    flags: int,
    device_key: bytes,
) -> bytes:
    """`flags` is the byte as carried (already masked)."""
    signed = struct.pack(
        ">B4s4s8s8sIIB33s",
        (VERSION << 4) | TYPE_DEVICE,
        kid if kid is not None else kid_for(key.public_key()),
        epoch_id("epoch-2"),
        credential_id,
        seal_holder(SEAL_KEY, credential_id, holder),
        not_before,
        not_after,
        flags,
        device_key,
    )
    return signed + sign_raw(key, signed)


def device_payload(device_key: ec.EllipticCurvePrivateKey, cred: bytes, shown_at: int, counter: int) -> bytes:
    signed = cred + struct.pack(">IH", shown_at, counter)
    return signed + sign_raw(device_key, signed)


def text(payload: bytes) -> str:
    return PREFIX + b45encode(payload)


def flip(payload: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(payload)
    out[index] ^= mask
    return bytes(out)


def high_s(payload: bytes) -> bytes:
    """The same signature with s replaced by n - s: equally valid ECDSA, a different byte string."""
    r, s = payload[-64:-32], int.from_bytes(payload[-32:], "big")
    return payload[:-64] + r + (P256_ORDER - s).to_bytes(32, "big")


def not_a_point() -> bytes:
    """A compressed encoding (prefix 02) whose x has no y on P-256."""
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    x = 1
    while pow((x**3 - 3 * x + b) % p, (p - 1) // 2, p) == 1:
        x += 1
    return b"\x02" + x.to_bytes(32, "big")


# -- the description of a valid code, for implementers to compare their parsing with ---------------------------


def _flags(value: Flags) -> dict[str, Any]:
    return {
        "byte": value.to_byte(),
        "health": value.health.name.lower(),
        "may_ride": value.may_ride,
        "insured": value.insured,
        "standing": value.standing.name.lower(),
    }


def _epoch_label(epoch: bytes) -> str | None:
    return next((label for label in EPOCHS if epoch_id(label) == epoch), None)


def describe(code: str) -> dict[str, Any]:
    """Every field as parsed, and the flags: as carried (`masked`), each scene's mask bits under its test key of
    the code's epoch (`masks`), and the whole byte in the clear (`clear`), which only the platform (holding every
    scene key) ever sees."""
    parsed = decode(code)
    if isinstance(parsed, TicketCode):
        return {
            "type": parsed.type,
            "kid": parsed.kid.hex(),
            "occasion_id": str(uuid.UUID(bytes=parsed.occasion_id)),
            "ticket_id": str(uuid.UUID(bytes=parsed.ticket_id)),
            "not_before": parsed.not_before,
            "not_after": parsed.not_after,
        }
    label = _epoch_label(parsed.epoch)
    flags: dict[str, Any] = {"masked": parsed.masked_flags}
    if label is not None:
        keys = epoch_keys(label)
        flags["masks"] = {scene: scene_mask(keys[scene], parsed.nonce, scene) for scene in SCENES}
        flags["clear"] = _flags(clear_flags(parsed, keys))
    if isinstance(parsed, ServerCode):
        return {
            "type": parsed.type,
            "kid": parsed.kid.hex(),
            "epoch": parsed.epoch.hex(),
            "code_id": parsed.code_id.hex(),
            "holder": parsed.holder.hex(),
            "issued_at": parsed.issued_at,
            "lifetime": parsed.lifetime,
            "flags": flags,
            "replay_id": parsed.code_id.hex(),
        }
    assert isinstance(parsed, DeviceCode)
    return {
        "type": parsed.type,
        "kid": parsed.kid.hex(),
        "epoch": parsed.epoch.hex(),
        "credential_id": parsed.credential_id.hex(),
        "holder": parsed.holder.hex(),
        "not_before": parsed.not_before,
        "not_after": parsed.not_after,
        "flags": flags,
        "device_key": parsed.device_key.hex(),
        "shown_at": parsed.shown_at,
        "counter": parsed.counter,
        "replay_id": parsed.code_id.hex(),
    }


# -- the cases ----------------------------------------------------------------------------------------------


def build_all() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    keys = {name: derive_key(seed) for name, seed in KEY_SEEDS.items()}
    p1, p2, rogue, d1, d2 = (
        keys[n] for n in ("platform-1", "platform-2", "untrusted-1", "device-1", "device-2")
    )
    d1_point = compressed_point(d1.public_key())

    devices: list[dict[str, str]] = []
    for name in ("device-1", "device-2"):
        device_jwk = {"name": name, **jwk(keys[name], private=True)}
        del device_jwk["alg"], device_jwk["use"]
        device_jwk["compressed"] = compressed_point(keys[name].public_key()).hex()
        devices.append(device_jwk)
    keys_doc: dict[str, Any] = {
        "description": "TEST KEYS ONLY, published so that anyone can regenerate and check the vectors. A real "
        "JWKS never carries `d`. `jwks` is the trusted key set a verifier loads (as from GET "
        "/.well-known/jwks.json); `untrusted` signs the unknown-key cases and must NOT be loaded; "
        "`devices` are phone keys (compressed = the 33-byte SEC1 point bound in credentials); `scene_keys` "
        "holds the scene keys of epochs epoch-1 and epoch-2 in the shape of GET /api/v1/gates/scene-keys (a "
        "verifier of one scene loads only that scene's keys); `platform_seal_key` seals the holder field and is "
        "the platform's alone: a verifier never has it and needs it for nothing.",
        "seeds": {name: seed.decode() for name, seed in KEY_SEEDS.items()},
        "derivation": "d = int.from_bytes(SHA-256(seed), 'big') mod n (P-256 group order)",
        "jwks": {"keys": [jwk(p1, private=True), jwk(p2, private=True)]},
        "untrusted": {"keys": [jwk(rogue, private=True)]},
        "devices": devices,
        "scene_keys": scene_keys_document(),
        "scene_key_derivation": "key = SHA-256('tzt-test-scene-key:' scene ':' epoch label); epoch id = "
        "SHA-256('tzt-test-epoch:' epoch label)[0:4]",
        "platform_seal_key": _b64url(SEAL_KEY),
        "attendee_list_jws": attendee_list_jws(p1),
    }

    cases: list[dict[str, Any]] = []
    # The attendee list every event case's gate holds (the verified payload of GET /api/v1/gates/attendees; its
    # signed form is keys.json's `attendee_list_jws`).
    attendee_list = attendee_list_document()

    def case(
        name: str,
        code: str,
        reason: str,
        notes: str,
        *,
        scene: str | None = None,
        seen: Sequence[bytes] = (),
        now: int = NOW,
        deny: dict[str, Sequence[bytes]] | None = None,
        without_scene_keys: bool = False,
        entrance: str | None = None,
        admitted: Sequence[uuid.UUID] = (),
        admission: dict[str, str] | None = None,
    ) -> None:
        entry: dict[str, Any] = {"name": name, "code": code, "now": now, "skew": SKEW}
        if scene is not None:
            entry["scene"] = scene
        if entrance is not None:
            entry["entrance"] = entrance
            entry["attendees"] = attendee_list
        if admitted:
            entry["admitted"] = [str(t) for t in admitted]
        if seen:
            entry["seen"] = [s.hex() for s in seen]
        if deny:
            entry["deny"] = {kind: [i.hex() for i in ids] for kind, ids in deny.items()}
        if without_scene_keys:
            entry["without_scene_keys"] = True
        valid = reason in GENUINE
        entry["expected"] = {"valid": valid, "reason": reason}
        if admission is not None:
            entry["expected"]["admission"] = admission
        entry["notes"] = notes
        if valid:
            entry["decoded"] = describe(code)
            if scene in SCENE_BITS and reason in ("ok", "replayed", "no-entitlement"):
                clear = entry["decoded"].get("flags", {}).get("clear")
                if clear is not None:
                    entry["decoded"]["scene_bits"] = clear["byte"] & SCENE_BITS[scene]
        cases.append(entry)

    rider = Flags(Health.GREEN, may_ride=True, insured=True)
    no_ride = Flags(Health.GREEN, may_ride=False, insured=True)
    uninsured = Flags(Health.YELLOW, may_ride=True, insured=False)
    red = Flags(Health.RED, may_ride=False, insured=True)
    colourless = Flags(Health.UNKNOWN, may_ride=True, insured=True)
    firm = Flags(standing=Standing.GOOD)
    abnormal_firm = Flags(standing=Standing.ABNORMAL)
    s1, e1 = ident("holder-1"), ident("enterprise-1")  # the platform's holder ids, sealed in every code
    c1 = ident("code-1")

    def masked(flags: Flags, nonce: bytes, epoch: str = "epoch-2") -> int:
        return flags.to_byte() ^ full_mask(epoch_keys(epoch), nonce)

    def server(
        issued_at: int = NOW - 10,
        lifetime: int = 60,
        flags: Flags = rider,
        *,
        key: Any = p1,
        code_type: int = TYPE_PERSONAL,
        subject: bytes = s1,
        code_id: bytes = c1,
        epoch: str = "epoch-2",
    ) -> str:
        return encode_server_code(
            key,
            kid_for(key.public_key()),
            code_type,
            code_id,
            seal_holder(SEAL_KEY, code_id, subject),
            issued_at,
            lifetime,
            flags,
            epoch_id(epoch),
            epoch_keys(epoch),
        )

    valid_server = server()
    valid_payload = server_payload(p1, holder=s1, code_id=c1, issued_at=NOW - 10, flags=masked(rider, c1))

    # server codes: valid ones
    case(
        "server-personal-valid",
        valid_server,
        "ok",
        "Personal server code (type 1) signed by platform-1, issued 10 s ago for 60 s.",
    )
    case(
        "server-personal-second-key",
        server(key=p2, code_id=ident("code-2")),
        "ok",
        "Signed by platform-2: a verifier must pick the key by kid from all keys in the JWKS (rotation).",
    )
    case(
        "server-enterprise-valid",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-3")),
        "ok",
        "Enterprise server code (type 2), standing good.",
    )
    case(
        "server-personal-high-s",
        text(high_s(valid_payload)),
        "ok",
        "Signature with s > n/2. ECDSA accepts both s and n - s; verifiers must not demand low-s.",
    )
    case(
        "server-late-boundary",
        server(issued_at=NOW - 64, code_id=ident("code-4")),
        "ok",
        "issued_at + lifetime + skew = now + 1 > now: still valid.",
    )
    case(
        "server-early-boundary",
        server(issued_at=NOW + 5, code_id=ident("code-5")),
        "ok",
        "issued_at - skew = now: valid (the issuer's clock is ahead by the whole skew).",
    )
    case(
        "server-lifetime-1",
        server(issued_at=NOW, lifetime=1, code_id=ident("code-6")),
        "ok",
        "The shortest lifetime (1 s).",
    )

    # server codes: time
    case(
        "server-expired",
        server(issued_at=NOW - 70, code_id=ident("code-7")),
        "expired",
        "Issued 70 s ago for 60 s; 60 + skew 5 < 70.",
    )
    case(
        "server-expired-boundary",
        server(issued_at=NOW - 65, code_id=ident("code-8")),
        "expired",
        "now = issued_at + lifetime + skew exactly: the end of the window is exclusive.",
    )
    case(
        "server-not-yet-valid",
        server(issued_at=NOW + 6, code_id=ident("code-9")),
        "not-yet-valid",
        "issued_at - skew = now + 1 > now.",
    )

    # server codes: signatures and keys
    case(
        "server-tampered-holder",
        text(flip(valid_payload, 20)),
        "bad-signature",
        "One bit of the sealed holder (byte 20) flipped after signing.",
    )
    case(
        "server-tampered-flags",
        text(flip(valid_payload, 31, 0x04)),
        "bad-signature",
        "The masked may-ride bit flipped after signing (flags stay well-formed): the masked byte is signed.",
    )
    case(
        "server-tampered-signature",
        text(flip(valid_payload, 60)),
        "bad-signature",
        "One bit of the signature's s half flipped.",
    )
    case(
        "server-zero-signature",
        text(valid_payload[:32] + bytes(64)),
        "bad-signature",
        "r = s = 0, which no valid signature has.",
    )
    case(
        "server-kid-swapped",
        text(valid_payload[:1] + kid_for(p2.public_key()) + valid_payload[5:]),
        "bad-signature",
        "Signed by platform-1 with its kid replaced by platform-2's (also trusted): the kid is signed, and "
        "platform-2's key does not verify it.",
    )
    case(
        "server-unknown-key",
        server(key=rogue, code_id=ident("code-10")),
        "unknown-key",
        "Correctly signed by untrusted-1, whose kid is not in the JWKS.",
    )
    case(
        "server-kid-zero",
        text(
            server_payload(
                p1,
                kid=bytes(4),
                holder=s1,
                code_id=ident("code-11"),
                issued_at=NOW - 10,
                flags=masked(rider, ident("code-11")),
            )
        ),
        "unknown-key",
        "kid 00000000 (signed by platform-1 over that kid): no key has it.",
    )

    # server codes: malformed
    def server_packed(**kw: Any) -> str:
        base: dict[str, Any] = {
            "holder": s1,
            "code_id": ident("code-12"),
            "issued_at": NOW - 10,
            "flags": masked(rider, ident("code-12")),
        }
        base.update(kw)
        return text(server_payload(p1, **base))

    case("server-lifetime-0", server_packed(lifetime=0), "malformed", "lifetime 0 is outside 1..60 (signed).")
    case(
        "server-lifetime-61",
        server_packed(lifetime=61),
        "malformed",
        "lifetime 61 is outside 1..60 (signed).",
    )
    case(
        "server-reserved-flag-6",
        server_packed(flags=0x40 | masked(rider, ident("code-12"))),
        "malformed",
        "Flags bit 6 is reserved (signed).",
    )
    case(
        "server-reserved-flag-7", server_packed(flags=0x80), "malformed", "Flags bit 7 is reserved (signed)."
    )
    case(
        "server-header-version-1",
        server_packed(header=0x11),
        "malformed",
        "Header 0x11 (version 1) inside a TZ2: text (signed): the header's version must be 2.",
    )
    case(
        "server-header-version-3", server_packed(header=0x31), "malformed", "Header 0x31: version 3 (signed)."
    )
    case("server-type-0", server_packed(header=0x20), "malformed", "Header 0x20: type 0 does not exist.")
    case("server-type-4", server_packed(header=0x24), "malformed", "Header 0x24: type 4 does not exist.")
    case("server-short", text(valid_payload[: SERVER_CODE_LEN - 1]), "malformed", "95 bytes: one short.")
    case("server-long", text(valid_payload + b"\x00"), "malformed", "97 bytes: one too many.")
    case(
        "server-header-device-length",
        text(b"\x23" + valid_payload[1:]),
        "malformed",
        "Header says device code (0x23) but the payload is 96 bytes.",
    )

    # text form: malformed
    body = valid_server[len(PREFIX) :]
    v1_signed = struct.pack(">B4s8s8sIHB", 0x11, kid_for(p1.public_key()), s1, c1, NOW - 10, 60, 13)
    v1_code = "TZ1:" + b45encode(v1_signed + sign_raw(p1, v1_signed))
    case("prefix-missing", body, "malformed", "No `TZ2:` prefix.")
    case("prefix-lowercase", "tz2:" + body, "malformed", "Prefix in lower case: the prefix is exact.")
    case("prefix-other", "HC1:" + body, "malformed", "Another format's prefix.")
    case(
        "prefix-version-1",
        v1_code,
        "unsupported-version",
        "A genuine version-1 code (retired: its subject and flags were readable by anyone). The gate refuses it "
        "and tells the holder to update the app or show a fresh code.",
    )
    case(
        "prefix-version-1-garbage",
        "TZ1:" + body,
        "unsupported-version",
        "`TZ1:` followed by anything: the prefix alone decides; the rest is not read.",
    )
    case(
        "prefix-version-3",
        "TZ3:" + body,
        "unsupported-version",
        "A later version this verifier does not know: refused, with a hint to update the verifier or the app.",
    )
    case(
        "prefix-version-10",
        "TZ10:" + body,
        "unsupported-version",
        "Any `TZ`, one or more digits and `:` other than `TZ2:` is another version.",
    )
    case("prefix-no-digits", "TZ:" + body, "malformed", "`TZ:` has no version digits: not a version prefix.")
    case("empty", PREFIX, "malformed", "Prefix and nothing else.")
    case(
        "base45-bad-character",
        PREFIX + "a" + body[1:],
        "malformed",
        "Lower-case `a` is not in the Base45 alphabet.",
    )
    case(
        "base45-bad-length",
        valid_server + "0",
        "malformed",
        "145 characters after the prefix: a length of 3k + 1 is never Base45.",
    )
    case(
        "base45-out-of-range",
        PREFIX + "GGW" + body[3:],
        "malformed",
        "`GGW` decodes to 16 + 16*45 + 32*2025 = 65536 > 65535.",
    )
    case(
        "base45-trailing-newline",
        valid_server + "\n",
        "malformed",
        "A scanner's line ending left on the text: not Base45. Configure scanners without a suffix.",
    )

    # device codes
    cred_id = ident("credential-1")

    def cred(
        not_before: int = NOW - 3600,
        not_after: int = NOW + 82_800,
        flags: Flags = rider,
        key: Any = p1,
        cid: bytes = cred_id,
        device: bytes = d1_point,
    ) -> bytes:
        return encode_credential(
            key,
            kid_for(key.public_key()),
            cid,
            seal_holder(SEAL_KEY, cid, s1),
            not_before,
            not_after,
            flags,
            device,
            epoch_id("epoch-2"),
            epoch_keys("epoch-2"),
        )

    good_cred = cred()

    def device(
        shown_at: int = NOW - 2, counter: int = 7, credential_bytes: bytes = good_cred, key: Any = d1
    ) -> str:
        return encode_device_code(key, credential_bytes, shown_at, counter)

    valid_device = device()
    valid_device_payload = device_payload(d1, good_cred, NOW - 2, 7)

    case(
        "device-valid",
        valid_device,
        "ok",
        "Device code: credential from platform-1 valid for 24 h, made by device-1 2 s ago, counter 7.",
    )
    case(
        "device-credential-second-key",
        device(credential_bytes=cred(key=p2, cid=ident("credential-2"))),
        "ok",
        "Credential signed by platform-2.",
    )
    case(
        "device-high-s",
        text(high_s(valid_device_payload)),
        "ok",
        "Device signature with s replaced by n - s: valid.",
    )
    case(
        "device-shown-old-boundary",
        device(shown_at=NOW - 35),
        "ok",
        "shown_at = now - 30 - skew exactly: valid.",
    )
    case(
        "device-shown-future-boundary",
        device(shown_at=NOW + 5),
        "ok",
        "shown_at = now + skew exactly (the phone's clock is ahead): valid.",
    )
    case(
        "device-credential-end-boundary",
        device(credential_bytes=cred(NOW - 80_000, NOW - 5)),
        "ok",
        "not_after + skew = now: the credential's end is inclusive.",
    )
    case(
        "device-credential-start-boundary",
        device(shown_at=NOW, credential_bytes=cred(NOW + 5, NOW + 3600)),
        "ok",
        "not_before - skew = now: valid.",
    )
    case("device-counter-wrapped", device(counter=0), "ok", "Counter 0 (it wraps at 65536).")

    case(
        "device-shown-too-old",
        device(shown_at=NOW - 36),
        "expired",
        "shown_at = now - 36 < now - 30 - skew: a screenshot replayed after the window.",
    )
    case(
        "device-shown-in-future",
        device(shown_at=NOW + 6),
        "not-yet-valid",
        "shown_at = now + 6 > now + skew.",
    )
    case(
        "device-credential-expired",
        device(credential_bytes=cred(NOW - 80_000, NOW - 6)),
        "expired",
        "Credential not_after = now - 6: not_after + skew < now. shown_at itself is fresh.",
    )
    case(
        "device-credential-not-yet-valid",
        device(credential_bytes=cred(NOW + 6, NOW + 3600)),
        "not-yet-valid",
        "Credential not_before = now + 6. shown_at itself is fresh.",
    )

    case(
        "device-tampered-credential",
        text(flip(valid_device_payload, 18)),
        "bad-signature",
        "A sealed-holder bit (byte 18) flipped: the platform's credential signature fails.",
    )
    case(
        "device-tampered-credential-signature",
        text(flip(valid_device_payload, 100)),
        "bad-signature",
        "A bit of cred_sig flipped.",
    )
    case(
        "device-tampered-counter",
        text(flip(valid_device_payload, 136)),
        "bad-device-signature",
        "The counter's low bit flipped: the credential is intact, the device signature fails.",
    )
    case(
        "device-tampered-shown-at",
        text(flip(valid_device_payload, 134)),
        "bad-device-signature",
        "shown_at moved by 1 s after signing.",
    )
    case(
        "device-tampered-device-signature",
        text(flip(valid_device_payload, 180)),
        "bad-device-signature",
        "A bit of device_sig flipped.",
    )
    case(
        "device-wrong-device",
        device(key=d2),
        "bad-device-signature",
        "The credential binds device-1 but device-2 signed: a credential copied to another phone.",
    )
    case(
        "device-unknown-key",
        device(credential_bytes=cred(key=rogue, cid=ident("credential-3"))),
        "unknown-key",
        "Credential signed by untrusted-1.",
    )

    def cred_packed(**kw: Any) -> bytes:
        base: dict[str, Any] = {
            "credential_id": ident("credential-4"),
            "holder": s1,
            "not_before": NOW - 3600,
            "not_after": NOW + 3600,
            "flags": masked(rider, ident("credential-4")),
            "device_key": d1_point,
        }
        base.update(kw)
        return credential(p1, **base)

    case(
        "device-credential-too-long",
        text(device_payload(d1, cred_packed(not_after=NOW - 3600 + 86_401), NOW - 2, 7)),
        "malformed",
        "not_after - not_before = 86401 > 86400 (both signatures valid).",
    )
    case(
        "device-credential-inverted",
        text(device_payload(d1, cred_packed(not_after=NOW - 3601), NOW - 2, 7)),
        "malformed",
        "not_after < not_before (both signatures valid).",
    )
    case(
        "device-credential-empty-window",
        text(device_payload(d1, cred_packed(not_after=NOW - 3600), NOW - 2, 7)),
        "malformed",
        "not_after = not_before: the window must be at least 1 s (both signatures valid).",
    )
    case(
        "device-reserved-flag-7",
        text(device_payload(d1, cred_packed(flags=0x80 | masked(rider, ident("credential-4"))), NOW - 2, 7)),
        "malformed",
        "Flags bit 7 is reserved (signed).",
    )
    case(
        "device-key-not-a-point",
        text(device_payload(d1, cred_packed(device_key=not_a_point()), NOW - 2, 7)),
        "malformed",
        "device_key has prefix 02 but its x is not on P-256 (credential signed).",
    )
    case(
        "device-key-uncompressed-prefix",
        text(device_payload(d1, cred_packed(device_key=b"\x04" + d1_point[1:]), NOW - 2, 7)),
        "malformed",
        "device_key starts with 04 (the uncompressed marker) in a 33-byte field.",
    )
    case("device-short", text(valid_device_payload[: DEVICE_CODE_LEN - 1]), "malformed", "200 bytes.")
    case("device-long", text(valid_device_payload + b"\x00"), "malformed", "202 bytes.")
    case(
        "device-header-server-type",
        text(b"\x21" + valid_device_payload[1:]),
        "malformed",
        "Header says personal server code (0x21) but the payload is 201 bytes.",
    )

    # scenes: what each scene requires
    case(
        "scene-transit-server",
        valid_server,
        "ok",
        "Transit accepts a personal server code with may-ride.",
        scene="transit",
    )
    case(
        "scene-transit-device",
        valid_device,
        "ok",
        "Transit accepts a device code with may-ride.",
        scene="transit",
    )
    case(
        "scene-transit-no-ride",
        server(flags=no_ride, code_id=ident("code-13")),
        "no-entitlement",
        "Valid personal code without may-ride at a gate.",
        scene="transit",
    )
    case(
        "scene-transit-device-no-ride",
        device(credential_bytes=cred(flags=no_ride, cid=ident("credential-5"))),
        "no-entitlement",
        "Valid device code without may-ride at a gate.",
        scene="transit",
    )
    case(
        "scene-transit-enterprise",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-14")),
        "no-entitlement",
        "An enterprise code does not ride.",
        scene="transit",
    )
    case("scene-medical-insured", valid_server, "ok", "Insured personal code at a hospital.", scene="medical")
    case(
        "scene-medical-uninsured",
        server(flags=uninsured, code_id=ident("code-15")),
        "no-entitlement",
        "Personal code without the insured bit at a hospital.",
        scene="medical",
    )
    case(
        "scene-health-red",
        server(flags=red, code_id=ident("code-16")),
        "ok",
        "A checkpoint gets an ok verdict and the colour (red); acting on the colour is the checkpoint's job.",
        scene="health",
    )
    case("scene-health-device", valid_device, "ok", "A device code at a checkpoint (green).", scene="health")
    case(
        "scene-health-unknown",
        server(flags=colourless, code_id=ident("code-19")),
        "no-entitlement",
        "Health colour 0 (unknown): nothing for a checkpoint to read.",
        scene="health",
    )
    case(
        "scene-health-enterprise",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-17")),
        "no-entitlement",
        "An enterprise code carries no health colour.",
        scene="health",
    )
    case(
        "scene-enterprise-ok",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-18")),
        "ok",
        "An inspector reads an enterprise code (standing good).",
        scene="enterprise",
    )
    case(
        "scene-enterprise-abnormal",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=abnormal_firm, code_id=ident("code-20")),
        "ok",
        "Standing abnormal is reported, not refused: the inspector acts on it.",
        scene="enterprise",
    )
    case(
        "scene-enterprise-unknown-standing",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=Flags(), code_id=ident("code-21")),
        "no-entitlement",
        "Enterprise code with standing 0 (unknown).",
        scene="enterprise",
    )
    case(
        "scene-enterprise-personal",
        valid_server,
        "no-entitlement",
        "A personal code is not an enterprise identity.",
        scene="enterprise",
    )
    case(
        "scene-enterprise-device",
        valid_device,
        "no-entitlement",
        "A device code is personal, never an enterprise identity.",
        scene="enterprise",
    )

    # scene keys: a verifier reads its scene's bits only with the key of the code's epoch
    for scene_name, sample in (
        ("transit", valid_server),
        ("health", valid_server),
        ("medical", valid_device),
        ("enterprise", server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-22"))),
    ):
        case(
            f"scene-{scene_name}-without-key",
            sample,
            "no-scene-key",
            f"A genuine code that would be ok at a {scene_name} verifier which holds no {scene_name} key (it "
            "refreshes its scene keys, or answers online). The gate does not open.",
            scene=scene_name,
            without_scene_keys=True,
        )
    case(
        "scene-transit-unknown-epoch",
        server(code_id=ident("code-23"), epoch="epoch-3"),
        "no-scene-key",
        "The code's epoch (epoch-3) is not among the epochs in keys.json: a verifier that missed a scene-key "
        "refresh. Nothing about the flags can be read.",
        scene="transit",
    )
    case(
        "scene-transit-older-epoch",
        server(code_id=ident("code-24"), epoch="epoch-1"),
        "ok",
        "Masked with epoch-1's keys, still held: each code names its epoch, and a verifier picks the key by it.",
        scene="transit",
    )
    case(
        "scene-transit-unknown-epoch-no-scene",
        server(code_id=ident("code-25"), epoch="epoch-3"),
        "ok",
        "Without a scene (steps 1-6) the epoch is not needed: the code is genuine and in date.",
    )
    transit_keys = epoch_keys("epoch-2")
    looks_set = next(
        ident(f"mask-{i}")
        for i in range(1000)
        if scene_mask(transit_keys["transit"], ident(f"mask-{i}"), "transit")
    )
    looks_clear = next(
        ident(f"mask-{i}")
        for i in range(1000)
        if not scene_mask(transit_keys["transit"], ident(f"mask-{i}"), "transit")
    )
    case(
        "mask-bit-set-but-no-ride",
        server(flags=no_ride, code_id=looks_set),
        "no-entitlement",
        "The carried bit 2 is 1 (the transit mask bit for this code_id is 1) but may ride is 0 in the clear: "
        "reading the carried byte without the key says nothing.",
        scene="transit",
    )
    case(
        "mask-bit-clear-but-may-ride",
        server(flags=rider, code_id=looks_clear),
        "ok",
        "The carried bit 2 is 0 (mask bit 0) and may ride is 1: the verifier must unmask, not read the byte.",
        scene="transit",
    )
    case(
        "mask-device-uses-credential-id",
        device(credential_bytes=cred(flags=no_ride, cid=ident("credential-6"))),
        "no-entitlement",
        "A device code's mask nonce is its credential_id (bytes 9..16), not its replay id.",
        scene="transit",
    )

    # deny list: device credentials only, each with its kind
    denied_cred = ident("credential-7")
    denied_device = device(credential_bytes=cred(cid=denied_cred))
    case(
        "deny-credential",
        denied_device,
        "denied-credential",
        "The credential_id is a `credential` entry (a lost phone): refused in every scene.",
        scene="health",
        deny={"credential": [denied_cred]},
    )
    case(
        "deny-account",
        denied_device,
        "denied-account",
        "The credential_id is an `account` entry (the holder's account is blocked).",
        scene="medical",
        deny={"account": [denied_cred]},
    )
    case(
        "deny-debtor-transit",
        denied_device,
        "denied-debt",
        "The credential_id is a `debtor` entry: refused at a gate.",
        scene="transit",
        deny={"debtor": [denied_cred]},
    )
    case(
        "deny-debtor-health",
        denied_device,
        "ok",
        "A `debtor` entry counts in transit only.",
        scene="health",
        deny={"debtor": [denied_cred]},
    )
    case(
        "deny-order",
        denied_device,
        "denied-credential",
        "On all three lists: credential is checked first, then account, then debtor.",
        scene="transit",
        deny={"credential": [denied_cred], "account": [denied_cred], "debtor": [denied_cred]},
    )
    case(
        "deny-before-scene",
        denied_device,
        "denied-account",
        "The deny list (step 6) comes before the scene key (step 7): no key needed to refuse a denied code.",
        scene="transit",
        deny={"account": [denied_cred]},
        without_scene_keys=True,
    )
    case(
        "deny-no-scene",
        denied_device,
        "denied-credential",
        "Without a scene, steps 1-6 still include the deny list.",
        deny={"credential": [denied_cred]},
    )
    case(
        "deny-server-code-unaffected",
        valid_server,
        "ok",
        "Server codes are never on the deny list (they live 60 s and are issued with the live status): an id "
        "equal to its code_id means nothing.",
        scene="transit",
        deny={"credential": [c1], "account": [c1], "debtor": [c1]},
    )

    # replay
    valid_device_id = cred_id + struct.pack(">IH", NOW - 2, 7)
    case(
        "replay-server",
        valid_server,
        "replayed",
        "This code's code_id was already accepted at this gate.",
        scene="transit",
        seen=[c1],
    )
    case(
        "replay-server-other-id",
        valid_server,
        "ok",
        "Another code id was accepted; this one was not.",
        scene="transit",
        seen=[ident("code-99")],
    )
    case(
        "replay-device",
        valid_device,
        "replayed",
        "Replay id = credential_id || shown_at (4 bytes) || counter (2 bytes), already accepted.",
        scene="transit",
        seen=[valid_device_id],
    )
    case(
        "replay-device-other-counter",
        valid_device,
        "ok",
        "Same credential and second, counter 6 seen, this code has counter 7: a different code.",
        scene="transit",
        seen=[cred_id + struct.pack(">IH", NOW - 2, 6)],
    )
    case(
        "replay-device-credential-only",
        valid_device,
        "ok",
        "Only the bare credential_id was seen: replay ids are 14 bytes for device codes, never 8.",
        scene="transit",
        seen=[cred_id],
    )
    case(
        "replay-medical",
        valid_server,
        "replayed",
        "Medical codes are single use: the hospital's verifier refuses a code id it has accepted (and the "
        "platform refuses it online).",
        scene="medical",
        seen=[c1],
    )
    case(
        "replay-health-repeat",
        valid_server,
        "ok",
        "A checkpoint may read the same code twice: replay is enforced for transit and medical only.",
        scene="health",
        seen=[c1],
    )

    # the event scene (7.1): no flag bit, no scene key; the ticket comes from the gate's attendee list. These and
    # the printed tickets go to event-vectors.json (a verifier without the event scene passes vectors.json alone).
    event_start = len(cases)
    ticket_1, ticket_2, printed_1, printed_2 = (
        EVENT_TICKETS[n] for n in ("ticket-1", "ticket-2", "printed-1", "printed-2")
    )
    EVENT_CREDENTIALS = _event_credentials()
    listed_device = device(credential_bytes=cred(cid=EVENT_CREDENTIALS["credential-event-1"]))
    any_door_device = device(credential_bytes=cred(cid=EVENT_CREDENTIALS["credential-event-2"]))
    seat_1 = {"ticket": str(ticket_1), "section": "A区", "seat": "3排12座"}
    seat_2 = {"ticket": str(ticket_2), "section": "B区", "seat": "1排1座"}
    case(
        "event-device-ok",
        listed_device,
        "ok",
        "The credential is listed for ticket-1 (entrances 东门, 北门): admitted; the gate shows section and seat.",
        scene="event",
        entrance="东门",
        admission=seat_1,
    )
    case(
        "event-device-already-admitted",
        listed_device,
        "already-admitted",
        "ticket-1 was admitted at this gate before: once per ticket, whichever code shows it.",
        scene="event",
        entrance="北门",
        admitted=[ticket_1],
        admission=seat_1,
    )
    case(
        "event-device-wrong-entrance",
        listed_device,
        "wrong-entrance",
        "ticket-1 admits at 东门 and 北门, not 西门.",
        scene="event",
        entrance="西门",
        admission=seat_1,
    )
    case(
        "event-device-any-entrance",
        any_door_device,
        "ok",
        "ticket-2 lists no entrances: any entrance admits.",
        scene="event",
        entrance="西门",
        admission=seat_2,
    )
    case(
        "event-device-not-listed",
        valid_device,
        "no-ticket",
        "A genuine device code whose credential the list does not name.",
        scene="event",
        entrance="东门",
    )
    case(
        "event-device-no-flags-needed",
        device(credential_bytes=cred(flags=Flags(), cid=EVENT_CREDENTIALS["credential-event-1"])),
        "ok",
        "The credential carries no entitlement at all: the event scene reads no flag bit.",
        scene="event",
        entrance="东门",
        admission=seat_1,
    )
    case(
        "event-device-without-scene-keys",
        listed_device,
        "ok",
        "The event scene has no scene key: a gate holding none admits as well.",
        scene="event",
        entrance="东门",
        without_scene_keys=True,
        admission=seat_1,
    )
    case(
        "event-device-denied",
        listed_device,
        "denied-credential",
        "The deny list (step 6) comes first: a lost phone's credential is refused even when listed.",
        scene="event",
        entrance="东门",
        deny={"credential": [EVENT_CREDENTIALS["credential-event-1"]]},
    )
    case(
        "event-server-online-only",
        valid_server,
        "online-only",
        "A server code's holder is sealed: no list entry can match it. The gate asks online, or the attendee "
        "shows their device code.",
        scene="event",
        entrance="东门",
    )
    case(
        "event-enterprise",
        server(code_type=TYPE_ENTERPRISE, subject=e1, flags=firm, code_id=ident("code-26")),
        "no-entitlement",
        "An enterprise code holds no ticket.",
        scene="event",
        entrance="东门",
    )

    def printed(
        ticket: uuid.UUID = printed_1,
        occasion: uuid.UUID = EVENT_OCCASION,
        not_before: int = NOW - 86_400,
        not_after: int = NOW + 7_200,
        key: Any = p1,
    ) -> str:
        return encode_ticket_code(
            key, kid_for(key.public_key()), occasion.bytes, ticket.bytes, not_before, not_after
        )

    printed_seat = {"ticket": str(printed_1), "section": "C区", "seat": "5排8座"}
    case(
        "printed-valid",
        printed(),
        "ok",
        "A printed ticket (type 4, 109 bytes) without a scene: genuine and in date.",
    )
    case(
        "event-printed-ok",
        printed(),
        "ok",
        "A printed ticket of the gate's occasion, listed: admitted.",
        scene="event",
        entrance="南门",
        admission=printed_seat,
    )
    case(
        "event-printed-already-admitted",
        printed(),
        "already-admitted",
        "The same paper twice (or a photocopy): once per ticket.",
        scene="event",
        entrance="南门",
        admitted=[printed_1],
        admission=printed_seat,
    )
    case(
        "event-printed-wrong-entrance",
        printed(),
        "wrong-entrance",
        "printed-1 admits at 南门 only.",
        scene="event",
        entrance="东门",
        admission=printed_seat,
    )
    case(
        "event-printed-not-listed",
        printed(ticket=printed_2),
        "no-ticket",
        "A genuine printed ticket the list no longer names (returned, refunded): refused.",
        scene="event",
        entrance="南门",
    )
    case(
        "event-printed-other-occasion",
        printed(occasion=uuid.UUID(int=EVENT_OCCASION.int ^ 1)),
        "no-ticket",
        "A printed ticket of another occasion, though its ticket id is listed here.",
        scene="event",
        entrance="南门",
    )
    case(
        "event-printed-end-boundary",
        printed(not_after=NOW - 5),
        "ok",
        "not_after + skew = now: the end is inclusive.",
        scene="event",
        entrance="南门",
        admission=printed_seat,
    )
    case(
        "event-printed-expired",
        printed(not_after=NOW - 6),
        "expired",
        "The occasion ended (not_after + skew < now).",
        scene="event",
        entrance="南门",
    )
    case(
        "event-printed-not-yet-valid",
        printed(not_before=NOW + 6),
        "not-yet-valid",
        "not_before - skew > now.",
        scene="event",
        entrance="南门",
    )
    valid_printed = printed()[len(PREFIX) :]
    printed_payload = b45decode(valid_printed)
    case(
        "event-printed-tampered-ticket",
        text(flip(printed_payload, 30)),
        "bad-signature",
        "A bit of the ticket id flipped: the platform signature covers bytes 0..44.",
        scene="event",
        entrance="南门",
    )
    case(
        "event-printed-unknown-key",
        printed(key=rogue),
        "unknown-key",
        "Signed by untrusted-1.",
        scene="event",
        entrance="南门",
    )
    case(
        "printed-transit",
        printed(),
        "no-entitlement",
        "Only the event scene accepts a printed ticket.",
        scene="transit",
    )
    case(
        "printed-window-inverted",
        text(_ticket_payload(p1, printed_1, NOW + 10, NOW - 10)),
        "malformed",
        "not_after before not_before (signed).",
    )
    case(
        "printed-window-too-long",
        text(_ticket_payload(p1, printed_1, NOW - 86_400, NOW - 86_400 + 400 * 86_400 + 1)),
        "malformed",
        "A window longer than 400 days (signed).",
    )
    case("printed-short", text(printed_payload[:-1]), "malformed", "108 bytes.")
    case(
        "printed-header-server-length",
        text(b"\x24" + valid_payload[1:]),
        "malformed",
        "Header 0x24 (printed ticket) on a 96-byte payload.",
    )

    return keys_doc, cases[:event_start], cases[event_start:]


def build() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """keys.json and vectors.json (the cases every verifier passes)."""
    keys_doc, cases, _ = build_all()
    return keys_doc, cases


def build_event() -> list[dict[str, Any]]:
    """event-vectors.json: the event scene and printed tickets (docs/code-format.md 4.5, 7.1)."""
    return build_all()[2]


def write(directory: Path) -> tuple[Path, Path]:
    keys_doc, cases, event_cases = build_all()
    names = [c["name"] for c in (*cases, *event_cases)]
    if len(names) != len(set(names)):
        raise RuntimeError("duplicate case names")
    directory.mkdir(parents=True, exist_ok=True)
    keys_path, vectors_path = directory / "keys.json", directory / "vectors.json"
    keys_path.write_text(json.dumps(keys_doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    vectors_path.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (directory / "event-vectors.json").write_text(
        json.dumps(event_cases, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return keys_path, vectors_path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m code_service.verifier.vectors OUTPUT_DIRECTORY", file=sys.stderr)
        return 2
    keys_path, vectors_path = write(Path(args[0]))
    print(f"wrote {keys_path} and {vectors_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
