"""All SQL for residents, sessions and refresh tokens."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from app_backend.kernel.db import Connection, fetch_row


class AccountRow(msgspec.Struct, frozen=True):
    """What logging in needs of a resident: who, how verified, whether they may log in."""

    id: uuid.UUID
    level: int
    status: str


class ResidentRow(msgspec.Struct, frozen=True):
    """A resident's record; the personal fields stay encrypted (FieldCipher) until a rule decrypts them."""

    id: uuid.UUID
    phone_enc: bytes
    name_enc: bytes | None
    id_number_enc: bytes | None
    level: int
    status: str
    created_at: dt.datetime
    real_name_verified_at: dt.datetime | None
    face_verified_at: dt.datetime | None


class RegionRow(msgspec.Struct, frozen=True):
    """The region a resident chose (None: none yet, which is the city)."""

    region: str | None


class SpentRefreshRow(msgspec.Struct, frozen=True):
    """A refresh token just spent: the session it renews and the resident's current level."""

    session_id: uuid.UUID
    resident_id: uuid.UUID
    level: int


class OpenedSessionRow(msgspec.Struct, frozen=True):
    """A resident's level and status, and the session opened for them (None unless the account is active)."""

    level: int
    status: str
    session_id: uuid.UUID | None


class RefreshTokenRow(msgspec.Struct, frozen=True):
    """A refresh token as stored, spent or not, with its session's revocation."""

    session_id: uuid.UUID
    used_at: dt.datetime | None
    resident_id: uuid.UUID
    revoked_at: dt.datetime | None


