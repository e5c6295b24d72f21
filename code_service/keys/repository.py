"""All SQL for platform signing keys."""

from __future__ import annotations

import datetime as dt

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_KEY_LOCK = 0x7A746B  # "tzk": staging and switching keys serialise on it, so two workers never stage two keys

_COLUMNS = "kid, private_enc, public_point, created_at, signs_from, signs_until, retire_at"


class KeyRow(msgspec.Struct, frozen=True):
    """A signing key and its schedule (code_service.keys.service.KeySchedule); the private half is AES-GCM
    ciphertext (FieldCipher)."""

    kid: str
    private_enc: bytes
    public_point: bytes
    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None
    retire_at: dt.datetime | None


class KeyRepository:
    async def lock(self, conn: Connection) -> None:
        """Held until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)

    async def insert(
        self,
        conn: Connection,
        kid: str,
        private_enc: bytes,
        public_point: bytes,
        created_at: dt.datetime,
        signs_from: dt.datetime,
    ) -> KeyRow:
        row = await fetch_row(
            conn,
            KeyRow,
            f"""INSERT INTO codes.signing_keys (kid, private_enc, public_point, created_at, signs_from)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
            kid,
            private_enc,
            public_point,
            created_at,
            signs_from,
        )
        assert row is not None  # RETURNING always answers
        return row

    async def live(self, conn: Connection, at: dt.datetime) -> list[KeyRow]:
        """Every key not yet retired at `at`: published, staged, signing or retiring."""
        return await fetch_rows(
            conn,
            KeyRow,
            f"""SELECT {_COLUMNS} FROM codes.signing_keys WHERE retire_at IS NULL OR retire_at > $1
                ORDER BY signs_from DESC, created_at DESC""",
            at,
        )

    async def end(
        self, conn: Connection, kid: str, signs_until: dt.datetime, retire_at: dt.datetime
    ) -> KeyRow | None:
        return await fetch_row(
            conn,
            KeyRow,
            f"""UPDATE codes.signing_keys SET signs_until = $2, retire_at = $3 WHERE kid = $1
                RETURNING {_COLUMNS}""",
            kid,
            signs_until,
            retire_at,
        )
