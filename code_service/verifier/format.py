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
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
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
_ECDSA = ec.ECDSA(hashes.SHA256())


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
        return cls(Health(value & 3), bool(value & 4), bool(value & 8), Standing((value >> 4) & 3))


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
    return raw_signature(private_key.sign(data, _ECDSA))


def verify_raw(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def compressed_point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def load_point(data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
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
    try:
        if header & 0x0F in (TYPE_PERSONAL, TYPE_ENTERPRISE):
            return _decode_server(payload)
        if header & 0x0F == TYPE_DEVICE:
            return _decode_device(payload)
    except (struct.error, ValueError) as exc:
        raise FormatError(f"malformed code: {exc}") from None
    raise FormatError("unknown code type")


def _decode_server(payload: bytes) -> ServerCode:
    if len(payload) != SERVER_CODE_LEN:
        raise FormatError("server code has the wrong length")
    header, kid, subject, code_id, issued_at, lifetime, flags = _SERVER.unpack(payload[:28])
    if not 1 <= lifetime <= MAX_SERVER_LIFETIME:
        raise FormatError("lifetime out of range")
    return ServerCode(
        header & 0x0F,
        kid,
        subject,
        code_id,
        issued_at,
        lifetime,
        Flags.from_byte(flags),
        payload[:28],
        payload[28:],
    )


def _decode_device(payload: bytes) -> DeviceCode:
    if len(payload) != DEVICE_CODE_LEN:
        raise FormatError("device code has the wrong length")
    _, kid, credential_id, subject, not_before, not_after, flags, device_key = _CRED.unpack(payload[:63])
    if not 0 < not_after - not_before <= MAX_CREDENTIAL_LIFETIME:
        raise FormatError("credential window out of range")
    shown_at, counter = _DEVICE_TAIL.unpack(payload[127:133])
    return DeviceCode(
        kid,
        credential_id,
        subject,
        not_before,
        not_after,
        Flags.from_byte(flags),
        device_key,
        payload[:63],
        payload[63:127],
        shown_at,
        counter,
        payload[:133],
        payload[133:],
    )
