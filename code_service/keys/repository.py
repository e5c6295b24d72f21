"""All SQL for platform signing keys."""

from __future__ import annotations

import datetime as dt

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows


class SigningKeyRow(msgspec.Struct, frozen=True):
    """The key signing now: its private half is AES-GCM ciphertext (FieldCipher)."""

    kid: str
    private_enc: bytes
    public_point: bytes


class PublishedKeyRow(msgspec.Struct, frozen=True):
    kid: str
    public_point: bytes
    created_at: dt.datetime
    rotated_out_at: dt.datetime | None  # None: still signing


class KeyRepository:
    async def insert(self, conn: Connection, kid: str, private_enc: bytes, public_point: bytes) -> None:
        await conn.execute(
            "INSERT INTO codes.signing_keys (kid, private_enc, public_point) VALUES ($1, $2, $3)",
            kid,
            private_enc,
            public_point,
        )

    async def current(self, conn: Connection) -> SigningKeyRow | None:
        return await fetch_row(
            conn,
            SigningKeyRow,
            """SELECT kid, private_enc, public_point FROM codes.signing_keys WHERE rotated_out_at IS NULL
               ORDER BY created_at DESC LIMIT 1""",
        )

    async def rotate_out_all_but(self, conn: Connection, kid: str) -> int:
        result: str = await conn.execute(
            "UPDATE codes.signing_keys SET rotated_out_at = now() WHERE rotated_out_at IS NULL AND kid <> $1",
            kid,
        )
        return int(result.split()[-1])

    async def published(self, conn: Connection, grace_seconds: int) -> list[PublishedKeyRow]:
        """Keys whose codes or credentials may still be alive."""
        return await fetch_rows(
            conn,
            PublishedKeyRow,
            """SELECT kid, public_point, created_at, rotated_out_at FROM codes.signing_keys
               WHERE rotated_out_at IS NULL OR rotated_out_at > now() - make_interval(secs => $1)
               ORDER BY created_at DESC""",
            grace_seconds,
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
