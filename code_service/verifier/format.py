"""Taizhou Tong code format, version 2 (docs/code-format.md is the normative text; this is its reference codec).

    code    = "TZ2:" base45(payload)
    payload = server code (96 bytes) | device code (201 bytes), all integers big-endian

Server code (types 1 personal, 2 enterprise), signed by the platform, at most 60 s:
    0   1  header      0x21 or 0x22 (version 2 << 4 | type)
    1   4  kid         first 4 bytes of SHA-256 of the signing key's compressed public point
    5   4  epoch       the scene-key epoch the flags are masked with
    9   8  code_id     random, unique per code: the replay id and the masking nonce
    17  8  holder      sealed holder reference: only the platform can open it (pseudorandom to anyone else)
    25  4  issued_at   unix seconds
    29  2  lifetime    seconds (1..60)
    31  1  flags       entitlements XOR the scene masks (see Flags, scene_mask)
    32  64 signature   ECDSA P-256 / SHA-256 over bytes 0..31, r || s

Device code (type 3): a platform-signed credential binding a fresh phone key, plus the phone's fresh signature:
    0   1  header      0x23
    1   4  kid
    5   4  epoch
    9   8  credential_id  random per credential: the masking nonce
    17  8  holder      sealed with credential_id
    25  4  not_before  unix seconds
    29  4  not_after   unix seconds (at most 24 h after not_before)
    33  1  flags       masked
    34  33 device_key  P-256 public point, compressed (SEC1), fresh for every credential
    67  64 cred_sig    platform signature over bytes 0..66
    131 4  shown_at    unix seconds, the phone's clock when it made this code
    135 2  counter     increases with every code the phone makes under this credential
    137 64 device_sig  device signature over bytes 0..136

Printed ticket code (type 4): a ticket of one occasion on paper, for an attendee without a phone, signed by the
platform and valid until the occasion ends; it reads no flag bits and is accepted in the `event` scene only:
    0   1  header      0x24
    1   4  kid
    5   16 occasion_id the session or booked slot (uuid)
    21  16 ticket_id   the ticket (uuid): what the gate admits once
    37  4  not_before  unix seconds (when it was issued)
    41  4  not_after   unix seconds (when the occasion ends)
    45  64 signature   platform signature over bytes 0..44
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from code_service.verifier.base45 import b45decode, b45encode

PREFIX = "TZ2:"
VERSION = 2
# Any "TZ<digits>:" text that is not ours is another version of this format: a verifier says so
# (unsupported-version) instead of calling it garbage, so the gate can tell the holder to update or refresh.
_ANY_VERSION = re.compile(r"TZ[0-9]+:")
TYPE_PERSONAL, TYPE_ENTERPRISE, TYPE_DEVICE, TYPE_TICKET = 1, 2, 3, 4
SERVER_CODE_LEN = 96
DEVICE_CODE_LEN = 201
TICKET_CODE_LEN = 109
TICKET_SIGNED_LEN = 45
# A printed ticket lives from its printing until its occasion ends: tickets go on sale months ahead, never a year.
MAX_TICKET_LIFETIME = 400 * 86400
CREDENTIAL_LEN = 131
SERVER_SIGNED_LEN = 32
CREDENTIAL_SIGNED_LEN = 67
DEVICE_SIGNED_LEN = 137
MAX_SERVER_LIFETIME = 60
MAX_CREDENTIAL_LIFETIME = 24 * 3600
_SERVER = struct.Struct(">B4s4s8s8sIHB")  # 32 bytes signed
_CRED = struct.Struct(">B4s4s8s8sIIB33s")  # 67 bytes signed
_DEVICE_TAIL = struct.Struct(">IH")  # 6 bytes
# Whole payloads in one call: the signed fields as above, then the signatures as r and s (32 bytes each).
SERVER_FIELDS = struct.Struct(">B4s4s8s8sIHB32s32s")  # 96 bytes
DEVICE_FIELDS = struct.Struct(">B4s4s8s8sIIB33s32s32sIH32s32s")  # 201 bytes
TICKET_FIELDS = struct.Struct(">B4s16s16sII32s32s")  # 109 bytes
_TICKET = struct.Struct(">B4s16s16sII")  # 45 bytes signed
ES256 = ec.ECDSA(hashes.SHA256())  # ECDSA P-256 with SHA-256; the curve comes with the key
# Signing takes its nonce from the key and the message (RFC 6979): the same bytes signed with the same key give the
# same signature, so the platform can check its own signatures by signing again (signs_again), a third of the
# cost of verifying them. Verifiers cannot tell the difference and need not (docs/code-format.md, 5.3).
try:
    _ES256_SIGNING = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
except (TypeError, UnsupportedAlgorithm):  # cryptography before 43 or OpenSSL before 3.2: random nonces, and
    _ES256_SIGNING = ES256  # signs_again then never reproduces a signature, so each one is verified

# The flag bits each scene's verifier may read, and which it unmasks with its scene key (docs/code-format.md 4.3).
SCENES = ("transit", "health", "medical", "enterprise")
SCENE_BITS: dict[str, int] = {"transit": 0x04, "health": 0x03, "medical": 0x08, "enterprise": 0x30}
SCENE_KEY_LEN = 32
EPOCH_LEN = 4
# The scene of entry to an occasion (a ticketed session, a booked slot): it reads no flag bit and needs no scene key;
# the entitlement is a ticket, which the platform asks of the domains that sell entry (online) or a gate finds in
# its attendee list (offline). Deliberately not in SCENES or SCENE_BITS: masks and epochs are unchanged by it.
EVENT_SCENE = "event"


class Health(IntEnum):
    UNKNOWN = 0
    GREEN = 1
    YELLOW = 2
    RED = 3


class Standing(IntEnum):
    UNKNOWN = 0
    GOOD = 1
    ABNORMAL = 2
    REVOKED = 3


@dataclass(frozen=True, slots=True)
class Flags:
    """One byte in the clear: bits 0-1 health colour, bit 2 may ride, bit 3 insured, bits 4-5 enterprise standing.
    A code carries it masked (`mask_flags`); only a scene's verifier can unmask that scene's bits."""

    health: Health = Health.UNKNOWN
    may_ride: bool = False
    insured: bool = False
    standing: Standing = Standing.UNKNOWN

    def to_byte(self) -> int:
        return int(self.health) | (self.may_ride << 2) | (self.insured << 3) | (int(self.standing) << 4)

    @classmethod
    def from_byte(cls, value: int) -> Flags:
        if value & 0xC0:
            raise ValueError("reserved flag bits set")
        if cls is Flags:
            return FLAGS[value & 0x3F]  # the fields depend on bits 0-5 only
        return cls(Health(value & 3), bool(value & 4), bool(value & 8), Standing((value >> 4) & 3))


# Flags are immutable: one shared instance per valid byte, instead of two IntEnum lookups and a new object per code.
FLAGS: tuple[Flags, ...] = tuple(
    Flags(Health(value & 3), bool(value & 4), bool(value & 8), Standing((value >> 4) & 3))
    for value in range(64)
)


def scene_mask(scene_key: bytes, nonce: bytes, scene: str) -> int:
    """The mask bits of one scene: its bits of the first byte of HMAC-SHA256(scene key, nonce)."""
    return hmac.digest(scene_key, nonce, "sha256")[0] & SCENE_BITS[scene]


def full_mask(scene_keys: Mapping[str, bytes], nonce: bytes) -> int:
    """The whole mask of a code whose epoch holds `scene_keys` (every scene): what the platform XORs in."""
    mask = 0
    for scene in SCENES:
        mask |= scene_mask(scene_keys[scene], nonce, scene)
    return mask


def seal_holder(seal_key: bytes, nonce: bytes, holder: bytes) -> bytes:
    """The platform's 8-byte holder id XOR HMAC-SHA256(seal key, nonce)[0:8]; the same call opens it again. The
    seal key never leaves the platform, so to anyone else the field is as random as the nonce."""
    pad = hmac.digest(seal_key, b"tzt-holder:" + nonce, "sha256")
    return bytes(a ^ b for a, b in zip(holder, pad[:8], strict=True))


open_holder = seal_holder


@dataclass(frozen=True, slots=True)
class ServerCode:
    type: int
    kid: bytes
    epoch: bytes
    code_id: bytes
    holder: bytes  # sealed
    issued_at: int
    lifetime: int
    masked_flags: int
    signed: bytes
    signature: bytes

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime

    @property
    def nonce(self) -> bytes:
        return self.code_id

    @property
    def replay_id(self) -> bytes:
        return self.code_id


@dataclass(frozen=True, slots=True)
class DeviceCode:
    kid: bytes
    epoch: bytes
    credential_id: bytes
    holder: bytes  # sealed
    not_before: int
    not_after: int
    masked_flags: int
    device_key: bytes
    credential: bytes  # bytes 0..66, what cred_sig covers
    credential_signature: bytes
    shown_at: int
    counter: int
    signed: bytes  # bytes 0..136, what device_sig covers
    device_signature: bytes

    type: int = TYPE_DEVICE

    @property
    def nonce(self) -> bytes:
        return self.credential_id

    @property
    def code_id(self) -> bytes:
        """Unique per code (the replay id): the credential plus the phone's time and counter."""
        return self.credential_id + struct.pack(">IH", self.shown_at, self.counter)

    replay_id = code_id


