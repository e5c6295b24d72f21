"""A verifier written from docs/code-format.md alone, as a gate vendor would write it.

It deliberately shares no code with code_service: its own Base45, its own layout parsing, its own JWKS loading. It
imports only the standard library and `cryptography`. If it and the reference codec disagree on a test vector,
either the document or the codec is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from collections.abc import MutableSet
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# -- section 3.1: Base45 --------------------------------------------------------------------------------------

B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
B45_VALUE = {ch: i for i, ch in enumerate(B45)}


class Malformed(Exception):
    pass


class OtherVersion(Exception):
    pass


def base45_decode(text: str) -> bytes:
    if len(text) % 3 == 1:
        raise Malformed("base45 length")
    values = []
    for ch in text:
        if ch not in B45_VALUE:
            raise Malformed("base45 character")
        values.append(B45_VALUE[ch])
    out = bytearray()
    full = len(values) - len(values) % 3
    for i in range(0, full, 3):
        n = values[i] + values[i + 1] * 45 + values[i + 2] * 2025
        if n > 65535:
            raise Malformed("base45 triple")
        out += bytes((n >> 8, n & 0xFF))
    if len(values) % 3 == 2:
        n = values[-2] + values[-1] * 45
        if n > 255:
            raise Malformed("base45 pair")
        out.append(n)
    return bytes(out)


def base45_encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - len(data) % 2, 2):
        n = data[i] * 256 + data[i + 1]
        out.append(B45[n % 45] + B45[(n // 45) % 45] + B45[n // 2025])
    if len(data) % 2:
        out.append(B45[data[-1] % 45] + B45[data[-1] // 45])
    return "".join(out)


# -- section 5: keys and signatures ---------------------------------------------------------------------------

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kid_of(key: ec.EllipticCurvePublicKey) -> str:
    numbers = key.public_numbers()
    compressed = bytes([2 + (numbers.y & 1)]) + numbers.x.to_bytes(32, "big")
    return hashlib.sha256(compressed).digest()[:4].hex()


def load_jwks(jwks: dict[str, Any]) -> dict[str, ec.EllipticCurvePublicKey]:
    """Section 5.1: EC P-256 keys only, and only those whose kid matches their point."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        try:
            x = _b64url_decode(jwk["x"])
            y = _b64url_decode(jwk["y"])
            if len(x) != 32 or len(y) != 32:
                continue
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except (KeyError, ValueError):
            continue
        if jwk.get("kid") != _kid_of(key):
            continue
        keys[jwk["kid"]] = key
    return keys


def es256_verify(key: ec.EllipticCurvePublicKey, sig: bytes, message: bytes) -> bool:
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (1 <= r < P256_N and 1 <= s < P256_N):
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# -- section 4: payloads --------------------------------------------------------------------------------------


@dataclass
class Parsed:
    type: int
    kid: bytes
    epoch: bytes
    nonce: bytes  # code_id or credential_id: the mask nonce (4.3)
    holder: bytes  # sealed, opaque (4.4)
    flags: int  # as carried, masked
    replay_id: bytes
    platform_signed: bytes
    platform_sig: bytes
    # server codes
    issued_at: int = 0
    lifetime: int = 0
    # device codes
    credential_id: bytes = b""
    not_before: int = 0
    not_after: int = 0
    device_key: ec.EllipticCurvePublicKey | None = None
    shown_at: int = 0
    counter: int = 0
    device_signed: bytes = b""
    device_sig: bytes = b""


_VERSION_PREFIX = re.compile(r"TZ[0-9]+:")


