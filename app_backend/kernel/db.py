"""One asyncpg pool; the request or job boundary owns the transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: msgspec.json.encode(v).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: our code keeps no session state on pooled connections (only
    transaction-scoped advisory locks and settings; tests/test_layout.py checks), and asyncpg still rolls back
    an open transaction. The default reset costs every request one more round trip to PostgreSQL."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 16) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_no_session_state,
        command_timeout=30,
    )


class PoolExhausted(Exception):
    """Every connection is busy for longer than a request should wait: shed the request instead of queueing."""


OPEN_TRANSACTION = "open_transaction"


@contextlib.asynccontextmanager
async def transaction_connection(db_pool: asyncpg.Pool, wait: float = 5.0) -> AsyncIterator[Any]:
    """One connection in one transaction for a request; rolled back when the handler raises."""
    try:
        conn = await db_pool.acquire(timeout=wait)
    except TimeoutError:
        raise PoolExhausted from None
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        except BaseException:
            await tx.rollback()
            raise
        else:
            await tx.commit()
    finally:
        await db_pool.release(conn)
