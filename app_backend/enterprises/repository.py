"""All SQL for enterprises, their members and credit-code overrides."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_ENTERPRISE = "id, uscc, name, standing, checksum_override, created_at"


class EnterpriseRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    uscc: str
    name: str
    standing: str
    checksum_override: bool
    created_at: dt.datetime


class MemberRow(msgspec.Struct, frozen=True):
    """A member with the resident's encrypted name and phone, which the service masks."""

    resident_id: uuid.UUID
    role: str
    added_at: dt.datetime
    name_enc: bytes | None
    phone_enc: bytes


class LinkedEnterpriseRow(msgspec.Struct, frozen=True):
    """An enterprise a resident belongs to, and their role in it."""

    id: uuid.UUID
    name: str
    uscc: str
    role: str


class LegalEntityRow(msgspec.Struct, frozen=True):
    """The dev legal-entity registry's entry: the representative is known by a keyed hash only."""

    uscc: str
    name: str
    legal_rep_id_hash: bytes
    status: str


class EnterpriseRepository:
    async def create(
        self, conn: Connection, uscc: str, name: str, override: bool, creator: uuid.UUID
    ) -> EnterpriseRow | None:
        """None when an enterprise with this credit code exists."""
        return await fetch_row(
            conn,
            EnterpriseRow,
            f"""INSERT INTO enterprises.enterprises (uscc, name, checksum_override, created_by)
               VALUES ($1, $2, $3, $4) ON CONFLICT (uscc) DO NOTHING
               RETURNING {_ENTERPRISE}""",
            uscc,
            name,
            override,
            creator,
        )

    async def get(self, conn: Connection, enterprise_id: uuid.UUID) -> EnterpriseRow | None:
        return await fetch_row(
            conn,
            EnterpriseRow,
            f"SELECT {_ENTERPRISE} FROM enterprises.enterprises WHERE id = $1",
            enterprise_id,
        )

    async def member_role(
        self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID
    ) -> str | None:
        role: str | None = await conn.fetchval(
            "SELECT role FROM enterprises.enterprise_members WHERE enterprise_id = $1 AND resident_id = $2",
            enterprise_id,
            resident_id,
        )
        return role

    async def add_member(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        resident_id: uuid.UUID,
        role: str,
        added_by: uuid.UUID | None,
    ) -> bool:
        result: str = await conn.execute(
            """INSERT INTO enterprises.enterprise_members (enterprise_id, resident_id, role, added_by)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            enterprise_id,
            resident_id,
            role,
            added_by,
        )
        return result.endswith(" 1")

    async def lock_members(self, conn: Connection, enterprise_id: uuid.UUID) -> dict[uuid.UUID, str]:
        """Every membership change takes all of the enterprise's member rows in one order first, so changes
        serialise (no lost last admin, no acting on a role just removed) and cannot deadlock each other."""
        rows = await conn.fetch(
            """SELECT resident_id, role FROM enterprises.enterprise_members WHERE enterprise_id = $1
               ORDER BY resident_id FOR UPDATE""",
            enterprise_id,
        )
        return {r["resident_id"]: r["role"] for r in rows}

    async def remove_member(self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID) -> None:
        await conn.execute(
            "DELETE FROM enterprises.enterprise_members WHERE enterprise_id = $1 AND resident_id = $2",
            enterprise_id,
            resident_id,
        )

    async def members(self, conn: Connection, enterprise_id: uuid.UUID) -> list[MemberRow]:
        return await fetch_rows(
            conn,
            MemberRow,
            """SELECT m.resident_id, m.role, m.added_at, r.name_enc, r.phone_enc
               FROM enterprises.enterprise_members m JOIN identity.residents r ON r.id = m.resident_id
               WHERE m.enterprise_id = $1 ORDER BY m.added_at""",
            enterprise_id,
        )

    async def linked(self, conn: Connection, resident_id: uuid.UUID) -> list[LinkedEnterpriseRow]:
        return await fetch_rows(
            conn,
            LinkedEnterpriseRow,
            """SELECT e.id, e.name, e.uscc, m.role FROM enterprises.enterprise_members m
               JOIN enterprises.enterprises e ON e.id = m.enterprise_id
               WHERE m.resident_id = $1 ORDER BY e.name""",
            resident_id,
        )

    async def has_override(self, conn: Connection, uscc: str) -> bool:
        return bool(await conn.fetchval("SELECT 1 FROM enterprises.uscc_overrides WHERE uscc = $1", uscc))

    async def add_override(self, conn: Connection, uscc: str, reason: str, granted_by: str) -> bool:
        result: str = await conn.execute(
            """INSERT INTO enterprises.uscc_overrides (uscc, reason, granted_by) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING""",
            uscc,
            reason,
            granted_by,
        )
        return result.endswith(" 1")


class DevLegalEntityRepository:
    async def get(self, conn: Connection, uscc: str) -> LegalEntityRow | None:
        return await fetch_row(
            conn,
            LegalEntityRow,
            "SELECT uscc, name, legal_rep_id_hash, status FROM enterprises.dev_legal_entity_registry WHERE uscc = $1",
            uscc,
        )

    async def upsert(self, conn: Connection, uscc: str, name: str, rep_hash: bytes, status: str) -> None:
        await conn.execute(
            """INSERT INTO enterprises.dev_legal_entity_registry (uscc, name, legal_rep_id_hash, status)
               VALUES ($1, $2, $3, $4) ON CONFLICT (uscc) DO UPDATE
               SET name = EXCLUDED.name, legal_rep_id_hash = EXCLUDED.legal_rep_id_hash,
                   status = EXCLUDED.status""",
            uscc,
            name,
            rep_hash,
            status,
        )
