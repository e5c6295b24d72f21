"""All SQL for scan records, and for the replay ids held in PostgreSQL while Redis is unavailable."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TypeAlias

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

SCAN_COLUMNS = (
    "at",
    "subject",
    "organisation_id",
    "organisation_name",
    "key_id",
    "scene",
    "verdict",
    "reason",
    "verification_id",
    "replay_id",
)
# One scan as COPY writes it, in SCAN_COLUMNS' order: a tuple, built on the verify path, where a Struct would be
# one more object per verification for no reader. The last two are set on accepted transit verifications only.
ScanValues: TypeAlias = tuple[
    dt.datetime, bytes, uuid.UUID, str, str, str, str, str, uuid.UUID | None, bytes | None
]


class ScanRow(msgspec.Struct, frozen=True):
    at: dt.datetime
    scene: str
    verdict: str  # allowed | denied
    reason: str
    organisation_name: str


class TransitVerificationRow(msgspec.Struct, frozen=True):
    """An online verification a gate names as the proof of its tap."""

    at: dt.datetime
    subject: bytes
    organisation_id: uuid.UUID
    scene: str
    verdict: str
    replay_id: bytes | None


class ScanRepository:
    async def insert_many(self, conn: Connection, records: list[ScanValues]) -> None:
        await conn.copy_records_to_table("scans", schema_name="codes", columns=SCAN_COLUMNS, records=records)

    async def for_holder(self, conn: Connection, holder_ref: uuid.UUID, limit: int) -> list[ScanRow]:
        return await fetch_rows(
            conn,
            ScanRow,
            """SELECT s.at, s.scene, s.verdict, s.reason, s.organisation_name
               FROM codes.scans s JOIN codes.subjects h ON h.subject = s.subject
               WHERE h.kind = 'resident' AND h.ref = $1 ORDER BY s.at DESC LIMIT $2""",
            holder_ref,
            limit,
        )

    async def verification(
        self, conn: Connection, verification_id: uuid.UUID
    ) -> TransitVerificationRow | None:
        return await fetch_row(
            conn,
            TransitVerificationRow,
            """SELECT at, subject, organisation_id, scene, verdict, replay_id FROM codes.scans
               WHERE verification_id = $1""",
            verification_id,
        )


class HeldClaimRow(msgspec.Struct, frozen=True):
    code_id: bytes
    seconds_left: int


class ReplayFallbackRepository:
    """Single use of transit and medical codes while Redis is unavailable (codes.used_codes_fallback): one claim
    for every process, where each process's memory would accept a code once per process."""

    async def claim(self, conn: Connection, code_id: bytes, ttl_seconds: int) -> bool:
        """True if the code's replay id was unused (now it is used, for `ttl_seconds` on the database's clock)."""
        claimed = await conn.fetchval(
            """INSERT INTO codes.used_codes_fallback (code_id, expires_at)
               VALUES ($1, now() + make_interval(secs => $2))
               ON CONFLICT (code_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
               WHERE codes.used_codes_fallback.expires_at <= now()
               RETURNING true""",
            code_id,
            float(ttl_seconds),
        )
        return bool(claimed)

    async def live(self, conn: Connection) -> list[HeldClaimRow]:
        """Every claim still held, with the seconds it has left."""
        return await fetch_rows(
            conn,
            HeldClaimRow,
            """SELECT code_id, greatest(1, ceil(extract(epoch FROM expires_at - now())))::int AS seconds_left
               FROM codes.used_codes_fallback WHERE expires_at > now()""",
        )

    async def delete_expired(self, conn: Connection) -> int:
        result: str = await conn.execute("DELETE FROM codes.used_codes_fallback WHERE expires_at <= now()")
        return int(result.rsplit(" ", 1)[1])
