from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec


class SubjectFacts(msgspec.Struct, omit_defaults=True):
    """Everything online verification needs about a code's holder, cached in Redis under `facts2:{subject}`."""

    subject: str
    kind: str  # resident | enterprise
    ref: str
    active: bool = True
    masked_name: str = ""
    health: str = "unknown"  # green | yellow | red | unknown
    insured: bool = False
    may_ride: bool = False
    ride_reason: str = ""
    standing: str = "unknown"
    name: str = ""
    uscc: str = ""
    level: int = 0  # a resident's real-name level (identity); scenes have minimum levels (SCENE_MIN_LEVEL)


class Entitlements(msgspec.Struct):
    health: str
    may_ride: bool
    ride_reason: str
    insured: bool


class IssuedCode(msgspec.Struct):
    code: str
    kind: str
    issued_at: int
    expires_at: int
    entitlements: Entitlements | None = None


class DeviceCredentialRequest(msgspec.Struct, forbid_unknown_fields=True):
    public_key: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=200,
            description="base64 P-256 public point, compressed (33 bytes) or uncompressed (65 bytes)",
        ),
    ]


class DeviceCredential(msgspec.Struct):
    id: str
    credential: str
    kid: str
    not_before: int
    not_after: int
    entitlements: Entitlements


class DeviceCredentialInfo(msgspec.Struct):
    id: str
    not_before: dt.datetime
    not_after: dt.datetime
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class DeviceCredentials(msgspec.Struct):
    credentials: list[DeviceCredentialInfo]
