"""Taizhou Tong code format, version 1 (docs/code-format.md is the normative text; this is its reference codec).

    code    = "TZ1:" base45(payload)
    payload = server code (92 bytes) | device code (197 bytes), all integers big-endian

Server code (types 1 personal, 2 enterprise), signed by the platform, at most 60 s:
    0   1  header      0x11 or 0x12 (version 1 << 4 | type)
    1   4  kid         first 4 bytes of SHA-256 of the signing key's compressed public point
    5   8  subject     the holder's stable pseudonymous id
    13  8  code_id     random, unique per code
    21  4  issued_at   unix seconds
    25  2  lifetime    seconds (1..60)
    27  1  flags       entitlements (see Flags)
    28  64 signature   ECDSA P-256 / SHA-256 over bytes 0..27, r || s

Device code (type 3): a platform-signed credential binding the phone's key, plus the phone's fresh signature:
    0   1  header      0x13
    1   4  kid
    5   8  credential_id
    13  8  subject
    21  4  not_before  unix seconds
    25  4  not_after   unix seconds (at most 24 h after not_before)
    29  1  flags
    30  33 device_key  P-256 public point, compressed (SEC1)
    63  64 cred_sig    platform signature over bytes 0..62
    127 4  shown_at    unix seconds, the phone's clock when it made this code
    131 2  counter     increases with every code the phone makes under this credential
    133 64 device_sig  device signature over bytes 0..132
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from code_service.verifier.base45 import b45decode, b45encode

PREFIX = "TZ1:"
VERSION = 1
TYPE_PERSONAL, TYPE_ENTERPRISE, TYPE_DEVICE = 1, 2, 3
SERVER_CODE_LEN = 92
DEVICE_CODE_LEN = 197
CREDENTIAL_LEN = 127
MAX_SERVER_LIFETIME = 60
MAX_CREDENTIAL_LIFETIME = 24 * 3600
_SERVER = struct.Struct(">B4s8s8sIHB")  # 28 bytes signed
_CRED = struct.Struct(">B4s8s8sIIB33s")  # 63 bytes signed
_DEVICE_TAIL = struct.Struct(">IH")  # 6 bytes
# Whole payloads in one call: the signed fields as above, then the signatures as r and s (32 bytes each).
SERVER_FIELDS = struct.Struct(">B4s8s8sIHB32s32s")  # 92 bytes
DEVICE_FIELDS = struct.Struct(">B4s8s8sIIB33s32s32sIH32s32s")  # 197 bytes
ES256 = ec.ECDSA(hashes.SHA256())  # ECDSA P-256 with SHA-256; the curve comes with the key
# Signing takes its nonce from the key and the message (RFC 6979): the same bytes signed with the same key give the
# same signature, so the platform can check its own signatures by signing again (signs_again), a third of the
# cost of verifying them. Verifiers cannot tell the difference and need not (docs/code-format.md, 5.3).
try:
    _ES256_SIGNING = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
except (TypeError, UnsupportedAlgorithm):  # cryptography before 43 or OpenSSL before 3.2: random nonces, and
    _ES256_SIGNING = ES256  # signs_again then never reproduces a signature, so each one is verified


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
    """One byte: bits 0-1 health colour, bit 2 may ride, bit 3 insured, bits 4-5 enterprise standing."""

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


@dataclass(frozen=True, slots=True)
class ServerCode:
    type: int
    kid: bytes
    subject: bytes
    code_id: bytes
    issued_at: int
    lifetime: int
    flags: Flags
    signed: bytes
    signature: bytes

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime


@dataclass(frozen=True, slots=True)
class DeviceCode:
    kid: bytes
    credential_id: bytes
    subject: bytes
    not_before: int
    not_after: int
    flags: Flags
    device_key: bytes
    credential: bytes  # bytes 0..62, what cred_sig covers
    credential_signature: bytes
    shown_at: int
    counter: int
    signed: bytes  # bytes 0..132, what device_sig covers
    device_signature: bytes

    type: int = TYPE_DEVICE

    @property
    def code_id(self) -> bytes:
        """Unique per code: the credential plus the phone's time and counter."""
        return self.credential_id + struct.pack(">IH", self.shown_at, self.counter)


