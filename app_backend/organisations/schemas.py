from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

OrganisationKind = Literal["department", "verifier_operator", "merchant", "operations"]

# What a machine credential may do, by the kind of organisation that may hold it: the one place this is decided
# (docs/api.md#machine-requests has the table). Feeds set residents' health colour and insurance, so only a
# government department may hold them; gates and the medical scene belong to verifier operators (metro, bus,
# hospitals, checkpoints); money scopes to those that can be paid (PAYEE_KINDS in service.py).
SCOPES_BY_KIND: dict[str, frozenset[str]] = {
    "department": frozenset(
        {
            "feeds:health",
            "feeds:insurance",
            "verify:health",
            "verify:enterprise",
            "tiles:manage",
            "events:publish",
            "verify:event",
            "licences:issue",
            "payments:refund",
            "settlements:read",
            "messages:send",
        }
    ),
    "verifier_operator": frozenset(
        {
            "verify:transit",
            "verify:health",
            "verify:medical",
            "verify:enterprise",
            "verify:event",
            "gates:sync",
            "gates:taps",
            "payments:refund",
            "settlements:read",
            "messages:send",
        }
    ),
    "merchant": frozenset({"verify:health", "payments:refund", "settlements:read", "messages:send"}),
    "operations": frozenset({"verify:health", "verify:enterprise", "tiles:manage"}),
}
KNOWN_SCOPES = frozenset().union(*SCOPES_BY_KIND.values())


def scopes_for_kind(kind: str) -> frozenset[str]:
    """The scopes an organisation of this kind may hold (none for a kind this table does not know)."""
    return SCOPES_BY_KIND.get(kind, frozenset())


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
