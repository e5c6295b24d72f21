"""A clean-room verifier of Taizhou Tong codes, version 2.

Written from ``docs/code-format.md`` and ``docs/test-vectors/`` alone, the way an independent gate vendor would,
to prove that the document is enough to build a gate. It imports nothing of the project: only the standard
library and the ``cryptography`` package (for P-256 ECDSA). Section numbers in comments are the document's.

What a gate needs, and this file has:

- ``load_jwks(document)``: the trusted platform keys of a JWKS by kid (5.1), unusable or mislabelled keys ignored;
- ``load_scene_keys(document, scene)``: one scene's keys per epoch from a scene-keys answer (5.4);
- ``apply_deny_document(deny, held_version, jws, keys)``: one signed deny-list document applied (8.1);
- ``ReplayStore`` (or any set): accepted replay ids (section 7);
- ``verify(text, now, keys, ...)``: the verdict of section 6, checks in the document's order;
- ``verify_case`` and ``check_vectors``: the test vectors run as section 12 says, ``decoded`` fields included;
- ``load_attendee_document`` and ``Attendees``: a venue gate's attendee list (7.1), and ``check_event_vectors``
  for ``event-vectors.json`` (the event scene and printed tickets, 4.5).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PREFIX = "TZ2:"
OTHER_VERSION = re.compile(r"TZ[0-9]+:")  # ASCII digits only (section 3)
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
BASE45_VALUE = {character: value for value, character in enumerate(BASE45_ALPHABET)}

P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

TYPE_PERSONAL, TYPE_ENTERPRISE, TYPE_DEVICE, TYPE_TICKET = 1, 2, 3, 4
PAYLOAD_LENGTH = {TYPE_PERSONAL: 96, TYPE_ENTERPRISE: 96, TYPE_DEVICE: 201, TYPE_TICKET: 109}
MAX_TICKET_SECONDS = 400 * 86400
EVENT = "event"
DEVICE_WINDOW = 30
MAX_CREDENTIAL_SECONDS = 86400
DEFAULT_SKEW = 5  # the test vectors' tolerance; a gate configures its own (at most 30)

SCENE_BITS = {"transit": 0x04, "health": 0x03, "medical": 0x08, "enterprise": 0x30}
SCENE_TYPES = {
    "transit": {TYPE_PERSONAL, TYPE_DEVICE},
    "health": {TYPE_PERSONAL, TYPE_DEVICE},
    "medical": {TYPE_PERSONAL, TYPE_DEVICE},
    "enterprise": {TYPE_ENTERPRISE},
}
SINGLE_USE_SCENES = {"transit", "medical"}
DENY_KINDS = ("credential", "account", "debtor")
GENUINE_REASONS = {
    "ok",
    "denied-credential",
    "denied-account",
    "denied-debt",
    "no-scene-key",
    "no-entitlement",
    "replayed",
    "online-only",
    "no-ticket",
    "wrong-entrance",
    "already-admitted",
}


class Malformed(ValueError):
    """Not a well-formed version-2 code."""


class UnsupportedVersion(ValueError):
    """A Taizhou Tong code of another version (``TZ1:``, ``TZ3:``, ``TZ10:`` ...)."""


class DenyDocumentRefused(ValueError):
    """A deny-list document that must not be applied; the list held stays as it was."""


@dataclass(frozen=True)
class Code:
    """A parsed payload (section 4). ``nonce`` is code_id (server code) or credential_id (device code)."""

    payload: bytes
    type: int
    kid: bytes
    epoch: bytes
    nonce: bytes
    holder: bytes
    flags: int  # as carried: masked
    issued_at: int = 0
    lifetime: int = 0
    not_before: int = 0
    not_after: int = 0
    device_key: bytes = b""
    shown_at: int = 0
    counter: int = 0
    occasion: bytes = b""  # a printed ticket's occasion id (16 bytes); its ticket id is in `nonce`

    @property
    def credential_id(self) -> bytes:
        return self.nonce

    @property
    def code_id(self) -> bytes:
        return self.nonce

    @property
    def replay_id(self) -> bytes:
        if self.type == TYPE_TICKET:
            return self.nonce
        if self.type == TYPE_DEVICE:
            return self.payload[9:17] + self.payload[131:137]
        return self.payload[9:17]

    def last_valid_second(self, skew: int) -> int:
        """The last `now` at which this code passes step 5: its replay id is kept until then (section 7)."""
        if self.type == TYPE_DEVICE:
            return min(self.shown_at + DEVICE_WINDOW + skew, self.not_after + skew)
        return self.issued_at + self.lifetime + skew - 1


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    code: Code | None = None
    scene_bits: int | None = None  # the scene's field in the clear, when the scene step read it
    ticket: dict[str, str] | None = None  # event scene: the ticket, section and seat the gate may show


# -- Base45 (3.1) -------------------------------------------------------------------------------------------------


def base45_decode(text: str) -> bytes:
    if len(text) % 3 == 1:
        raise Malformed("Base45 length")
    try:
        values = [BASE45_VALUE[character] for character in text]
    except KeyError as error:
        raise Malformed("Base45 character") from error
    out = bytearray()
    for start in range(0, len(values), 3):
        chunk = values[start : start + 3]
        if len(chunk) == 3:
            number = chunk[0] + chunk[1] * 45 + chunk[2] * 2025
            if number > 0xFFFF:
                raise Malformed("Base45 triple above 65535")
            out += number.to_bytes(2, "big")
        else:
            number = chunk[0] + chunk[1] * 45
            if number > 0xFF:
                raise Malformed("Base45 pair above 255")
            out.append(number)
    return bytes(out)


def base45_encode(data: bytes) -> str:
    out = []
    for start in range(0, len(data) - 1, 2):
        number = data[start] * 256 + data[start + 1]
        out += [
            BASE45_ALPHABET[number % 45],
            BASE45_ALPHABET[number // 45 % 45],
            BASE45_ALPHABET[number // 2025],
        ]
    if len(data) % 2:
        out += [BASE45_ALPHABET[data[-1] % 45], BASE45_ALPHABET[data[-1] // 45]]
    return "".join(out)


# -- points, signatures, base64url (5.1-5.3) ----------------------------------------------------------------------


def is_compressed_point(data: bytes) -> bool:
    """SEC1 compressed P-256 point (5.2): first byte 02 or 03, x < p, x^3 - 3x + b a square modulo p."""
    if len(data) != 33 or data[0] not in (2, 3):
        return False
    x = int.from_bytes(data[1:], "big")
    if x >= P256_P:
        return False
    rhs = (pow(x, 3, P256_P) - 3 * x + P256_B) % P256_P
    root = pow(rhs, (P256_P + 1) // 4, P256_P)  # p = 3 (mod 4): this is the square root when there is one
    return root * root % P256_P == rhs


def verify_signature(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """ECDSA P-256 / SHA-256 as raw r || s (5.3): r and s in 1..n-1, high s accepted."""
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < P256_N and 1 <= s < P256_N):
        return False
    try:
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def b64url_decode(text: Any) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compute_kid(x: bytes, y: bytes) -> str:
    """hex(SHA-256((02 if y is even else 03) || x)[0:4]) (5.1)."""
    return hashlib.sha256((b"\x02" if y[-1] % 2 == 0 else b"\x03") + x).digest()[:4].hex()


def load_jwks(document: Any) -> dict[str, ec.EllipticCurvePublicKey]:
    """The usable keys of a JWKS by kid (8 lower-case hex digits). Ignored: a JWK that is not EC P-256, whose x or y
    is not 32 bytes of base64url, whose point is not on the curve, or whose kid is not the one its point gives."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for jwk in entries if isinstance(entries, list) else ():
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        try:
            x, y = b64url_decode(jwk.get("x")), b64url_decode(jwk.get("y"))
        except ValueError:
            continue
        if len(x) != 32 or len(y) != 32 or jwk.get("kid") != compute_kid(x, y):
            continue
        try:
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            keys[jwk["kid"]] = numbers.public_key()
        except ValueError:  # not on the curve
            continue
    return keys


