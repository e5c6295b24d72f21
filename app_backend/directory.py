"""The identity side's answers to code_service's questions (the `Directory` port)."""

from __future__ import annotations

import uuid
from typing import Any

from app_backend.enterprises.repository import EnterpriseRepository
from app_backend.identity.repository import ResidentRepository
from app_backend.identity.validators import InvalidIdentifier, validate_id_number
from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.settings import Settings
from app_backend.organisations.repository import OrganisationRepository
from code_service.ports import EnterpriseFacts
from payments.ports import Payee


class OrganisationPayees:
    """Who can receive money: departments and merchants registered as organisations."""

    def __init__(self) -> None:
        self._repo = OrganisationRepository()

    async def payee(self, conn: Any, payee_id: uuid.UUID) -> Payee | None:
        row = await self._repo.get(conn, payee_id)
        if (
            row is None
            or row["status"] != "active"
            or row["kind"] not in ("department", "merchant", "verifier_operator")
        ):
            return None
        return Payee(id=row["id"], name=row["name"], kind=row["kind"])


class IdentityDirectory:
    def __init__(self, cipher: FieldCipher, settings: Settings) -> None:
        self._cipher = cipher
        self._settings = settings
        self._residents = ResidentRepository()
        self._enterprises = EnterpriseRepository()

    async def masked_name(self, conn: Any, resident_id: uuid.UUID) -> str | None:
        row = await self._residents.get(conn, resident_id)
        return None if row is None else self.mask_name(row["name_enc"])

    def mask_name(self, name_enc: bytes | None) -> str | None:
        if name_enc is None:
            return None
        rule = self._settings.mask_name
        return mask(self._cipher.decrypt("resident.name", name_enc), rule.head, rule.tail)

    async def resident_active(self, conn: Any, resident_id: uuid.UUID) -> bool:
        row = await self._residents.get(conn, resident_id)
        return row is not None and row["status"] == "active"

    async def person_key_of(self, conn: Any, resident_id: uuid.UUID) -> bytes | None:
        value = await self._residents.id_number_hash(conn, resident_id)
        return bytes(value) if value is not None else None

    async def resident_of_person(self, conn: Any, person_key: bytes) -> uuid.UUID | None:
        return await self._residents.find_by_id_number_hash(conn, person_key)

    def person_key(self, id_number: str) -> bytes:
        try:
            normalised = validate_id_number(id_number)
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from None
        return self._cipher.lookup_hash("resident.id_number", normalised)

    async def enterprise_of_member(
        self, conn: Any, enterprise_id: uuid.UUID, resident_id: uuid.UUID
    ) -> EnterpriseFacts | None:
        if await self._enterprises.member_role(conn, enterprise_id, resident_id) is None:
            return None
        return await self.enterprise(conn, enterprise_id)

    async def enterprise(self, conn: Any, enterprise_id: uuid.UUID) -> EnterpriseFacts | None:
        row = await self._enterprises.get(conn, enterprise_id)
        if row is None:
            return None
        return EnterpriseFacts(id=row["id"], name=row["name"], uscc=row["uscc"], standing=row["standing"])
