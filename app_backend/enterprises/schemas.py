from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from app_backend.kernel.actors import Reason

MemberRole = Literal["admin", "member"]


class EnterpriseCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    uscc: Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="unified social credit code")]


class Enterprise(msgspec.Struct):
    id: uuid.UUID
    name: str
    uscc: str
    standing: str
    checksum_override: bool
    created_at: dt.datetime
    my_role: str


class InvitationCreate(msgspec.Struct, forbid_unknown_fields=True):
    phone: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    role: MemberRole = "member"


InvitationStatus = Literal["pending", "accepted", "declined", "revoked", "expired"]


class Invitation(msgspec.Struct):
    """An invitation as its enterprise's administrators see it: the same answer whether or not the phone has an
    account (it waits for whoever logs in with it)."""

    id: uuid.UUID
    phone: str  # masked
    role: str
    status: InvitationStatus
    invited_at: dt.datetime
    expires_at: dt.datetime
    answered_at: dt.datetime | None = None


class Invitations(msgspec.Struct):
    invitations: list[Invitation]


class InvitingEnterprise(msgspec.Struct):
    id: uuid.UUID
    name: str
    uscc: str


class MyInvitation(msgspec.Struct):
    """An open invitation addressed to my phone."""

    id: uuid.UUID
    enterprise: InvitingEnterprise
    role: str
    invited_at: dt.datetime
    expires_at: dt.datetime


class MyInvitations(msgspec.Struct):
    invitations: list[MyInvitation]


class Member(msgspec.Struct):
    resident_id: uuid.UUID
    name: str | None
    phone: str
    role: str
    added_at: dt.datetime


class Members(msgspec.Struct):
    members: list[Member]


class EnterpriseFacts(msgspec.Struct, frozen=True):
    """What the code side shows of an enterprise (its code's standing at an inspector's scan)."""

    id: uuid.UUID
    name: str
    uscc: str
    standing: str


class UsccOverride(msgspec.Struct, forbid_unknown_fields=True):
    uscc: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    reason: Reason