def parse(text: str) -> Parsed:
    """Section 6 step 1."""
    if text[:4] != "TZ2:":
        if _VERSION_PREFIX.match(text):
            raise OtherVersion(text[:5])
        raise Malformed("prefix")
    payload = base45_decode(text[4:])
    if not payload:
        raise Malformed("empty")
    header = payload[0]
    version, kind = header >> 4, header & 0x0F
    if version != 2:
        raise Malformed("version")
    if kind in (1, 2):
        if len(payload) != 96:
            raise Malformed("server length")
        kid, epoch, code_id, holder = payload[1:5], payload[5:9], payload[9:17], payload[17:25]
        issued_at, lifetime, flags = struct.unpack(">IHB", payload[25:32])
        if flags & 0xC0:
            raise Malformed("reserved flags")
        if not 1 <= lifetime <= 60:
            raise Malformed("lifetime")
        return Parsed(
            kind,
            kid,
            epoch,
            code_id,
            holder,
            flags,
            replay_id=code_id,
            platform_signed=payload[0:32],
            platform_sig=payload[32:96],
            issued_at=issued_at,
            lifetime=lifetime,
        )
    if kind == 3:
        if len(payload) != 201:
            raise Malformed("device length")
        kid, epoch, credential_id, holder = payload[1:5], payload[5:9], payload[9:17], payload[17:25]
        not_before, not_after, flags = struct.unpack(">IIB", payload[25:34])
        device_key_bytes = payload[34:67]
        shown_at, counter = struct.unpack(">IH", payload[131:137])
        if flags & 0xC0:
            raise Malformed("reserved flags")
        if not 0 < not_after - not_before <= 86400:
            raise Malformed("credential window")
        if device_key_bytes[0] not in (2, 3):
            raise Malformed("device key prefix")
        try:
            device_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), device_key_bytes)
        except ValueError:
            raise Malformed("device key point") from None
        return Parsed(
            3,
            kid,
            epoch,
            credential_id,
            holder,
            flags,
            replay_id=credential_id + payload[131:137],
            platform_signed=payload[0:67],
            platform_sig=payload[67:131],
            credential_id=credential_id,
            not_before=not_before,
            not_after=not_after,
            device_key=device_key,
            shown_at=shown_at,
            counter=counter,
            device_signed=payload[0:137],
            device_sig=payload[137:201],
        )
    raise Malformed("type")


# -- section 5.4: scene keys ----------------------------------------------------------------------------------


def load_scene_keys(document: dict[str, Any], scene: str) -> dict[bytes, tuple[bytes, int]]:
    """The keys of one scene by epoch id, with each epoch's not_after, from a GET /api/v1/gates/scene-keys answer."""
    keys: dict[bytes, tuple[bytes, int]] = {}
    for epoch in document.get("epochs", []):
        if scene in epoch.get("keys", {}):
            keys[bytes.fromhex(epoch["epoch"])] = (
                _b64url_decode(epoch["keys"][scene]),
                int(epoch["not_after"]),
            )
    return keys


# -- sections 6 and 7: the verdict ----------------------------------------------------------------------------

SCENES = {
    # section 7 -- scene: (accepted types, the scene's bits B_s (4.3), replay id accepted once)
    "transit": ((1, 3), 0x04, True),
    "health": ((1, 3), 0x03, False),
    "medical": ((1, 3), 0x08, True),
    "enterprise": ((2,), 0x30, False),
}


@dataclass
class Verdict:
    valid: bool  # genuine and in date (steps 1-5)
    reason: str  # "ok" is the only reason that lets the holder through
    code: Parsed | None = field(default=None, repr=False)
    scene_bits: int = 0  # the scene's field in the clear, once unmasked


def _refuse(reason: str, code: Parsed | None = None) -> Verdict:
    return Verdict(False, reason, code)


