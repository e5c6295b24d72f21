"""All SQL of entry with the one code: the device credentials an attendee list names, and the admissions gates
upload after admitting offline."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_rows
from code_service.codes.repository import RESIDENT_FACTS


class AttendeeCredentialRow(msgspec.Struct, frozen=True):
    resident_id: uuid.UUID
    credential_id: bytes


class UploadedAdmissionRow(msgspec.Struct, frozen=True):
    admission_id: str
    status: str  # admitted | refused
    reason: str
    section: str | None
    seat: str | None


class EntryRepository:
    async def admitting_credentials(
        self, conn: Connection, resident_ids: list[uuid.UUID], min_level: int, grace_seconds: int
    ) -> list[AttendeeCredentialRow]:
        """The device credentials of these residents that a gate may admit offline: not revoked, still valid
        (plus a verifier's skew), of an active account at or above the event scene's level. One statement."""
        return await fetch_rows(
            conn,
            AttendeeCredentialRow,
            f"""SELECT c.resident_id, c.id AS credential_id
                FROM codes.device_credentials c
                CROSS JOIN LATERAL {RESIDENT_FACTS}(c.resident_id) f
                WHERE c.resident_id = ANY($1::uuid[]) AND c.revoked_at IS NULL
                  AND c.not_after > now() - make_interval(secs => $3)
                  AND f.active AND f.level >= $2
                ORDER BY c.resident_id, c.not_after DESC""",
            resident_ids,
            min_level,
            grace_seconds,
        )

    async def claim_upload(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        admission_id: str,
        occasion_id: uuid.UUID,
        entrance: str,
        scanned_at: dt.datetime,
    ) -> bool:
        """Claims an uploaded admission id for this organisation; False when it was uploaded before (a concurrent
        upload of the same id waits here until the first commits, then finds it)."""
        claimed = await conn.fetchval(
            """INSERT INTO codes.event_admissions (organisation_id, admission_id, occasion_id, entrance, scanned_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
            organisation_id,
            admission_id,
            occasion_id,
            entrance,
            scanned_at,
        )
        return bool(claimed)

    async def settle_upload(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        admission_id: str,
        status: str,
        reason: str,
        ticket_id: uuid.UUID | None,
        section: str | None,
        seat: str | None,
    ) -> None:
        await conn.execute(
            """UPDATE codes.event_admissions
               SET status = $3, reason = $4, ticket_id = $5, section = $6, seat = $7
               WHERE organisation_id = $1 AND admission_id = $2""",
            organisation_id,
            admission_id,
            status,
            reason,
            ticket_id,
            section,
            seat,
        )

    async def uploaded(
        self, conn: Connection, organisation_id: uuid.UUID, admission_ids: list[str]
    ) -> list[UploadedAdmissionRow]:
        return await fetch_rows(
            conn,
            UploadedAdmissionRow,
            """SELECT admission_id, status, reason, section, seat FROM codes.event_admissions
               WHERE organisation_id = $1 AND admission_id = ANY($2::text[])""",
            organisation_id,
            admission_ids,
        )
