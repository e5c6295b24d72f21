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

    async def published_at(self, conn: Connection, kid: str, at: dt.datetime) -> KeyRow | None:
        """The key `kid` if it was published at `at` and was not withdrawn (a withdrawn key retires as it stops
        signing; a handed-over one a day later)."""
        return await fetch_row(
            conn,
            KeyRow,
            f"""SELECT {_COLUMNS} FROM codes.signing_keys
                WHERE kid = $1 AND created_at <= $2 AND (retire_at IS NULL OR retire_at >= $2)
                  AND (signs_until IS NULL OR retire_at > signs_until)""",
            kid,
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


class SceneEpochRow(msgspec.Struct, frozen=True):
    """A scene-key epoch: its keys are AES-GCM ciphertext (FieldCipher) of a JSON object scene -> base64 key."""

    epoch: bytes
    keys_enc: bytes
    use_from: dt.datetime
    use_until: dt.datetime


# Scene-key writers take this lock, so two processes never both create the next epoch.
_SCENE_EPOCH_LOCK = 0x747A736B  # "tzsk"


class SceneKeyRepository:
    async def lock(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCENE_EPOCH_LOCK)

    async def latest(self, conn: Connection) -> SceneEpochRow | None:
        return await fetch_row(
            conn,
            SceneEpochRow,
            "SELECT epoch, keys_enc, use_from, use_until FROM codes.scene_epochs ORDER BY use_from DESC LIMIT 1",
        )

    async def insert(
        self, conn: Connection, epoch: bytes, keys_enc: bytes, use_from: dt.datetime, use_until: dt.datetime
    ) -> bool:
        """False when the epoch id exists already (4 random bytes can collide)."""
        result: str = await conn.execute(
            """INSERT INTO codes.scene_epochs (epoch, keys_enc, use_from, use_until) VALUES ($1, $2, $3, $4)
               ON CONFLICT (epoch) DO NOTHING""",
            epoch,
            keys_enc,
            use_from,
            use_until,
        )
        return result.endswith(" 1")

    async def extend(self, conn: Connection, epoch: bytes, use_until: dt.datetime) -> None:
        await conn.execute("UPDATE codes.scene_epochs SET use_until = $2 WHERE epoch = $1", epoch, use_until)

    async def live(self, conn: Connection, since: dt.datetime) -> list[SceneEpochRow]:
        """Epochs whose codes may still be valid at `since` or later (use_until + retention > now), oldest first."""
        return await fetch_rows(
            conn,
            SceneEpochRow,
            """SELECT epoch, keys_enc, use_from, use_until FROM codes.scene_epochs WHERE use_until > $1
               ORDER BY use_from""",
            since,
        )