# -- scene keys (4.3, 5.4) ----------------------------------------------------------------------------------------


def load_scene_keys(document: Any, scene: str) -> dict[bytes, tuple[bytes, int]]:
    """One scene's keys from a ``GET /api/v1/gates/scene-keys`` answer: epoch id -> (32-byte key, not_after). An
    epoch without a well-formed key of this scene (id not 8 hex digits, not_after not an integer, key not 32 bytes
    of base64url) is skipped; other scenes' keys are never kept."""
    held: dict[bytes, tuple[bytes, int]] = {}
    entries = document.get("epochs") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        epoch, not_after, keys = entry.get("epoch"), entry.get("not_after"), entry.get("keys")
        if (
            not isinstance(epoch, str)
            or not re.fullmatch(r"[0-9a-f]{8}", epoch)
            or type(not_after) is not int
        ):
            continue
        if not isinstance(keys, dict) or scene not in keys:
            continue
        try:
            key = b64url_decode(keys[scene])
        except ValueError:
            continue
        if len(key) == 32:
            held[bytes.fromhex(epoch)] = (key, not_after)
    return held


def scene_mask(scene: str, key: bytes, nonce: bytes) -> int:
    """mask_s = HMAC(K_s,epoch, nonce)[0] & B_s (4.3)."""
    return hmac.new(key, nonce, hashlib.sha256).digest()[0] & SCENE_BITS[scene]


