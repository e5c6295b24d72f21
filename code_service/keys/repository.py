"""All SQL for platform signing keys and scene-key epochs."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_KEY_LOCK = 0x7A746B  # "tzk": staging and switching keys serialise on it, so two workers never stage two keys

# A key stays published this long after the last printed ticket it signed has expired (clock skew, late refreshes).
TICKET_RETIRE_MARGIN = dt.timedelta(hours=1)

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
        """Ends the key's signing at `signs_until`; it leaves the published set at `retire_at`, or, when it is
        handed over (not withdrawn), once every printed ticket it signed has expired (codes.ticket_codes), if that
        is later. The tickets are read in a statement of their own, after the row is locked: a ticket code issued
        concurrently, which locks the row first (hold_for_tickets), is then visible."""
        ended = await fetch_row(
            conn,
            KeyRow,
            f"""UPDATE codes.signing_keys SET signs_until = $2, retire_at = $3 WHERE kid = $1
                RETURNING {_COLUMNS}""",
            kid,
            signs_until,
            retire_at,
        )
        if ended is None or retire_at <= signs_until:  # withdrawn: what it signed ends with it
            return ended
        return await fetch_row(
            conn,
            KeyRow,
            f"""UPDATE codes.signing_keys k
                   SET retire_at = greatest(k.retire_at, (SELECT max(t.not_after) + $2::interval
                                                          FROM codes.ticket_codes t WHERE t.kid = k.kid))
                 WHERE k.kid = $1 RETURNING {_COLUMNS}""",
            kid,
            TICKET_RETIRE_MARGIN,
        )

    async def hold_for_tickets(
        self, conn: Connection, kid: str, ticket_id: uuid.UUID, occasion_id: uuid.UUID, not_after: dt.datetime
    ) -> bool:
        """Records a printed ticket code signed by `kid` valid until `not_after`, and keeps the key published
        until then (plus TICKET_RETIRE_MARGIN) if its retirement is already set; False when the key is withdrawn
        or gone (the caller signs again with the key in use). The key's row is locked until the caller commits,
        so a successor staged meanwhile (end) sees this ticket."""
        held = await conn.fetchval(
            """SELECT signs_until IS NULL OR retire_at > signs_until FROM codes.signing_keys
               WHERE kid = $1 FOR UPDATE""",
            kid,
        )
        if not held:
            return False
        await conn.execute(
            """INSERT INTO codes.ticket_codes (ticket_id, kid, occasion_id, not_after) VALUES ($1, $2, $3, $4)
               ON CONFLICT (ticket_id, kid)
               DO UPDATE SET not_after = greatest(codes.ticket_codes.not_after, EXCLUDED.not_after),
                             occasion_id = EXCLUDED.occasion_id""",
            ticket_id,
            kid,
            occasion_id,
            not_after,
        )
        await conn.execute(
            """UPDATE codes.signing_keys SET retire_at = greatest(retire_at, $2::timestamptz + $3::interval)
               WHERE kid = $1 AND retire_at IS NOT NULL""",
            kid,
            not_after,
            TICKET_RETIRE_MARGIN,
        )
        return True


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