class FormatError(ValueError):
    """The text is not a well-formed version-1 code."""


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
    subject: bytes,
    code_id: bytes,
    issued_at: int,
    lifetime: int,
    flags: Flags,
) -> str:
    if code_type not in (TYPE_PERSONAL, TYPE_ENTERPRISE) or not 1 <= lifetime <= MAX_SERVER_LIFETIME:
        raise ValueError("bad server code parameters")
    signed = _SERVER.pack(
        (VERSION << 4) | code_type, kid, subject, code_id, issued_at, lifetime, flags.to_byte()
    )
    return PREFIX + b45encode(signed + sign_raw(private_key, signed))


def encode_credential(
    private_key: ec.EllipticCurvePrivateKey,
    kid: bytes,
    credential_id: bytes,
    subject: bytes,
    not_before: int,
    not_after: int,
    flags: Flags,
    device_key: bytes,
) -> bytes:
    """The platform's half of a device code (127 bytes), handed to the phone once per day."""
    if not 0 < not_after - not_before <= MAX_CREDENTIAL_LIFETIME or len(device_key) != 33:
        raise ValueError("bad credential parameters")
    signed = _CRED.pack(
        (VERSION << 4) | TYPE_DEVICE,
        kid,
        credential_id,
        subject,
        not_before,
        not_after,
        flags.to_byte(),
        device_key,
    )
    return signed + sign_raw(private_key, signed)


def encode_device_code(
    device_private_key: ec.EllipticCurvePrivateKey, credential: bytes, shown_at: int, counter: int
) -> str:
    """The phone's half: runs offline, every few seconds."""
    if len(credential) != CREDENTIAL_LEN:
        raise ValueError("credential must be 127 bytes")
    signed = credential + _DEVICE_TAIL.pack(shown_at, counter & 0xFFFF)
    return PREFIX + b45encode(signed + sign_raw(device_private_key, signed))


# -- decoding (every verifier) --------------------------------------------------------------------------------


def decode(text: str) -> ServerCode | DeviceCode:
    """Parses without checking signatures or times; raises FormatError for anything malformed."""
    payload, fields = decode_fields(text)
    if len(payload) == SERVER_CODE_LEN:
        header, kid, subject, code_id, issued_at, lifetime, flags, r, s = fields
        return ServerCode(
            header & 0x0F, kid, subject, code_id, issued_at, lifetime, FLAGS[flags], payload[:28], r + s
        )
    _, kid, credential_id, subject, not_before, not_after, flags, device_key = fields[:8]
    cred_r, cred_s, shown_at, counter, device_r, device_s = fields[8:]
    return DeviceCode(
        kid,
        credential_id,
        subject,
        not_before,
        not_after,
        FLAGS[flags],
        device_key,
        payload[:63],
        cred_r + cred_s,
        shown_at,
        counter,
        payload[:133],
        device_r + device_s,
    )


def decode_fields(text: str) -> tuple[bytes, tuple[Any, ...]]:
    """Step 1 of docs/code-format.md section 6 but for the device point (which needs a curve operation): the
    payload, and its fields as SERVER_FIELDS or DEVICE_FIELDS unpack them (the payload's length tells which; the
    flags byte is 0-63). Raises FormatError for anything malformed. This is what `decode` builds its objects
    from, and what the offline verifier reads directly."""
    if not text.startswith(PREFIX):
        raise FormatError("not a Taizhou Tong version-1 code")
    try:
        payload = b45decode(text[len(PREFIX) :])
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    if not payload:
        raise FormatError("empty code")
    header = payload[0]
    if header >> 4 != VERSION:
        raise FormatError("unsupported version")
    code_type = header & 0x0F
    if code_type == TYPE_PERSONAL or code_type == TYPE_ENTERPRISE:
        if len(payload) != SERVER_CODE_LEN:
            raise FormatError("server code has the wrong length")
        fields = SERVER_FIELDS.unpack(payload)
        if not 1 <= fields[5] <= MAX_SERVER_LIFETIME:
            raise FormatError("lifetime out of range")
    elif code_type == TYPE_DEVICE:
        if len(payload) != DEVICE_CODE_LEN:
            raise FormatError("device code has the wrong length")
        fields = DEVICE_FIELDS.unpack(payload)
        if not 0 < fields[5] - fields[4] <= MAX_CREDENTIAL_LIFETIME:
            raise FormatError("credential window out of range")
    else:
        raise FormatError("unknown code type")
    if fields[6] & 0xC0:
        raise FormatError("malformed code: reserved flag bits set")
    return payload, fields