# -- deny list (8) ------------------------------------------------------------------------------------------------


def empty_deny_list() -> dict[str, set[bytes]]:
    return {kind: set() for kind in DENY_KINDS}


def _deny_ids(encoded: Any) -> set[bytes]:
    if not isinstance(encoded, str):
        raise DenyDocumentRefused("ids are not a string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError as error:
        raise DenyDocumentRefused("ids are not base64") from error
    if len(raw) % 8:
        raise DenyDocumentRefused("ids are not a multiple of 8 bytes")
    return {raw[i : i + 8] for i in range(0, len(raw), 8)}


def apply_deny_document(
    deny: dict[str, set[bytes]], held_version: int, jws: str, keys: dict[str, ec.EllipticCurvePublicKey]
) -> int:
    """Apply one ``jws`` of ``GET /api/v1/gates/deny-list`` (8.1) to ``deny`` (kind -> set of 8-byte credential
    ids) held at ``held_version``; return the version now held. Raises DenyDocumentRefused, leaving ``deny`` as it
    was, for a bad header, an unknown kid, a failed signature, a bad payload, a delta whose ``since`` is not the
    version held (ask again with yours), or a full snapshot older than the version held (a replayed old answer)."""
    parts = jws.split(".") if isinstance(jws, str) else []
    if len(parts) != 3:
        raise DenyDocumentRefused("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as error:
        raise DenyDocumentRefused("not decodable") from error
    if not isinstance(header, dict) or header.get("alg") != "ES256" or header.get("typ") != "tzt-deny+json":
        raise DenyDocumentRefused("header")
    key = keys.get(header["kid"]) if isinstance(header.get("kid"), str) else None
    if key is None:
        raise DenyDocumentRefused("unknown kid")
    if not verify_signature(key, signature, f"{parts[0]}.{parts[1]}".encode("ascii")):
        raise DenyDocumentRefused("signature")
    if not isinstance(payload, dict):
        raise DenyDocumentRefused("payload")
    version, since, full = payload.get("version"), payload.get("since"), payload.get("full")
    if type(version) is not int or type(since) is not int or type(full) is not bool:
        raise DenyDocumentRefused("payload")
    changes = {}
    for kind in DENY_KINDS:
        entry = payload.get(kind)
        if not isinstance(entry, dict):
            raise DenyDocumentRefused(f"no {kind} member")
        changes[kind] = (_deny_ids(entry.get("add")), _deny_ids(entry.get("remove")))
    if full:
        if since != 0 or any(remove for _, remove in changes.values()):
            raise DenyDocumentRefused("a full snapshot with since or removals")
        if version < held_version:
            raise DenyDocumentRefused("a full snapshot older than the list held")
        for kind in DENY_KINDS:
            deny[kind] = set(changes[kind][0])
    else:
        if since != held_version:
            raise DenyDocumentRefused("a delta from another version: ask again with yours")
        for kind in DENY_KINDS:
            held = deny.setdefault(kind, set())
            held -= changes[kind][1]
            held |= changes[kind][0]
    return version


# -- replay store (6 step 8, 7) -----------------------------------------------------------------------------------


@dataclass
class ReplayStore:
    """Accepted replay ids, each kept until the last second its code can pass step 5. A plain ``set`` works as a
    store too (ids then never expire)."""

    until: dict[bytes, int] = field(default_factory=dict)

    def __contains__(self, replay_id: object) -> bool:
        return replay_id in self.until

    def record(self, replay_id: bytes, last_valid_second: int, now: int) -> None:
        for old in [i for i, last in self.until.items() if last < now]:
            del self.until[old]
        self.until[replay_id] = last_valid_second


# -- attendee lists (7.1) ----------------------------------------------------------------------------------------


@dataclass
class Attendees:
    """One occasion's list as a gate holds it, and the tickets this gate admitted (once per ticket)."""

    occasion: bytes = b""
    tickets: dict[bytes, tuple[set[str], str, str]] = field(
        default_factory=dict
    )  # id -> entrances, section, seat
    by_credential: dict[bytes, list[bytes]] = field(default_factory=dict)
    admitted: set[bytes] = field(default_factory=set)

    def admit(self, code: Code, candidates: list[bytes], entrance: str) -> Verdict:
        found = [t for t in candidates if t in self.tickets]
        if not found:
            return Verdict(True, "no-ticket", code)
        here = [t for t in found if not self.tickets[t][0] or entrance in self.tickets[t][0]]
        if not here:
            return Verdict(True, "wrong-entrance", code, ticket=self.shown(found[0]))
        fresh = [t for t in here if t not in self.admitted]
        if not fresh:
            return Verdict(True, "already-admitted", code, ticket=self.shown(here[0]))
        self.admitted.add(fresh[0])
        return Verdict(True, "ok", code, ticket=self.shown(fresh[0]))

    def shown(self, ticket: bytes) -> dict[str, str]:
        _, section, seat = self.tickets[ticket]
        hexed = ticket.hex()
        text = f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
        return {"ticket": text, "section": section, "seat": seat}


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_bytes(text: Any) -> bytes:
    if not isinstance(text, str) or not UUID_TEXT.fullmatch(text):
        raise ValueError("not a uuid in lower-case hyphenated form")
    return bytes.fromhex(text.replace("-", ""))


def load_attendees(payload: dict[str, Any]) -> Attendees:
    """The payload of a verified attendee-list document."""
    held = Attendees(occasion=_uuid_bytes(payload["occasion"]))
    for entry in payload["tickets"]:
        ticket = _uuid_bytes(entry["ticket"])
        held.tickets[ticket] = (
            set(entry.get("entrances", [])),
            entry.get("section", ""),
            entry.get("seat", ""),
        )
        for credential in entry.get("credentials", []):
            held.by_credential.setdefault(bytes.fromhex(credential), []).append(ticket)
    return held


def load_attendee_document(jws: str, keys: dict[str, ec.EllipticCurvePublicKey]) -> Attendees:
    """One ``jws`` of ``GET /api/v1/gates/attendees``: typ ``tzt-attendees+json``, signed as the deny list is."""
    parts = jws.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = json.loads(b64url_decode(parts[0]))
    key = keys.get(header.get("kid")) if isinstance(header, dict) else None
    if header.get("alg") != "ES256" or header.get("typ") != "tzt-attendees+json" or key is None:
        raise ValueError("header or key")
    if not verify_signature(key, b64url_decode(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii")):
        raise ValueError("signature")
    return load_attendees(json.loads(b64url_decode(parts[1])))


# -- parsing (3, 4; step 1) ---------------------------------------------------------------------------------------


def parse(text: str) -> Code:
    """Step 1: raises UnsupportedVersion for another version's prefix, Malformed for anything else wrong."""
    if not text.startswith(PREFIX):
        if OTHER_VERSION.match(text):
            raise UnsupportedVersion(text[: text.index(":") + 1])
        raise Malformed("prefix")
    payload = base45_decode(text[len(PREFIX) :])
    if not payload:
        raise Malformed("empty payload")
    version, kind = payload[0] >> 4, payload[0] & 0x0F
    if version != 2 or kind not in PAYLOAD_LENGTH:
        raise Malformed("header")
    if len(payload) != PAYLOAD_LENGTH[kind]:
        raise Malformed("length")
    if kind == TYPE_TICKET:  # 4.5: header, kid, occasion_id, ticket_id, not_before, not_after, signature
        ticket = Code(
            payload=payload,
            type=kind,
            kid=payload[1:5],
            epoch=b"",
            nonce=payload[21:37],
            holder=b"",
            flags=0,
            not_before=int.from_bytes(payload[37:41], "big"),
            not_after=int.from_bytes(payload[41:45], "big"),
            occasion=payload[5:21],
        )
        if not 0 < ticket.not_after - ticket.not_before <= MAX_TICKET_SECONDS:
            raise Malformed("ticket window")
        return ticket
    common: dict[str, Any] = {
        "payload": payload,
        "type": kind,
        "kid": payload[1:5],
        "epoch": payload[5:9],
        "nonce": payload[9:17],
        "holder": payload[17:25],
    }
    code: Code
    if kind != TYPE_DEVICE:
        code = Code(
            **common,
            issued_at=int.from_bytes(payload[25:29], "big"),
            lifetime=int.from_bytes(payload[29:31], "big"),
            flags=payload[31],
        )
    else:
        code = Code(
            **common,
            not_before=int.from_bytes(payload[25:29], "big"),
            not_after=int.from_bytes(payload[29:33], "big"),
            flags=payload[33],
            device_key=payload[34:67],
            shown_at=int.from_bytes(payload[131:135], "big"),
            counter=int.from_bytes(payload[135:137], "big"),
        )
    if code.flags & 0xC0:
        raise Malformed("reserved flag bits")
    if kind != TYPE_DEVICE and not 1 <= code.lifetime <= 60:
        raise Malformed("lifetime")
    if kind == TYPE_DEVICE:
        if not 0 < code.not_after - code.not_before <= MAX_CREDENTIAL_SECONDS:
            raise Malformed("credential window")
        if not is_compressed_point(code.device_key):
            raise Malformed("device key")
    return code


# -- the verdict (6) ----------------------------------------------------------------------------------------------


def verify(
    text: str,
    now: int,
    keys: dict[str, ec.EllipticCurvePublicKey],
    *,
    skew: int = DEFAULT_SKEW,
    scene: str | None = None,
    scene_keys: dict[bytes, tuple[bytes, int]] | None = None,
    seen: set[bytes] | ReplayStore | None = None,
    deny: dict[str, set[bytes]] | None = None,
    attendees: Attendees | None = None,
    entrance: str = "",
) -> Verdict:
    """The verdict of section 6 for the scanned ``text`` (never trimmed) at ``now``. ``scene_keys`` are this
    scene's keys (``load_scene_keys``); ``seen`` is the replay store, updated when a once-only scene accepts."""
    if scene is not None and scene not in SCENE_BITS and scene != EVENT:
        raise ValueError(f"unknown scene {scene!r}")
    # 1. parse
    try:
        code = parse(text)
    except UnsupportedVersion:
        return Verdict(False, "unsupported-version")
    except Malformed:
        return Verdict(False, "malformed")
    # 2. key
    platform_key = keys.get(code.kid.hex())
    if platform_key is None:
        return Verdict(False, "unknown-key", code)
    # 3. platform signature; 4. device signature
    payload = code.payload
    if (
        code.type == TYPE_TICKET
    ):  # a printed ticket: its signature, its window, then only the event scene (7.1)
        if not verify_signature(platform_key, payload[45:109], payload[:45]):
            return Verdict(False, "bad-signature", code)
        if now < code.not_before - skew:
            return Verdict(False, "not-yet-valid", code)
        if now > code.not_after + skew:
            return Verdict(False, "expired", code)
        if scene is None:
            return Verdict(True, "ok", code)
        if scene != EVENT:
            return Verdict(True, "no-entitlement", code)
        if attendees is None or attendees.occasion != code.occasion:
            return Verdict(True, "no-ticket", code)
        return attendees.admit(code, [code.nonce], entrance)
    if code.type == TYPE_DEVICE:
        if not verify_signature(platform_key, payload[67:131], payload[:67]):
            return Verdict(False, "bad-signature", code)
        device_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), code.device_key)
        if not verify_signature(device_key, payload[137:201], payload[:137]):
            return Verdict(False, "bad-device-signature", code)
    elif not verify_signature(platform_key, payload[32:96], payload[:32]):
        return Verdict(False, "bad-signature", code)
    # 5. time
    if code.type == TYPE_DEVICE:
        if now < code.not_before - skew or code.shown_at > now + skew:
            return Verdict(False, "not-yet-valid", code)
        if now > code.not_after + skew or code.shown_at < now - DEVICE_WINDOW - skew:
            return Verdict(False, "expired", code)
    else:
        if now < code.issued_at - skew:
            return Verdict(False, "not-yet-valid", code)
        if now >= code.issued_at + code.lifetime + skew:
            return Verdict(False, "expired", code)
    # 6. deny list: device codes only, entries are credential ids
    if code.type == TYPE_DEVICE and deny:
        if code.credential_id in deny.get("credential", ()):
            return Verdict(True, "denied-credential", code)
        if code.credential_id in deny.get("account", ()):
            return Verdict(True, "denied-account", code)
        if scene == "transit" and code.credential_id in deny.get("debtor", ()):
            return Verdict(True, "denied-debt", code)
    if scene is None:
        return Verdict(True, "ok", code)
    # 7. scene; the event scene reads no flag bit and needs no scene key (7.1)
    if scene == EVENT:
        if code.type == TYPE_ENTERPRISE:
            return Verdict(True, "no-entitlement", code)
        if code.type == TYPE_PERSONAL:
            return Verdict(True, "online-only", code)
        if attendees is None:
            return Verdict(True, "no-ticket", code)
        return attendees.admit(code, attendees.by_credential.get(code.credential_id, []), entrance)
    if code.type not in SCENE_TYPES[scene]:
        return Verdict(True, "no-entitlement", code, 0)
    held = (scene_keys or {}).get(code.epoch)
    if held is None or now > held[1]:
        return Verdict(True, "no-scene-key", code)
    bits = (code.flags ^ scene_mask(scene, held[0], code.nonce)) & SCENE_BITS[scene]
    if bits == 0:  # every scene requires its field to be non-zero: may ride, insured, a colour, a standing
        return Verdict(True, "no-entitlement", code, 0)
    # 8. replay: check and record in one step (nothing here yields between the two)
    if scene in SINGLE_USE_SCENES and seen is not None:
        if code.replay_id in seen:
            return Verdict(True, "replayed", code, bits)
        if isinstance(seen, ReplayStore):
            seen.record(code.replay_id, code.last_valid_second(skew), now)
        else:
            seen.add(code.replay_id)
    return Verdict(True, "ok", code, bits)


# -- the test vectors (12) ----------------------------------------------------------------------------------------

HEALTH = ("unknown", "green", "yellow", "red")
STANDING = ("unknown", "good", "abnormal", "revoked")


def verify_case(
    case: dict[str, Any], keys: dict[str, ec.EllipticCurvePublicKey], scene_keys_document: dict[str, Any]
) -> Verdict:
    """One vector as section 12 says: the case's scene's keys only (none when ``without_scene_keys``), its deny
    list, its ``seen`` ids in the replay store; verify ``code`` at ``now`` with ``skew``."""
    scene = case.get("scene")
    scene_keys = (
        load_scene_keys(scene_keys_document, scene) if scene and not case.get("without_scene_keys") else {}
    )
    deny = {kind: {bytes.fromhex(i) for i in case.get("deny", {}).get(kind, ())} for kind in DENY_KINDS}
    seen = {bytes.fromhex(i) for i in case.get("seen", ())}
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


def describe(code: Code, scene_keys_document: dict[str, Any]) -> dict[str, Any]:
    """Every field as ``decoded`` lists it. ``masks`` and ``clear`` need every scene's key of the code's epoch, which
    only the platform (or a test) holds; without them only ``masked`` is given."""
    out: dict[str, Any] = {"type": code.type, "kid": code.kid.hex(), "epoch": code.epoch.hex()}
    if code.type == TYPE_DEVICE:
        out["credential_id"] = code.nonce.hex()
        out["holder"] = code.holder.hex()
        out["not_before"], out["not_after"] = code.not_before, code.not_after
    else:
        out["code_id"] = code.nonce.hex()
        out["holder"] = code.holder.hex()
        out["issued_at"], out["lifetime"] = code.issued_at, code.lifetime
    flags: dict[str, Any] = {"masked": code.flags}
    all_keys = {scene: load_scene_keys(scene_keys_document, scene).get(code.epoch) for scene in SCENE_BITS}
    if all(all_keys.values()):
        masks = {scene: scene_mask(scene, held[0], code.nonce) for scene, held in all_keys.items() if held}
        clear = code.flags
        for mask in masks.values():
            clear ^= mask
        flags["masks"] = masks
        flags["clear"] = {
            "byte": clear,
            "health": HEALTH[clear & 0x03],
            "may_ride": bool(clear & 0x04),
            "insured": bool(clear & 0x08),
            "standing": STANDING[clear >> 4 & 0x03],
        }
    out["flags"] = flags
    if code.type == TYPE_DEVICE:
        out["device_key"] = code.device_key.hex()
        out["shown_at"], out["counter"] = code.shown_at, code.counter
    out["replay_id"] = code.replay_id.hex()
    return out


def check_vectors(keys_document: dict[str, Any], vectors: list[dict[str, Any]]) -> list[str]:
    """Every disagreement between this verifier and the vectors, one line each; empty when all agree."""
    problems: list[str] = []
    keys = load_jwks(keys_document["jwks"])
    scene_document = keys_document["scene_keys"]
    if load_jwks(keys_document["untrusted"]).keys() & keys.keys():
        problems.append("an untrusted key is also trusted")
    for case in vectors:
        name = case["name"]
        verdict = verify_case(case, keys, scene_document)
        got = {"valid": verdict.valid, "reason": verdict.reason}
        if got != case["expected"]:
            problems.append(f"{name}: expected {case['expected']}, got {got}")
        if verdict.valid != (verdict.reason in GENUINE_REASONS):
            problems.append(f"{name}: valid {verdict.valid} with reason {verdict.reason}")
        expected = case.get("decoded")
        if expected is None:
            if verdict.valid:
                problems.append(f"{name}: a genuine code without decoded")
            continue
        if verdict.code is None:
            problems.append(f"{name}: decoded given, but the code did not parse")
            continue
        decoded = describe(verdict.code, scene_document)
        # scene_bits is given when the verdict came from the scene step with the scene's key in hand (12)
        if (
            case.get("scene")
            and not verdict.reason.startswith("denied-")
            and verdict.reason != "no-scene-key"
        ):
            decoded["scene_bits"] = decoded["flags"]["clear"]["byte"] & SCENE_BITS[case["scene"]]
            read = verdict.code.type in SCENE_TYPES[case["scene"]]  # a refused type is not unmasked
            if read and verdict.scene_bits != decoded["scene_bits"]:
                problems.append(
                    f"{name}: the verifier read {verdict.scene_bits}, decoded {decoded['scene_bits']}"
                )
        if decoded != expected:
            for member in sorted(decoded.keys() | expected.keys()):
                if decoded.get(member) != expected.get(member):
                    problems.append(
                        f"{name}: {member} is {decoded.get(member)!r}, vector {expected.get(member)!r}"
                    )
    return problems


def check_event_vectors(keys_document: dict[str, Any], vectors: list[dict[str, Any]]) -> list[str]:
    """Every disagreement with ``event-vectors.json``: each case's gate holds the case's ``attendees`` (and has
    admitted its ``admitted`` tickets) and stands at its ``entrance``."""
    problems: list[str] = []
    keys = load_jwks(keys_document["jwks"])
    scene_document = keys_document["scene_keys"]
    for case in vectors:
        attendees = load_attendees(case["attendees"]) if "attendees" in case else None
        if attendees is not None:
            attendees.admitted = {_uuid_bytes(t) for t in case.get("admitted", [])}
        scene = case.get("scene")
        scene_keys = (
            load_scene_keys(scene_document, scene)
            if scene in SCENE_BITS and not case.get("without_scene_keys")
            else {}
        )
        deny = {kind: {bytes.fromhex(i) for i in case.get("deny", {}).get(kind, ())} for kind in DENY_KINDS}
        verdict = verify(
            case["code"],
            case["now"],
            keys,
            skew=case["skew"],
            scene=scene,
            scene_keys=scene_keys,
            deny=deny,
            attendees=attendees,
            entrance=case.get("entrance", ""),
        )
        expected = case["expected"]
        got: dict[str, Any] = {"valid": verdict.valid, "reason": verdict.reason}
        if "admission" in expected:
            got["admission"] = verdict.ticket
        if got != expected:
            problems.append(f"{case['name']}: expected {expected}, got {got}")
    return problems


if __name__ == "__main__":
    directory = "docs/test-vectors"
    with open(f"{directory}/keys.json", encoding="utf-8") as key_file:
        key_document = json.load(key_file)
    with open(f"{directory}/vectors.json", encoding="utf-8") as vector_file:
        vector_list = json.load(vector_file)
    found = check_vectors(key_document, vector_list)
    with open(f"{directory}/event-vectors.json", encoding="utf-8") as event_file:
        event_list = json.load(event_file)
    found += check_event_vectors(key_document, event_list)
    print("\n".join([*found, f"{len(vector_list) + len(event_list)} vectors, {len(found)} disagreements"]))
    raise SystemExit(1 if found else 0)
