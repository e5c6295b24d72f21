"""What payments needs from the rest of the system, and the principals it receives through DI."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
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
    # Dev and tests deliver payee events to local receivers; production only to https on public addresses.
    allow_local_webhooks: bool = False
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
    # What each channel keeps per payment, in parts per million (0.6% = 6000), rounded half up to the fen;
    # reconciliation checks every bill line's fee against it. A channel absent here has its fees unchecked.
    channel_fee_ppm: dict[str, int] = field(default_factory=lambda: {"alipay": 6000, "wechat": 6000})
    # Reconciliation: an item one side has this close to midnight waits a day in the scratch pool.
    reconcile_midnight_window_s: int = 300


# --- transit: what the fare side needs from the gates' side (the composition root wires code_service in) -----


class GateTap(msgspec.Struct, frozen=True):
    """A tap a gate uploaded: the operator is the organisation whose gate it was."""

    organisation_id: uuid.UUID
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime
    subject: bytes | None


class TapSource(Protocol):
    async def untaken(self, conn: Any, limit: int) -> list[GateTap]:
        """Uploaded taps not yet taken over, oldest upload first (and locked for this transaction)."""
        ...

    async def mark_taken(self, conn: Any, keys: list[tuple[uuid.UUID, str]]) -> None:
        """(organisation_id, tap_id) of taps now taken over; in the caller's transaction."""
        ...


class RiderDirectory(Protocol):
    async def resident_of_subject(self, conn: Any, subject: bytes) -> uuid.UUID | None:
        """The resident a code subject stands for (None: unknown, or an enterprise's)."""
        ...


class DebtorList(Protocol):
    """The gates' deny list, kind debtor: gates refuse a rider in debt offline after their next sync."""

    async def deny(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None: ...

    async def allow(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None: ...


# Told, inside the transaction, whenever a rider's eligibility to ride changes (the code side drops its cache).
EligibilityChanged = Callable[[Any, uuid.UUID], Awaitable[None]]


class _NoTaps:
    async def untaken(self, conn: Any, limit: int) -> list[GateTap]:
        return []

    async def mark_taken(self, conn: Any, keys: list[tuple[uuid.UUID, str]]) -> None:
        return None


class _NoRiders:
    async def resident_of_subject(self, conn: Any, subject: bytes) -> uuid.UUID | None:
        return None


class _NoDebtorList:
    async def deny(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None:
        return None

    async def allow(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None:
        return None


async def _nothing(conn: Any, resident_id: uuid.UUID) -> None:
    return None


@dataclass(frozen=True)
class TransitPorts:
    taps: TapSource = field(default_factory=_NoTaps)
    riders: RiderDirectory = field(default_factory=_NoRiders)
    debtors: DebtorList = field(default_factory=_NoDebtorList)
    eligibility_changed: EligibilityChanged = _nothing
