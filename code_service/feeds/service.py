"""Department status feeds: health colour and medical insurance, stored in PostgreSQL, reaching online
verification at once (the holder's cached facts are dropped after commit) and offline gates at their next
deny-list sync (a worse status ends the holder's device credentials, which carry the old one). A holder whose scan
answers differently now is told (CodeStatusNotices), once per feed request whatever a bulk feed changed in
between."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from app_backend.identity.service import ResidentDirectory
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import invalid_field
from code_service.auth import Scanner
from code_service.codes.service import CodeStatusNotices, FactsService, IssuingService
from code_service.feeds.repository import FeedRepository
from code_service.feeds.schemas import FeedReceipt, HealthStatus, InsuranceStatus

_SEVERITY = {"": 0, "green": 0, "yellow": 1, "red": 2}


class FeedService:
    def __init__(
        self,
        residents: ResidentDirectory,
        facts: FactsService,
        issuing: IssuingService,
        notices: CodeStatusNotices | None = None,
    ) -> None:
        self._residents = residents
        self._facts = facts
        self._issuing = issuing
        self._notices = notices or CodeStatusNotices()
        self._repo = FeedRepository()

    def _keys(self, items: Sequence[HealthStatus | InsuranceStatus], many: bool) -> list[bytes]:
        keys = []
        for i, item in enumerate(items):
            try:
                keys.append(self._residents.person_key(item.id_number))
            except ValueError as exc:
                field = f"items[{i}].id_number" if many else "id_number"
                raise invalid_field(field, str(exc)) from None
        return keys

    async def put_health(
        self, conn: Connection, scanner: Scanner, items: Sequence[HealthStatus], many: bool
    ) -> tuple[FeedReceipt, list[uuid.UUID]]:
        changed, touched = 0, []
        before: dict[uuid.UUID, str] = {}  # each holder's colour before this request's first change
        for key, item in zip(self._keys(items, many), items, strict=True):
            previous = await self._repo.upsert_health(conn, key, item.colour, scanner.organisation_id)
            if previous is None:
                continue
            changed += 1
            resident = await self._residents.resident_of_person(conn, key)
            if resident is not None:
                touched.append(resident)
                before.setdefault(resident, previous)
                if _SEVERITY[item.colour] > _SEVERITY[previous]:
                    await self._issuing.supersede_devices(conn, resident, f"health status now {item.colour}")
        for resident, colour in before.items():
            await self._notices.health_fed(conn, resident, colour)
        return FeedReceipt(accepted=len(items), changed=changed, holders_with_accounts=len(touched)), touched

    async def put_insurance(
        self, conn: Connection, scanner: Scanner, items: Sequence[InsuranceStatus], many: bool
    ) -> tuple[FeedReceipt, list[uuid.UUID]]:
        changed, touched = 0, []
        before: dict[uuid.UUID, bool] = {}
        for key, item in zip(self._keys(items, many), items, strict=True):
            previous = await self._repo.upsert_insurance(
                conn, key, item.insured, item.scheme, scanner.organisation_id
            )
            if previous is None:
                continue
            changed += 1
            resident = await self._residents.resident_of_person(conn, key)
            if resident is not None:
                touched.append(resident)
                before.setdefault(resident, previous)
                if previous and not item.insured:
                    await self._issuing.supersede_devices(conn, resident, "insurance ended")
        for resident, insured in before.items():
            await self._notices.insurance_fed(conn, resident, insured)
        return FeedReceipt(accepted=len(items), changed=changed, holders_with_accounts=len(touched)), touched

    async def after_commit(self, conn: Connection, residents: list[uuid.UUID]) -> None:
        for resident in residents:
            await self._facts.invalidate_resident(conn, resident)