class ResidentRepository:
    async def get_or_create_by_phone(
        self, conn: Connection, phone_hash: bytes, phone_enc: bytes
    ) -> tuple[AccountRow, bool]:
        created = await fetch_row(
            conn,
            AccountRow,
            """INSERT INTO identity.residents (phone_hash, phone_enc) VALUES ($1, $2)
               ON CONFLICT (phone_hash) DO NOTHING RETURNING id, level, status""",
            phone_hash,
            phone_enc,
        )
        if created is not None:
            return created, True
        existing = await self.find_by_phone_hash(conn, phone_hash)
        # The conflict that skipped the insert is a row that exists: residents are never deleted.
        assert existing is not None
        return existing, False

    async def get(self, conn: Connection, resident_id: uuid.UUID) -> ResidentRow | None:
        return await fetch_row(
            conn,
            ResidentRow,
            """SELECT id, phone_enc, name_enc, id_number_enc, level, status, created_at,
                      real_name_verified_at, face_verified_at
               FROM identity.residents WHERE id = $1""",
            resident_id,
        )

    async def find_by_phone_hash(self, conn: Connection, phone_hash: bytes) -> AccountRow | None:
        return await fetch_row(
            conn,
            AccountRow,
            "SELECT id, level, status FROM identity.residents WHERE phone_hash = $1",
            phone_hash,
        )

    async def id_number_hash(self, conn: Connection, resident_id: uuid.UUID) -> bytes | None:
        value: bytes | None = await conn.fetchval(
            "SELECT id_number_hash FROM identity.residents WHERE id = $1", resident_id
        )
        return value

    async def find_by_id_number_hash(self, conn: Connection, id_hash: bytes) -> uuid.UUID | None:
        value: uuid.UUID | None = await conn.fetchval(
            "SELECT id FROM identity.residents WHERE id_number_hash = $1", id_hash
        )
        return value

    async def region(self, conn: Connection, resident_id: uuid.UUID) -> RegionRow | None:
        return await fetch_row(
            conn, RegionRow, "SELECT region FROM identity.residents WHERE id = $1", resident_id
        )

    async def set_region(self, conn: Connection, resident_id: uuid.UUID, region: str) -> bool:
        result: str = await conn.execute(
            "UPDATE identity.residents SET region = $2 WHERE id = $1", resident_id, region
        )
        return result.endswith(" 1")

    async def active_ids(
        self, conn: Connection, joined_by: dt.datetime, after: uuid.UUID | None, limit: int
    ) -> list[uuid.UUID]:
        """Every active resident whose account existed at `joined_by`, in id order after `after` (the city)."""
        rows = await conn.fetch(
            """SELECT id FROM identity.residents
               WHERE status = 'active' AND created_at <= $1 AND ($2::uuid IS NULL OR id > $2)
               ORDER BY id LIMIT $3""",
            joined_by,
            after,
            limit,
        )
        return [r["id"] for r in rows]

    async def active_among(self, conn: Connection, resident_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Those of these residents whose account is active, in id order."""
        rows = await conn.fetch(
            "SELECT id FROM identity.residents WHERE id = ANY($1::uuid[]) AND status = 'active' ORDER BY id",
            resident_ids,
        )
        return [r["id"] for r in rows]

    async def active_ids_in_region(
        self, conn: Connection, region: str, joined_by: dt.datetime, after: uuid.UUID | None, limit: int
    ) -> list[uuid.UUID]:
        """The same, of the residents who chose `region` (walks residents_region_idx in id order)."""
        rows = await conn.fetch(
            """SELECT id FROM identity.residents
               WHERE region = $1 AND status = 'active' AND created_at <= $2 AND ($3::uuid IS NULL OR id > $3)
               ORDER BY region, id LIMIT $4""",
            region,
            joined_by,
            after,
            limit,
        )
        return [r["id"] for r in rows]

    async def count_active(self, conn: Connection, region: str | None, joined_by: dt.datetime) -> int:
        """How many `active_ids` (region None) or `active_ids_in_region` would walk."""
        count: int = await conn.fetchval(
            """SELECT count(*) FROM identity.residents
               WHERE ($1::text IS NULL OR region = $1) AND status = 'active' AND created_at <= $2""",
            region,
            joined_by,
        )
        return count

    async def set_real_name(
        self, conn: Connection, resident_id: uuid.UUID, name_enc: bytes, id_enc: bytes, id_hash: bytes
    ) -> bool:
        """False when this resident is already real-named; raises UniqueViolationError when the number is taken."""
        result: str = await conn.execute(
            """UPDATE identity.residents
               SET name_enc = $2, id_number_enc = $3, id_number_hash = $4, level = GREATEST(level, 2),
                   real_name_verified_at = now()
               WHERE id = $1 AND id_number_hash IS NULL""",
            resident_id,
            name_enc,
            id_enc,
            id_hash,
        )
        return result.endswith(" 1")

    async def lock_person(self, conn: Connection, id_hash: bytes) -> None:
        """Serialises, until the transaction ends, everything that moves this person's identity between accounts."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(('x' || encode(substr($1::bytea, 1, 8), 'hex'))::bit(64)::bigint)",
            id_hash,
        )

    async def detach_identity(self, conn: Connection, resident_id: uuid.UUID) -> bytes | None:
        """The account keeps its phone login and nothing of the person: L1 again. Returns its phone (encrypted)."""
        value: bytes | None = await conn.fetchval(
            """UPDATE identity.residents
               SET name_enc = NULL, id_number_enc = NULL, id_number_hash = NULL, level = 1,
                   real_name_verified_at = NULL, face_verified_at = NULL
               WHERE id = $1 RETURNING phone_enc""",
            resident_id,
        )
        return value

    async def claim_identity(
        self, conn: Connection, resident_id: uuid.UUID, name_enc: bytes, id_enc: bytes, id_hash: bytes
    ) -> bool:
        """L3 with this identity; False when the account holds another one. Raises UniqueViolationError when
        another account holds this one."""
        result: str = await conn.execute(
            """UPDATE identity.residents
               SET name_enc = $2, id_number_enc = $3, id_number_hash = $4, level = 3,
                   real_name_verified_at = coalesce(real_name_verified_at, now()), face_verified_at = now()
               WHERE id = $1 AND (id_number_hash IS NULL OR id_number_hash = $4)""",
            resident_id,
            name_enc,
            id_enc,
            id_hash,
        )
        return result.endswith(" 1")

    async def set_status(self, conn: Connection, resident_id: uuid.UUID, status: str) -> str | None:
        """The status before (None: no such resident). The row is locked in the UPDATE's own source, so of two
        concurrent changes to one status the second reads the first's: each change is seen once."""
        previous: str | None = await conn.fetchval(
            """WITH old AS (SELECT id, status FROM identity.residents WHERE id = $1 FOR UPDATE)
               UPDATE identity.residents r SET status = $2 FROM old WHERE r.id = old.id
               RETURNING old.status""",
            resident_id,
            status,
        )
        return previous

    async def staff_roles(self, conn: Connection, resident_id: uuid.UUID) -> set[str]:
        rows = await conn.fetch("SELECT role FROM identity.staff_roles WHERE resident_id = $1", resident_id)
        return {r["role"] for r in rows}

    async def grant_role(self, conn: Connection, resident_id: uuid.UUID, role: str, granted_by: str) -> None:
        await conn.execute(
            """INSERT INTO identity.staff_roles (resident_id, role, granted_by) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING""",
            resident_id,
            role,
            granted_by,
        )

    async def revoke_role(self, conn: Connection, resident_id: uuid.UUID, role: str) -> bool:
        result: str = await conn.execute(
            "DELETE FROM identity.staff_roles WHERE resident_id = $1 AND role = $2", resident_id, role
        )
        return result.endswith(" 1")


