from __future__ import annotations

from typing import Annotated, Literal

import msgspec

IdNumber = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, description="resident ID number (GB 11643)")
]


class HealthStatus(msgspec.Struct, forbid_unknown_fields=True):
    id_number: IdNumber
    colour: Literal["green", "yellow", "red"]


class InsuranceStatus(msgspec.Struct, forbid_unknown_fields=True):
    id_number: IdNumber
    insured: bool
    scheme: Annotated[str, msgspec.Meta(max_length=64)] = ""


class HealthBatch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[HealthStatus], msgspec.Meta(min_length=1, max_length=1000)]


class InsuranceBatch(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[InsuranceStatus], msgspec.Meta(min_length=1, max_length=1000)]


class FeedReceipt(msgspec.Struct):
    accepted: int
    changed: int
    holders_with_accounts: int