def verify(
    text: str,
    now: int,
    keys: dict[str, ec.EllipticCurvePublicKey],
    *,
    skew: int = 5,
    scene: str | None = None,
    scene_keys: dict[bytes, tuple[bytes, int]] | None = None,
    seen: MutableSet[bytes] | None = None,
    deny: dict[str, set[bytes]] | None = None,
) -> Verdict:
    # step 1
    try:
        code = parse(text)
    except OtherVersion:
        return _refuse("unsupported-version")
    except Malformed:
        return _refuse("malformed")

    # steps 2 and 3
    key = keys.get(code.kid.hex())
    if key is None:
        return _refuse("unknown-key", code)
    if not es256_verify(key, code.platform_sig, code.platform_signed):
        return _refuse("bad-signature", code)

    # steps 4 and 5
    if code.type == 3:
        assert code.device_key is not None
        if not es256_verify(code.device_key, code.device_sig, code.device_signed):
            return _refuse("bad-device-signature", code)
        if now < code.not_before - skew or code.shown_at > now + skew:
            return _refuse("not-yet-valid", code)
        if now > code.not_after + skew or code.shown_at < now - 30 - skew:
            return _refuse("expired", code)
    else:
        if now < code.issued_at - skew:
            return _refuse("not-yet-valid", code)
        if now >= code.issued_at + code.lifetime + skew:
            return _refuse("expired", code)

    # step 6 (section 8): device codes only, by credential id
    if deny is not None and code.type == 3:
        if code.credential_id in deny.get("credential", ()):
            return Verdict(True, "denied-credential", code)
        if code.credential_id in deny.get("account", ()):
            return Verdict(True, "denied-account", code)
        if scene == "transit" and code.credential_id in deny.get("debtor", ()):
            return Verdict(True, "denied-debt", code)

    # steps 7 and 8: the code is genuine from here on
    if scene is not None:
        types, bits, once = SCENES[scene]
        if code.type not in types:
            return Verdict(True, "no-entitlement", code)
        held = (scene_keys or {}).get(code.epoch)
        if held is None or now > held[1]:
            return Verdict(True, "no-scene-key", code)
        clear = (code.flags ^ hmac.new(held[0], code.nonce, hashlib.sha256).digest()[0]) & bits
        if not clear:
            return Verdict(True, "no-entitlement", code)
        if once and seen is not None:
            if code.replay_id in seen:
                return Verdict(True, "replayed", code, clear)
            seen.add(code.replay_id)
        return Verdict(True, "ok", code, clear)
    return Verdict(True, "ok", code)


def verify_case(
    case: dict[str, Any], keys: dict[str, ec.EllipticCurvePublicKey], scene_keys_document: dict[str, Any]
) -> Verdict:
    """Runs one entry of docs/test-vectors/vectors.json (section 12)."""
    seen: set[bytes] = {bytes.fromhex(h) for h in case.get("seen", ())}
    deny = {kind: {bytes.fromhex(h) for h in ids} for kind, ids in case.get("deny", {}).items()}
    scene = case.get("scene")
    scene_keys = (
        {} if case.get("without_scene_keys") or scene is None else load_scene_keys(scene_keys_document, scene)
    )
    return verify(
        case["code"],
        case["now"],
        keys,
        skew=case["skew"],
        scene=scene,
        scene_keys=scene_keys,
        seen=seen,
        deny=deny,
    )


def apply_deny_document(
    deny: dict[str, set[bytes]], held_version: int, jws: str, keys: dict[str, ec.EllipticCurvePublicKey]
) -> int:
    """Section 8.1: verify the compact JWS with a JWKS key, then replace (full) or apply (delta) the entries."""
    header_b64, payload_b64, sig_b64 = jws.split(".")
    header = json.loads(_b64url_decode(header_b64))
    key = keys.get(header["kid"]) if header.get("alg") == "ES256" else None
    if key is None or not es256_verify(key, _b64url_decode(sig_b64), f"{header_b64}.{payload_b64}".encode()):
        raise ValueError("deny list not signed by a platform key")
    body = json.loads(_b64url_decode(payload_b64))

    def ids(text: str) -> set[bytes]:
        raw = base64.b64decode(text)
        return {raw[i : i + 8] for i in range(0, len(raw), 8)}

    for kind in ("credential", "account", "debtor"):
        if body["full"]:
            deny[kind] = ids(body[kind]["add"])
        else:
            if body["since"] != held_version:
                raise ValueError("delta does not follow the held version")
            deny[kind] = (deny[kind] - ids(body[kind]["remove"])) | ids(body[kind]["add"])
    return int(body["version"])