class DevRepository:
    """Dev only (the load tests' fixtures): many real-named residents, logged in, in two statements."""

    async def insert_real_named(
        self, conn: Connection, people: list[tuple[bytes, bytes, bytes, bytes, bytes]]
    ) -> dict[bytes, uuid.UUID]:
        """(phone_enc, phone_hash, name_enc, id_number_enc, id_number_hash) each; a phone or person already
        held is skipped. Returns the new residents by phone hash."""
        columns = list(zip(*people, strict=True))
        records = await conn.fetch(
            """INSERT INTO identity.residents
                   (phone_enc, phone_hash, name_enc, id_number_enc, id_number_hash, level, real_name_verified_at)
               SELECT p, h, n, i, ih, 2, now()
               FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[]) AS u(p, h, n, i, ih)
               ON CONFLICT DO NOTHING
               RETURNING id, phone_hash""",
            *[list(c) for c in columns],
        )
        return {bytes(r["phone_hash"]): r["id"] for r in records}

    async def open_sessions(
        self, conn: Connection, residents: list[uuid.UUID], token_hashes: list[bytes], max_age: int, ttl: int
    ) -> dict[uuid.UUID, uuid.UUID]:
        """A session with its first refresh token for each resident; the sessions by resident."""
        records = await conn.fetch(
            """WITH s AS (
                   INSERT INTO identity.sessions (resident_id, expires_at)
                   SELECT r, now() + make_interval(secs => $3) FROM unnest($1::uuid[]) AS r
                   RETURNING id, resident_id
               ), t AS (
                   INSERT INTO identity.refresh_tokens (token_hash, session_id, expires_at)
                   SELECT u.h, s.id, now() + make_interval(secs => $4)
                   FROM s JOIN unnest($1::uuid[], $2::bytea[]) AS u(r, h) ON u.r = s.resident_id
               )
               SELECT id, resident_id FROM s""",
            residents,
            token_hashes,
            max_age,
            ttl,
        )
        return {r["resident_id"]: r["id"] for r in records}


