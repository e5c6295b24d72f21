"""The gates' side answering the fare side's questions (payments' transit ports), with code_service's repositories
and its deny list. payments never imports code_service: the composition root wires these in."""

from __future__ import annotations

import uuid
from typing import Any

from code_service.codes.repository import SubjectRepository
from code_service.gates.repository import TapRepository
from code_service.gates.service import DenyListService
from payments.ports import GateTap


class GateTaps:
    """TapSource and RiderDirectory: uploaded taps, and the resident behind a code subject."""

    def __init__(self) -> None:
        self._taps = TapRepository()
        self._subjects = SubjectRepository()

    async def untaken(self, conn: Any, limit: int) -> list[GateTap]:
        return [
            GateTap(
                organisation_id=r["organisation_id"],
                tap_id=r["tap_id"],
                gate_id=r["gate_id"],
                line=r["line"],
                station=r["station"],
                direction=r["direction"],
                tapped_at=r["tapped_at"],
                subject=bytes(r["subject"]) if r["subject"] is not None else None,
            )
            for r in await self._taps.untaken(conn, limit)
        ]

    async def mark_taken(self, conn: Any, keys: list[tuple[uuid.UUID, str]]) -> None:
        await self._taps.mark_taken(conn, keys)

    async def resident_of_subject(self, conn: Any, subject: bytes) -> uuid.UUID | None:
        row = await self._subjects.get(conn, subject)
        if row is None or row["kind"] != "resident":
            return None
        ref: uuid.UUID = row["ref"]
        return ref


class GateDebtors:
    """DebtorList: riders in debt on the gates' deny list (kind debtor, keyed by the code subject)."""

    def __init__(self, deny: DenyListService) -> None:
        self._deny = deny
        self._subjects = SubjectRepository()

    async def deny(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None:
        subject = await self._subjects.of_resident(conn, resident_id)
        if subject is not None:  # no subject: no code was ever issued, so no gate can be shown one
            await self._deny.deny(conn, "debtor", [subject], reason)

    async def allow(self, conn: Any, resident_id: uuid.UUID, reason: str) -> None:
        subject = await self._subjects.of_resident(conn, resident_id)
        if subject is not None:
            await self._deny.allow(conn, "debtor", [subject], reason)
