"""All SQL of the mini-program identities linked to residents."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_COLUMNS = "id, resident_id, channel, app_id, subject_enc, linked_at, last_login_at"


class IdentityRow(msgspec.Struct, frozen=True):
    """A linked channel identity; the subject stays encrypted until a rule needs it (a payment, a masked list)."""

    id: uuid.UUID
    resident_id: uuid.UUID
    channel: str
    app_id: str
    subject_enc: bytes
    linked_at: dt.datetime
    last_login_at: dt.datetime | None


class IdentityRepository:
    async def by_subject(self, conn: Connection, subject_hash: bytes) -> IdentityRow | None:
        return await fetch_row(
            conn,
            IdentityRow,
            f"SELECT {_COLUMNS} FROM mini_programs.identities WHERE subject_hash = $1",
            subject_hash,
        )

    async def by_id(self, conn: Connection, identity_id: uuid.UUID) -> IdentityRow | None:
        return await fetch_row(
            conn, IdentityRow, f"SELECT {_COLUMNS} FROM mini_programs.identities WHERE id = $1", identity_id
        )

    async def resident_of_union(self, conn: Connection, channel: str, union_hash: bytes) -> uuid.UUID | None:
        """The resident holding any identity of this person (WeChat unionid, Alipay user_id) on the channel."""
        value: uuid.UUID | None = await conn.fetchval(
            """SELECT resident_id FROM mini_programs.identities WHERE channel = $1 AND union_hash = $2
               ORDER BY linked_at LIMIT 1""",
            channel,
            union_hash,
        )
        return value

    async def in_app(
        self, conn: Connection, resident_id: uuid.UUID, channel: str, app_id: str
    ) -> IdentityRow | None:
        return await fetch_row(
            conn,
            IdentityRow,
            f"""SELECT {_COLUMNS} FROM mini_programs.identities
                WHERE resident_id = $1 AND channel = $2 AND app_id = $3""",
            resident_id,
            channel,
            app_id,
        )

    async def of_resident(self, conn: Connection, resident_id: uuid.UUID) -> list[IdentityRow]:
        return await fetch_rows(
            conn,
            IdentityRow,
            f"""SELECT {_COLUMNS} FROM mini_programs.identities WHERE resident_id = $1
                ORDER BY linked_at, id""",
            resident_id,
        )

    async def link(
        self,
        conn: Connection,
        *,
        resident_id: uuid.UUID,
        channel: str,
        app_id: str,
        subject_hash: bytes,
        subject_enc: bytes,
        union_hash: bytes | None,
        session_key_enc: bytes | None,
        logged_in: bool,
    ) -> IdentityRow | None:
        """The new link; None when the identity is linked already or the resident has one in this app (either
        unique constraint: the caller reads which)."""
        return await fetch_row(
            conn,
            IdentityRow,
            f"""INSERT INTO mini_programs.identities
                    (resident_id, channel, app_id, subject_hash, subject_enc, union_hash, session_key_enc,
                     last_login_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END)
                ON CONFLICT DO NOTHING
                RETURNING {_COLUMNS}""",
            resident_id,
            channel,
            app_id,
            subject_hash,
            subject_enc,
            union_hash,
            session_key_enc,
            logged_in,
        )

    async def log_in(
        self, conn: Connection, subject_hash: bytes, session_key_enc: bytes | None, union_hash: bytes | None
    ) -> IdentityRow | None:
        """A login through the identity with this subject, if it is linked (one statement: found and marked): the
        channel's newest session key replaces the last one. The caller's transaction undoes it if the login is
        refused."""
        return await fetch_row(
            conn,
            IdentityRow,
            f"""UPDATE mini_programs.identities
                SET last_login_at = now(), session_key_enc = COALESCE($2, session_key_enc),
                    union_hash = COALESCE($3, union_hash)
                WHERE subject_hash = $1
                RETURNING {_COLUMNS}""",
            subject_hash,
            session_key_enc,
            union_hash,
        )

    async def logged_in(
        self,
        conn: Connection,
        identity_id: uuid.UUID,
        session_key_enc: bytes | None,
        union_hash: bytes | None,
    ) -> None:
        """A login through this identity: the channel's newest session key replaces the last one."""
        await conn.execute(
            """UPDATE mini_programs.identities
               SET last_login_at = now(), session_key_enc = COALESCE($2, session_key_enc),
                   union_hash = COALESCE($3, union_hash)
               WHERE id = $1""",
            identity_id,
            session_key_enc,
            union_hash,
        )

    async def unlink(
        self, conn: Connection, identity_id: uuid.UUID, resident_id: uuid.UUID
    ) -> IdentityRow | None:
        return await fetch_row(
            conn,
            IdentityRow,
            f"""DELETE FROM mini_programs.identities WHERE id = $1 AND resident_id = $2
                RETURNING {_COLUMNS}""",
            identity_id,
            resident_id,
        )
