"""The probe domain's SQL, where every domain keeps it."""

from __future__ import annotations

from app_backend.kernel.db import Connection


class PingRepository:
    async def record(self, conn: Connection) -> int:
        count: int = await conn.fetchval("INSERT INTO probe.pings DEFAULT VALUES RETURNING id")
        return count
