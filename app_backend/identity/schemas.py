from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from app_backend.kernel.actors import Reason

StaffRole = Literal["ops_admin", "ops_reviewer", "auditor"]
Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="mainland mobile number")]
Otp = Annotated[str, msgspec.Meta(min_length=1, max_length=16, description="the 6-digit code sent by SMS")]
OpaqueToken = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class OtpRequest(msgspec.Struct, forbid_unknown_fields=True):
    phone: Phone


class OtpSent(msgspec.Struct):
    expires_in: int
    resend_after: int


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    phone: Phone
    otp: Otp


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: OpaqueToken


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    resident_id: uuid.UUID
    level: str
    new_resident: bool = False


class LinkedEnterprise(msgspec.Struct):
    id: uuid.UUID
    name: str
    uscc: str
    role: str


class Profile(msgspec.Struct):
    id: uuid.UUID
    phone: str
    name: str | None
    id_number: str | None
    level: str
    status: str
    created_at: dt.datetime
    real_name_verified_at: dt.datetime | None
    face_verified_at: dt.datetime | None
    enterprises: list[LinkedEnterprise]


class RealNameRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class RegionChoice(msgspec.Struct, forbid_unknown_fields=True):
    """The district the resident lives in, or the city's code for none in particular."""

    region: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=12, description="a region code (GET /api/v1/tiles/taxonomy)"),
    ]


class ResidentRegion(msgspec.Struct):
    """Where the resident lives, as the home and broadcasts see it: the city (321200) until they choose."""

    region: str
    name: str
    chosen: bool


class FaceClaimRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Empty for a real-named resident's own identity; the person's name and ID number to claim one (also one
    that another account holds: a pass moves it here)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    # What the liveness vendor's face SDK reports about the device (its MetaInfo); the `aliyun` vendor needs it.
    meta_info: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class LivenessSession(msgspec.Struct):
    session_id: str
    provider: str
    expires_in: int


class FaceVerificationRequest(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    result_token: OpaqueToken


class DevRegistryPerson(msgspec.Struct, forbid_unknown_fields=True):
    """A person of the dev population registry, with the phones the dev carriers have registered to them."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    phones: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=32)]], msgspec.Meta(max_length=5)
    ] = []


class DevLivenessOutcome(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Annotated[str, msgspec.Meta(pattern="^(pass|fail)$")]


class DevLivenessResult(msgspec.Struct):
    result_token: str


class DevResidentsCreate(msgspec.Struct, forbid_unknown_fields=True):
    """How many real-named (L2) residents to make at once, each logged in (dev only: a ticket rush's buyers)."""

    count: Annotated[int, msgspec.Meta(ge=1, le=2000)]


class DevResident(msgspec.Struct):
    resident_id: uuid.UUID
    phone: str
    access_token: str
    refresh_token: str


class DevResidents(msgspec.Struct):
    residents: list[DevResident]


class OutboxMessage(msgspec.Struct):
    to: str
    text: str
    sent_at: float


class Outbox(msgspec.Struct):
    messages: list[OutboxMessage]


class ResidentPrincipal(msgspec.Struct, frozen=True):
    """Who the access token says is calling; levels in the token can lag, rules that need them re-read the row."""

    resident_id: uuid.UUID
    session_id: uuid.UUID
    level: int


class ReleasableResident(msgspec.Struct, frozen=True):
    """A resident's data in the clear, for a release the resident consented to (one login: the caller records the
    release where the resident sees it). Name and ID number are None before real-name (L2)."""

    resident_id: uuid.UUID
    level: int
    active: bool
    phone: str
    masked_name: str | None
    name: str | None
    id_number: str | None


def level_name(level: int) -> str:
    return f"L{level}"


class StaffGrant(msgspec.Struct, forbid_unknown_fields=True):
    resident_id: uuid.UUID
    role: StaffRole


class ResidentStatusChange(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["active", "blocked"]
    reason: Reason


class RevealRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason
