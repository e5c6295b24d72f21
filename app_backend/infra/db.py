"""One asyncpg pool; the request or job boundary owns the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode, schema="pg_catalog"
    )


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 16) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )


async def transaction_connection(db_pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """Litestar dependency: one connection in one transaction per request; rolled back when the handler raises."""
    async with db_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        except BaseException:
            await tx.rollback()
            raise
        else:
            await tx.commit()
