"""What the one-login provider says on the wire: client registration (operations), residents' consents and their
data-access history, and the names of scopes and claims."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

# Scopes a department may ask for. `openid` gives the pairwise `sub` (and `acr`); each other scope is one claim
# group, consented to as one item, and named here as a "claim" in consents and releases.
CLAIM_SCOPES = ("profile", "phone", "real_name", "id_number")
SCOPES = ("openid", *CLAIM_SCOPES)
# Sensitive personal information (PIPL art. 28/29): each needs its own explicit consent the first time it goes to
# a department; the consent page never pre-ticks them.
SENSITIVE = frozenset({"phone", "real_name", "id_number"})
# What each claim group puts in userinfo.
CLAIMS_OF_SCOPE: dict[str, tuple[str, ...]] = {
    "profile": ("name",),
    "phone": ("phone_number", "phone_number_verified"),
    "real_name": ("real_name",),
    "id_number": ("id_number",),
}
# How the consent page names each claim group.
CLAIM_LABELS: dict[str, str] = {
    "profile": "姓名（脱敏，如“王*”）",
    "phone": "手机号码",
    "real_name": "真实姓名",
    "id_number": "身份证号码",
}
# Authentication context classes: the resident's level (L1 phone, L2 real-name, L3 face).
ACR_VALUES = ("L1", "L2", "L3")

AuthMethod = Literal["private_key_jwt", "client_secret_basic", "client_secret_post", "none"]
Uri = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class ClientRegistration(msgspec.Struct, forbid_unknown_fields=True):
    """A department's app, registered by operations for an organisation (a department)."""

    organisation_id: uuid.UUID
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    # Why the department needs the data: shown on the consent page and in every release the resident sees.
    purpose: Annotated[str, msgspec.Meta(min_length=4, max_length=200)]
    client_type: Literal["confidential", "public"]
    redirect_uris: Annotated[list[Uri], msgspec.Meta(min_length=1, max_length=10)]
    # confidential: private_key_jwt (give jwks), client_secret_basic or client_secret_post; public: none (PKCE).
    token_endpoint_auth_method: AuthMethod | None = None
    scopes: Annotated[list[str], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=lambda: ["openid", "profile"]
    )
    jwks: dict[str, Any] | None = None
    post_logout_redirect_uris: Annotated[list[Uri], msgspec.Meta(max_length=10)] = []
    backchannel_logout_uri: Uri | None = None
    # Clients of one department on several hosts may share a sector (OIDC Core 8.1): its host is the sector.
    sector_identifier_uri: Uri | None = None


class Client(msgspec.Struct):
    client_id: str
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    purpose: str
    client_type: str
    token_endpoint_auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    backchannel_logout_uri: str | None
    scopes: list[str]
    sector: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ClientRegistered(msgspec.Struct):
    client: Client
    # Shown once, for client_secret_basic / client_secret_post; only a keyed hash is stored.
    client_secret: str | None


class Clients(msgspec.Struct):
    clients: list[Client]


class Consent(msgspec.Struct):
    client_id: str
    client_name: str
    organisation: str
    purpose: str
    claims: list[str]
    granted_at: dt.datetime


class Consents(msgspec.Struct):
    consents: list[Consent]


class DataRelease(msgspec.Struct):
    """One release of personal data to a department, as the resident sees it (beside the scan history)."""

    at: dt.datetime
    organisation: str
    client: str
    claims: list[str]
    purpose: str
    via: str


class DataAccessHistory(msgspec.Struct):
    releases: list[DataRelease]
