from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

OrganisationKind = Literal["department", "verifier_operator", "merchant", "operations"]

# What a machine credential may do. Later issues check these on their endpoints.
KNOWN_SCOPES = frozenset(
    {
        "feeds:health",
        "feeds:insurance",
        "verify:transit",
        "verify:health",
        "verify:medical",
        "verify:enterprise",
        "gates:sync",
        "gates:taps",
        "tiles:manage",
        "payments:refund",
        "licences:issue",
        "settlements:read",
    }
)


RateLimit = Annotated[int, msgspec.Meta(gt=0, le=1_000_000)]


class OrganisationCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    kind: OrganisationKind
    location: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    # Requests per second for all the organisation's credentials together; absent: the platform default.
    rate_limit_per_second: RateLimit | None = None


class RateLimitChange(msgspec.Struct, forbid_unknown_fields=True):
    rate_limit_per_second: RateLimit | None


class Organisation(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: str
    location: str | None
    status: str
    created_at: dt.datetime
    rate_limit_per_second: int | None = None


class Organisations(msgspec.Struct):
    organisations: list[Organisation]


class CredentialCreate(msgspec.Struct, forbid_unknown_fields=True):
    scopes: Annotated[list[str], msgspec.Meta(min_length=1, max_length=32)]
    label: Annotated[str, msgspec.Meta(max_length=128)] = ""


class CredentialIssued(msgspec.Struct):
    key_id: str
    secret: str
    scopes: list[str]
    organisation_id: uuid.UUID
    note: str = "the secret is shown once; store it in the client's secret store"


class Credential(msgspec.Struct):
    key_id: str
    scopes: list[str]
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class Credentials(msgspec.Struct):
    credentials: list[Credential]


class MachinePrincipal(msgspec.Struct, frozen=True):
    key_id: str
    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    scopes: frozenset[str]
    rate_limit: int = 0  # requests per second for the whole organisation, across all workers


class WhoAmI(msgspec.Struct):
    key_id: str
    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    scopes: list[str]


class Payee(msgspec.Struct, frozen=True):
    """An organisation that can receive money: a department, a merchant, a transit operator."""

    id: uuid.UUID
    name: str
    kind: str