class SessionRepository:
    async def create(self, conn: Connection, resident_id: uuid.UUID, max_age: int) -> uuid.UUID:
        session_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO identity.sessions (resident_id, expires_at)
               VALUES ($1, now() + make_interval(secs => $2)) RETURNING id""",
            resident_id,
            max_age,
        )
        return session_id

    async def open_for_active(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        max_age: int,
        token_hash: bytes,
        ttl: int,
        origin: str | None = None,
    ) -> OpenedSessionRow | None:
        """In one statement (one round trip): the resident's level and status and, when the account is active, a
        new session (tagged with what opened it) with its first refresh token; None when there is no such
        resident."""
        return await fetch_row(
            conn,
            OpenedSessionRow,
            """WITH r AS (
                   SELECT id, level, status FROM identity.residents WHERE id = $1
               ), s AS (
                   INSERT INTO identity.sessions (resident_id, expires_at, origin)
                   SELECT id, now() + make_interval(secs => $2), $5 FROM r WHERE status = 'active'
                   RETURNING id
               ), t AS (
                   INSERT INTO identity.refresh_tokens (token_hash, session_id, expires_at)
                   SELECT $3, id, now() + make_interval(secs => $4) FROM s
               )
               SELECT r.level, r.status, s.id AS session_id FROM r LEFT JOIN s ON true""",
            resident_id,
            max_age,
            token_hash,
            ttl,
            origin,
        )

    async def add_refresh_token(
        self, conn: Connection, session_id: uuid.UUID, token_hash: bytes, ttl: int
    ) -> None:
        await conn.execute(
            """INSERT INTO identity.refresh_tokens (token_hash, session_id, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))""",
            token_hash,
            session_id,
            ttl,
        )

    async def use_refresh_token(self, conn: Connection, token_hash: bytes) -> SpentRefreshRow | None:
        """Compare-and-set: exactly one caller can spend a refresh token."""
        return await fetch_row(
            conn,
            SpentRefreshRow,
            """UPDATE identity.refresh_tokens rt SET used_at = now()
               FROM identity.sessions s JOIN identity.residents r ON r.id = s.resident_id
               WHERE rt.token_hash = $1 AND rt.used_at IS NULL AND rt.expires_at > now()
                 AND s.id = rt.session_id AND s.revoked_at IS NULL AND s.expires_at > now()
                 AND r.status = 'active'
               RETURNING rt.session_id, s.resident_id, r.level""",
            token_hash,
        )

    async def find_refresh_token(self, conn: Connection, token_hash: bytes) -> RefreshTokenRow | None:
        return await fetch_row(
            conn,
            RefreshTokenRow,
            """SELECT rt.session_id, rt.used_at, s.resident_id, s.revoked_at
               FROM identity.refresh_tokens rt JOIN identity.sessions s ON s.id = rt.session_id
               WHERE rt.token_hash = $1""",
            token_hash,
        )

    async def revoke(self, conn: Connection, session_id: uuid.UUID, reason: str) -> None:
        await conn.execute(
            """UPDATE identity.sessions SET revoked_at = now(), revoked_reason = $2
               WHERE id = $1 AND revoked_at IS NULL""",
            session_id,
            reason,
        )

    async def revoke_all_for_resident(
        self, conn: Connection, resident_id: uuid.UUID, reason: str
    ) -> list[uuid.UUID]:
        rows = await conn.fetch(
            """UPDATE identity.sessions SET revoked_at = now(), revoked_reason = $2
               WHERE resident_id = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING id""",
            resident_id,
            reason,
        )
        return [r["id"] for r in rows]

    async def revoke_of_origin(
        self, conn: Connection, resident_id: uuid.UUID, origin: str, reason: str
    ) -> list[uuid.UUID]:
        """Ends the resident's live sessions this origin opened; their ids."""
        rows = await conn.fetch(
            """UPDATE identity.sessions SET revoked_at = now(), revoked_reason = $3
               WHERE resident_id = $1 AND origin = $2 AND revoked_at IS NULL AND expires_at > now()
               RETURNING id""",
            resident_id,
            origin,
            reason,
        )
        return [r["id"] for r in rows]

    async def started_at(self, conn: Connection, session_id: uuid.UUID) -> dt.datetime | None:
        value: dt.datetime | None = await conn.fetchval(
            "SELECT created_at FROM identity.sessions WHERE id = $1", session_id
        )
        return value

    async def delete_expired(self, conn: Connection, before: dt.datetime) -> int:
        result: str = await conn.execute("DELETE FROM identity.refresh_tokens WHERE expires_at < $1", before)
        return int(result.split()[-1])


class DevRegistryRepository:
    async def person_name_hash(self, conn: Connection, id_hash: bytes) -> bytes | None:
        value: bytes | None = await conn.fetchval(
            "SELECT name_hash FROM identity.dev_population_registry WHERE id_number_hash = $1", id_hash
        )
        return value

    async def upsert_person(self, conn: Connection, id_hash: bytes, name_hash: bytes) -> None:
        await conn.execute(
            """INSERT INTO identity.dev_population_registry (id_number_hash, name_hash) VALUES ($1, $2)
               ON CONFLICT (id_number_hash) DO UPDATE SET name_hash = EXCLUDED.name_hash""",
            id_hash,
            name_hash,
        )

    async def subscriber_of(self, conn: Connection, phone_hash: bytes) -> bytes | None:
        value: bytes | None = await conn.fetchval(
            "SELECT id_number_hash FROM identity.dev_carrier_subscribers WHERE phone_hash = $1", phone_hash
        )
        return value

    async def upsert_subscriber(self, conn: Connection, phone_hash: bytes, id_hash: bytes) -> None:
        await conn.execute(
            """INSERT INTO identity.dev_carrier_subscribers (phone_hash, id_number_hash) VALUES ($1, $2)
               ON CONFLICT (phone_hash) DO UPDATE SET id_number_hash = EXCLUDED.id_number_hash""",
            phone_hash,
            id_hash,
        )


UniqueViolation = asyncpg.UniqueViolationError
