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


class InvitationRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    phone_masked: str
    role: str
    status: str
    invited_by: uuid.UUID
    invited_at: dt.datetime
    expires_at: dt.datetime
    answered_at: dt.datetime | None


class OpenInvitationRow(msgspec.Struct, frozen=True):
    """An open invitation addressed to a resident's phone, with its enterprise."""

    id: uuid.UUID
    enterprise_id: uuid.UUID
    enterprise_name: str
    uscc: str
    role: str
    invited_at: dt.datetime
    expires_at: dt.datetime


_INVITATION = "id, enterprise_id, phone_masked, role, status, invited_by, invited_at, expires_at, answered_at"


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


class InvitationRepository:
    async def invite(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        phone_hash: bytes,
        phone_masked: str,
        role: str,
        invited_by: uuid.UUID,
        now: dt.datetime,
        expires_at: dt.datetime,
    ) -> InvitationRow:
        """A new invitation, or the open one to this phone renewed (new role, inviter and expiry). One that
        expired unanswered is closed first, so the renewal starts afresh."""
        await conn.execute(
            """UPDATE enterprises.member_invitations SET status = 'expired'
               WHERE enterprise_id = $1 AND phone_hash = $2 AND status = 'pending' AND expires_at <= $3""",
            enterprise_id,
            phone_hash,
            now,
        )
        row = await fetch_row(
            conn,
            InvitationRow,
            f"""INSERT INTO enterprises.member_invitations
                   (enterprise_id, phone_hash, phone_masked, role, invited_by, invited_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (enterprise_id, phone_hash) WHERE status = 'pending' DO UPDATE
               SET role = EXCLUDED.role, invited_by = EXCLUDED.invited_by, invited_at = EXCLUDED.invited_at,
                   expires_at = EXCLUDED.expires_at
               RETURNING {_INVITATION}""",
            enterprise_id,
            phone_hash,
            phone_masked,
            role,
            invited_by,
            now,
            expires_at,
        )
        assert row is not None  # an INSERT ... ON CONFLICT DO UPDATE always returns its row
        return row

    async def of_enterprise(self, conn: Connection, enterprise_id: uuid.UUID) -> list[InvitationRow]:
        return await fetch_rows(
            conn,
            InvitationRow,
            f"""SELECT {_INVITATION} FROM enterprises.member_invitations WHERE enterprise_id = $1
               ORDER BY invited_at DESC LIMIT 200""",
            enterprise_id,
        )

    async def revoke(
        self, conn: Connection, enterprise_id: uuid.UUID, invitation_id: uuid.UUID, now: dt.datetime
    ) -> bool:
        result: str = await conn.execute(
            """UPDATE enterprises.member_invitations SET status = 'revoked', answered_at = $3
               WHERE id = $1 AND enterprise_id = $2 AND status = 'pending'""",
            invitation_id,
            enterprise_id,
            now,
        )
        return result.endswith(" 1")

    async def open_for(
        self, conn: Connection, resident_id: uuid.UUID, now: dt.datetime
    ) -> list[OpenInvitationRow]:
        """The open invitations addressed to the phone the resident's account uses now."""
        return await fetch_rows(
            conn,
            OpenInvitationRow,
            """SELECT i.id, i.enterprise_id, e.name AS enterprise_name, e.uscc, i.role, i.invited_at, i.expires_at
               FROM identity.residents r
               JOIN enterprises.member_invitations i ON i.phone_hash = r.phone_hash
               JOIN enterprises.enterprises e ON e.id = i.enterprise_id
               WHERE r.id = $1 AND i.status = 'pending' AND i.expires_at > $2
               ORDER BY i.invited_at""",
            resident_id,
            now,
        )

    async def addressed_to(
        self, conn: Connection, invitation_id: uuid.UUID, resident_id: uuid.UUID
    ) -> InvitationRow | None:
        """The invitation if it is addressed to the phone the resident's account uses (None for anyone else's)."""
        return await fetch_row(
            conn,
            InvitationRow,
            f"""SELECT {", ".join("i." + c for c in _INVITATION.split(", "))}
               FROM enterprises.member_invitations i JOIN identity.residents r ON r.phone_hash = i.phone_hash
               WHERE i.id = $1 AND r.id = $2""",
            invitation_id,
            resident_id,
        )

    async def answer(
        self, conn: Connection, invitation_id: uuid.UUID, status: str, now: dt.datetime
    ) -> InvitationRow | None:
        """Closes the invitation if it is still open and unexpired (None otherwise: answered meanwhile)."""
        return await fetch_row(
            conn,
            InvitationRow,
            f"""UPDATE enterprises.member_invitations SET status = $2, answered_at = $3
               WHERE id = $1 AND status = 'pending' AND expires_at > $3 RETURNING {_INVITATION}""",
            invitation_id,
            status,
            now,
        )


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