@dataclass(frozen=True, slots=True)
class TicketCode:
    """A printed ticket: one ticket of one occasion, no holder and no flags."""

    kid: bytes
    occasion_id: bytes  # 16 bytes of a uuid
    ticket_id: bytes  # 16 bytes of a uuid
    not_before: int
    not_after: int
    signed: bytes  # bytes 0..44
    signature: bytes

    type: int = TYPE_TICKET

    @property
    def replay_id(self) -> bytes:
        """Admitted once per ticket: the ticket is the replay id."""
        return self.ticket_id


class FormatError(ValueError):
    """The text is not a well-formed version-2 code."""


class UnsupportedVersion(FormatError):
    """The text is a Taizhou Tong code of another version (TZ1: is retired)."""


def kid_for(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(public_key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)).digest()[:4]


def raw_signature(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_raw(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return raw_signature(private_key.sign(data, _ES256_SIGNING))


def signs_again(private_key: ec.EllipticCurvePrivateKey, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is what sign_raw makes of `data` with `private_key`: then it verifies under the key's
    public half. False proves nothing: a signature made another way (with a random nonce, or with n − s for s)
    may still verify. The comparison takes the same time wherever the bytes differ."""
    return hmac.compare_digest(sign_raw(private_key, data), signature)


def _der_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\0")
    if not value or value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes((len(value),)) + value


def _der_frame(r_high: bool, s_high: bool) -> tuple[bytes, bytes]:
    r_len, s_len = 32 + r_high, 32 + s_high
    head = bytes((0x30, 4 + r_len + s_len, 0x02, r_len)) + b"\0" * r_high
    return head, bytes((0x02, s_len)) + b"\0" * s_high


# DER of SEQUENCE { INTEGER r, INTEGER s } for 32-byte r and s without a leading zero byte (255 signatures in
# 256 each): header ‖ r ‖ middle ‖ s, the header and middle chosen by the top bits of r and s.
_DER_FRAMES = tuple(_der_frame(r_high, s_high) for r_high in (False, True) for s_high in (False, True))


def der_signature(r: bytes, s: bytes) -> bytes:
    """The DER form `cryptography` verifies, of 32-byte big-endian r and s: the same bytes as
    `encode_dss_signature(int(r), int(s))`, without the detour through Python integers."""
    if r[0] and s[0]:
        head, middle = _DER_FRAMES[(r[0] >> 6 & 2) | s[0] >> 7]
        return head + r + middle + s
    body = _der_integer(r) + _der_integer(s)
    return b"\x30" + bytes((len(body),)) + body


def verify_raw(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        public_key.verify(der_signature(signature[:32], signature[32:]), data, ES256)
    except InvalidSignature:
        return False
    return True


def compressed_point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


_P256 = ec.SECP256R1()


def load_point(data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_P256, data)
    except ValueError:
        raise FormatError("device key is not a P-256 point") from None


# -- encoding (the platform and the phone) -------------------------------------------------------------------


def encode_server_code(
    private_key: ec.EllipticCurvePrivateKey,
    kid: bytes,
    code_type: int,
    code_id: bytes,
    holder: bytes,
    issued_at: int,
    lifetime: int,
    flags: Flags,
    epoch: bytes,
    scene_keys: Mapping[str, bytes],
) -> str:
    """`holder` is already sealed (seal_holder with code_id); `scene_keys` are the epoch's keys of every scene."""
    if code_type not in (TYPE_PERSONAL, TYPE_ENTERPRISE) or not 1 <= lifetime <= MAX_SERVER_LIFETIME:
        raise ValueError("bad server code parameters")
    masked = flags.to_byte() ^ full_mask(scene_keys, code_id)
    signed = _SERVER.pack(
        (VERSION << 4) | code_type, kid, epoch, code_id, holder, issued_at, lifetime, masked
    )
    return PREFIX + b45encode(signed + sign_raw(private_key, signed))


def encode_credential(
    private_key: ec.EllipticCurvePrivateKey,
    kid: bytes,
    credential_id: bytes,
    holder: bytes,
    not_before: int,
    not_after: int,
    flags: Flags,
    device_key: bytes,
    epoch: bytes,
    scene_keys: Mapping[str, bytes],
) -> bytes:
    """The platform's half of a device code (131 bytes), handed to the phone at most once per day, for a device
    key made for this credential alone. `holder` is already sealed (seal_holder with credential_id)."""
    if not 0 < not_after - not_before <= MAX_CREDENTIAL_LIFETIME or len(device_key) != 33:
        raise ValueError("bad credential parameters")
    signed = _CRED.pack(
        (VERSION << 4) | TYPE_DEVICE,
        kid,
        epoch,
        credential_id,
        holder,
        not_before,
        not_after,
        flags.to_byte() ^ full_mask(scene_keys, credential_id),
        device_key,
    )
    return signed + sign_raw(private_key, signed)


def encode_device_code(
    device_private_key: ec.EllipticCurvePrivateKey, credential: bytes, shown_at: int, counter: int
) -> str:
    """The phone's half: runs offline, every few seconds."""
    if len(credential) != CREDENTIAL_LEN:
        raise ValueError(f"credential must be {CREDENTIAL_LEN} bytes")
    signed = credential + _DEVICE_TAIL.pack(shown_at, counter & 0xFFFF)
    return PREFIX + b45encode(signed + sign_raw(device_private_key, signed))


def encode_ticket_code(
    private_key: ec.EllipticCurvePrivateKey,
    kid: bytes,
    occasion_id: bytes,
    ticket_id: bytes,
    not_before: int,
    not_after: int,
) -> str:
    """The platform's printed ticket (type 4): `occasion_id` and `ticket_id` are the 16 bytes of their uuids."""
    if (
        len(occasion_id) != 16
        or len(ticket_id) != 16
        or not 0 < not_after - not_before <= MAX_TICKET_LIFETIME
    ):
        raise ValueError("bad ticket code parameters")
    signed = _TICKET.pack((VERSION << 4) | TYPE_TICKET, kid, occasion_id, ticket_id, not_before, not_after)
    return PREFIX + b45encode(signed + sign_raw(private_key, signed))


# -- decoding (every verifier) --------------------------------------------------------------------------------


def decode(text: str) -> ServerCode | DeviceCode | TicketCode:
    """Parses without checking signatures or times; raises FormatError (UnsupportedVersion for another version's
    text) for anything malformed."""
    payload, fields = decode_fields(text)
    if len(payload) == TICKET_CODE_LEN:
        _, kid, occasion_id, ticket_id, not_before, not_after, r, s = fields
        return TicketCode(
            kid, occasion_id, ticket_id, not_before, not_after, payload[:TICKET_SIGNED_LEN], r + s
        )
    if len(payload) == SERVER_CODE_LEN:
        header, kid, epoch, code_id, holder, issued_at, lifetime, flags, r, s = fields
        return ServerCode(
            header & 0x0F,
            kid,
            epoch,
            code_id,
            holder,
            issued_at,
            lifetime,
            flags,
            payload[:SERVER_SIGNED_LEN],
            r + s,
        )
    _, kid, epoch, credential_id, holder, not_before, not_after, flags, device_key = fields[:9]
    cred_r, cred_s, shown_at, counter, device_r, device_s = fields[9:]
    return DeviceCode(
        kid,
        epoch,
        credential_id,
        holder,
        not_before,
        not_after,
        flags,
        device_key,
        payload[:CREDENTIAL_SIGNED_LEN],
        cred_r + cred_s,
        shown_at,
        counter,
        payload[:DEVICE_SIGNED_LEN],
        device_r + device_s,
    )


def decode_fields(text: str) -> tuple[bytes, tuple[Any, ...]]:
    """Step 1 of docs/code-format.md section 6 but for the device point (which needs a curve operation): the
    payload, and its fields as SERVER_FIELDS, DEVICE_FIELDS or TICKET_FIELDS unpack them (the payload's length
    tells which; the masked flags byte is 0-63). Raises UnsupportedVersion for another version's text and
    FormatError for anything else malformed. This is what `decode` builds its objects from, and what the offline
    verifier reads directly."""
    if not text.startswith(PREFIX):
        if _ANY_VERSION.match(text):
            raise UnsupportedVersion("a Taizhou Tong code of another version")
        raise FormatError("not a Taizhou Tong version-2 code")
    try:
        payload = b45decode(text[len(PREFIX) :])
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    if not payload:
        raise FormatError("empty code")
    header = payload[0]
    if header >> 4 != VERSION:
        raise FormatError("header of another version")
    code_type = header & 0x0F
    if code_type == TYPE_PERSONAL or code_type == TYPE_ENTERPRISE:
        if len(payload) != SERVER_CODE_LEN:
            raise FormatError("server code has the wrong length")
        fields = SERVER_FIELDS.unpack(payload)
        if not 1 <= fields[6] <= MAX_SERVER_LIFETIME:
            raise FormatError("lifetime out of range")
        flags = fields[7]
    elif code_type == TYPE_DEVICE:
        if len(payload) != DEVICE_CODE_LEN:
            raise FormatError("device code has the wrong length")
        fields = DEVICE_FIELDS.unpack(payload)
        if not 0 < fields[6] - fields[5] <= MAX_CREDENTIAL_LIFETIME:
            raise FormatError("credential window out of range")
        flags = fields[7]
    elif code_type == TYPE_TICKET:
        if len(payload) != TICKET_CODE_LEN:
            raise FormatError("ticket code has the wrong length")
        fields = TICKET_FIELDS.unpack(payload)
        if not 0 < fields[5] - fields[4] <= MAX_TICKET_LIFETIME:
            raise FormatError("ticket window out of range")
        return payload, fields  # no flags byte
    else:
        raise FormatError("unknown code type")
    if flags & 0xC0:
        raise FormatError("malformed code: reserved flag bits set")
    return payload, fields


def clear_flags(code: ServerCode | DeviceCode, scene_keys: Mapping[str, bytes]) -> Flags:
    """Every entitlement in the clear, for the platform, which holds every scene's key of the code's epoch."""
    return FLAGS[code.masked_flags ^ full_mask(scene_keys, code.nonce)]
