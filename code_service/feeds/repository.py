"""All SQL for department status feeds."""

from __future__ import annotations

import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row


class PreviousColourRow(msgspec.Struct, frozen=True):
    previous: str | None  # NULL: the person had no health status


class PreviousInsuranceRow(msgspec.Struct, frozen=True):
    previous: bool | None  # NULL: the person had no insurance status


class FeedRepository:
    """The upserts read the previous value (`old`, its row locked) in the INSERT's own source, so it is taken
    before the upsert changes the row. Read only from RETURNING, the FOR UPDATE scan would run after the update,
    skip the row this very command changed, and report no previous value."""

    async def upsert_health(
        self, conn: Connection, person_key: bytes, colour: str, source: uuid.UUID
    ) -> str | None:
        """Returns the previous colour ('' when new); None when nothing changed."""
        row = await fetch_row(
            conn,
            PreviousColourRow,
            """WITH old AS (SELECT colour FROM codes.health_status WHERE person_key = $1 FOR UPDATE)
               INSERT INTO codes.health_status (person_key, colour, source)
               SELECT $1, $2::text, $3::uuid FROM (SELECT count(*) FROM old) AS locked_first
               ON CONFLICT (person_key) DO UPDATE SET colour = EXCLUDED.colour, source = EXCLUDED.source,
                   updated_at = now() WHERE codes.health_status.colour <> EXCLUDED.colour
               RETURNING (SELECT colour FROM old) AS previous""",
            person_key,
            colour,
            source,
        )
        return None if row is None else (row.previous or "")

    async def upsert_insurance(
        self, conn: Connection, person_key: bytes, insured: bool, scheme: str, source: uuid.UUID
    ) -> bool | None:
        """Returns the previous insured flag (False when new); None when nothing changed."""
        row = await fetch_row(
            conn,
            PreviousInsuranceRow,
            """WITH old AS (SELECT insured FROM codes.insurance_status WHERE person_key = $1 FOR UPDATE)
               INSERT INTO codes.insurance_status (person_key, insured, scheme, source)
               SELECT $1, $2::boolean, $3::text, $4::uuid FROM (SELECT count(*) FROM old) AS locked_first
               ON CONFLICT (person_key) DO UPDATE SET insured = EXCLUDED.insured, scheme = EXCLUDED.scheme,
                   source = EXCLUDED.source, updated_at = now()
               WHERE (codes.insurance_status.insured, codes.insurance_status.scheme)
                     IS DISTINCT FROM (EXCLUDED.insured, EXCLUDED.scheme)
               RETURNING (SELECT insured FROM old) AS previous""",
            person_key,
            insured,
            scheme,
            source,
        )
        return None if row is None else bool(row.previous)
