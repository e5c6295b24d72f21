"""All SQL for scan records."""

from __future__ import annotations

import uuid
from typing import Any

SCAN_COLUMNS = (
    "at",
    "subject",
    "organisation_id",
    "organisation_name",
    "key_id",
    "scene",
    "verdict",
    "reason",
)


class ScanRepository:
    async def insert_many(self, conn: Any, records: list[tuple[Any, ...]]) -> None:
        await conn.copy_records_to_table("scans", schema_name="codes", columns=SCAN_COLUMNS, records=records)

    async def for_holder(self, conn: Any, holder_ref: uuid.UUID, limit: int) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT s.at, s.scene, s.verdict, s.reason, s.organisation_name
               FROM codes.scans s JOIN codes.subjects h ON h.subject = s.subject
               WHERE h.kind = 'resident' AND h.ref = $1 ORDER BY s.at DESC LIMIT $2""",
            holder_ref,
            limit,
        )
        return rows
