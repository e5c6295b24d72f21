"""The legal-entity registry connector. Production asks the market-regulation registry whether a person is an
entity's legal representative; the dev connector answers from a seeded table holding keyed hashes only."""

from __future__ import annotations

import hmac
from typing import Literal, Protocol

from app_backend.enterprises.repository import DevLegalEntityRepository
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection

Verdict = Literal["ok", "unknown", "name-mismatch", "not-representative", "inactive"]


class LegalEntityRegistry(Protocol):
    async def verify_representative(
        self, conn: Connection, uscc: str, name: str, id_number: str
    ) -> Verdict: ...


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).replace("（", "(").replace("）", ")") == " ".join(b.split()).replace(
        "（", "("
    ).replace("）", ")")


class DevLegalEntityRegistry:
    def __init__(self, cipher: FieldCipher, repository: DevLegalEntityRepository | None = None) -> None:
        self._cipher = cipher
        self._repo = repository or DevLegalEntityRepository()

    def _rep_hash(self, id_number: str) -> bytes:
        return self._cipher.lookup_hash("registry.legal_rep", id_number)

    async def verify_representative(self, conn: Connection, uscc: str, name: str, id_number: str) -> Verdict:
        row = await self._repo.get(conn, uscc)
        if row is None:
            return "unknown"
        if row.status != "active":
            return "inactive"
        if not _same_name(row.name, name):
            return "name-mismatch"
        if not hmac.compare_digest(row.legal_rep_id_hash, self._rep_hash(id_number)):
            return "not-representative"
        return "ok"

    async def enrol(
        self, conn: Connection, uscc: str, name: str, legal_rep_id_number: str, status: str = "active"
    ) -> None:
        await self._repo.upsert(conn, uscc, name, self._rep_hash(legal_rep_id_number), status)
