"""What payments needs from the rest of the system, and the principals it receives through DI."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec


class Payer(msgspec.Struct, frozen=True):
    resident_id: uuid.UUID


class ClientOrganisation(msgspec.Struct, frozen=True):
    """A payee's system calling us with a signed machine request."""

    organisation_id: uuid.UUID
    organisation_name: str
    scopes: frozenset[str]


class Payee(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    kind: str


class PayeeDirectory(Protocol):
    async def payee(self, conn: Any, payee_id: uuid.UUID) -> Payee | None: ...


@dataclass(frozen=True)
class PaymentSettings:
    notify_base_url: str = "http://127.0.0.1:8000"
    order_ttl_seconds: int = 15 * 60
    # Platform fee per purpose, in basis points of the amount. Government fees and utility bills carry none.
    fee_bp: dict[str, int] = field(
        default_factory=lambda: {
            "utility_bill": 0,
            "non_tax_fee": 0,
            "ticket": 60,
            "transit_fare": 0,
            "other": 60,
        }
    )
