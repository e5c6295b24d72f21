from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from app_backend.audit.repository import AuditRepository
from app_backend.audit.schemas import AuditEvent
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection, Pool


class AuditTrail:
    """Writes inside the caller's transaction so an action and its record commit together; failures that roll the
    request back are recorded through `record_detached`, on a connection of their own."""

    def __init__(self, pool: Pool, repository: AuditRepository | None = None) -> None:
        self._pool = pool
        self._repo = repository or AuditRepository()

    async def record(
        self,
        conn: Connection,
        actor: Actor,
        action: str,
        *,
        target_type: str = "",
        target_id: str = "",
        outcome: str = "success",
        detail: Mapping[str, object] | None = None,
    ) -> None:
        await self._repo.insert(conn, actor, action, target_type, target_id, outcome, detail or {})

    async def record_detached(
        self,
        actor: Actor,
        action: str,
        *,
        target_type: str = "",
        target_id: str = "",
        outcome: str = "failure",
        detail: Mapping[str, object] | None = None,
    ) -> None:
        async with self._pool.acquire() as conn:
            await self._repo.insert(conn, actor, action, target_type, target_id, outcome, detail or {})

    async def search(
        self,
        conn: Connection,
        *,
        actor_id: str | None = None,
        target_id: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        return await self._repo.search(
            conn, actor_id=actor_id, target_id=target_id, action=action, before_id=before_id, limit=limit
        )

    async def purge(self, conn: Connection, retention_days: int) -> int:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
        return await self._repo.purge_older_than(conn, cutoff)
