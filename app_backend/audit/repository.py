from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from app_backend.audit.schemas import AuditEvent
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection, fetch_rows

_COLUMNS = "id, at, actor_type, actor_id, action, target_type, target_id, outcome, request_id, ip, detail"


class AuditRepository:
    async def insert(
        self,
        conn: Connection,
        actor: Actor,
        action: str,
        target_type: str,
        target_id: str,
        outcome: str,
        detail: Mapping[str, object],
    ) -> None:
        await conn.execute(
            """INSERT INTO audit.events (actor_type, actor_id, action, target_type, target_id, outcome,
                                         request_id, ip, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            actor.type,
            actor.id,
            action,
            target_type,
            target_id,
            outcome,
            actor.request_id,
            actor.ip,
            detail,
        )

    async def search(
        self,
        conn: Connection,
        *,
        actor_id: str | None,
        target_id: str | None,
        action: str | None,
        before_id: int | None,
        limit: int,
    ) -> list[AuditEvent]:
        # The event as auditors read it is the stored row, column for column.
        return await fetch_rows(
            conn,
            AuditEvent,
            f"""SELECT {_COLUMNS} FROM audit.events
                WHERE ($1::text IS NULL OR actor_id = $1) AND ($2::text IS NULL OR target_id = $2)
                  AND ($3::text IS NULL OR action = $3) AND ($4::bigint IS NULL OR id < $4)
                ORDER BY id DESC LIMIT $5""",
            actor_id,
            target_id,
            action,
            before_id,
            limit,
        )

    async def purge_older_than(self, conn: Connection, cutoff: dt.datetime) -> int:
        # The server's role may not delete audit rows; the owner's function purges what retention allows.
        purged: int = await conn.fetchval("SELECT audit.purge_expired($1)", cutoff)
        return purged
