"""All SQL for platform signing keys and scene-key epochs."""

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
    """A scene-key epoch on the key schedule (code_service.keys.service.KeySchedule), as signing keys are: published
    from created_at, in the codes issued from signs_from until signs_until, published until retire_at. Its keys are
    AES-GCM ciphertext (FieldCipher) of a JSON object scene -> base64 key."""

    epoch: bytes
    keys_enc: bytes
    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None
    retire_at: dt.datetime | None

    @property
    def kid(self) -> str:
        """The epoch id as codes carry it, in hex: what the schedule (and `tzt keys list`) calls a key by."""
        return self.epoch.hex()


# Scene-key writers take this lock, so two processes never both stage the next epoch.
_SCENE_EPOCH_LOCK = 0x747A736B  # "tzsk"
_EPOCH_COLUMNS = "epoch, keys_enc, created_at, signs_from, signs_until, retire_at"


class SceneKeyRepository:
    async def lock(self, conn: Connection) -> None:
        """Held until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCENE_EPOCH_LOCK)

    async def insert(
        self,
        conn: Connection,
        epoch: bytes,
        keys_enc: bytes,
        created_at: dt.datetime,
        signs_from: dt.datetime,
    ) -> SceneEpochRow | None:
        """None when the epoch id exists already (4 random bytes can collide)."""
        return await fetch_row(
            conn,
            SceneEpochRow,
            f"""INSERT INTO codes.scene_epochs (epoch, keys_enc, created_at, signs_from) VALUES ($1, $2, $3, $4)
                ON CONFLICT (epoch) DO NOTHING RETURNING {_EPOCH_COLUMNS}""",
            epoch,
            keys_enc,
            created_at,
            signs_from,
        )

    async def live(self, conn: Connection, at: dt.datetime) -> list[SceneEpochRow]:
        """Every epoch not yet retired at `at`: published, staged, in use or retiring."""
        return await fetch_rows(
            conn,
            SceneEpochRow,
            f"""SELECT {_EPOCH_COLUMNS} FROM codes.scene_epochs WHERE retire_at IS NULL OR retire_at > $1
                ORDER BY signs_from DESC, created_at DESC""",
            at,
        )

    async def kept(self, conn: Connection, epoch: bytes) -> SceneEpochRow | None:
        """The epoch unless it was withdrawn (it retired as its use ended) or cancelled (staged, never used)."""
        return await fetch_row(
            conn,
            SceneEpochRow,
            f"""SELECT {_EPOCH_COLUMNS} FROM codes.scene_epochs
                WHERE epoch = $1 AND (signs_until IS NULL OR retire_at > signs_until)""",
            epoch,
        )

    async def end(
        self, conn: Connection, kid: str, signs_until: dt.datetime, retire_at: dt.datetime
    ) -> SceneEpochRow | None:
        return await fetch_row(
            conn,
            SceneEpochRow,
            f"""UPDATE codes.scene_epochs SET signs_until = $2, retire_at = $3 WHERE epoch = $1
                RETURNING {_EPOCH_COLUMNS}""",
            bytes.fromhex(kid),
            signs_until,
            retire_at,
        )
