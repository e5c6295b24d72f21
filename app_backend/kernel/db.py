"""One asyncpg pool; the request or job boundary owns the transaction; repositories read typed rows.

A repository declares each row it reads as a frozen msgspec Struct whose fields are the statement's columns, and
reads it with `fetch_row` / `fetch_rows`: services and jobs then see attributes mypy checks, never a record
indexed by a column name (a renamed column fails at the repository's test, not at run time in a service).

    class OrderRow(msgspec.Struct, frozen=True):
        id: uuid.UUID
        amount_fen: int

    async def get(self, conn: Connection, order_id: uuid.UUID) -> OrderRow | None:
        return await fetch_row(conn, OrderRow, "SELECT id, amount_fen FROM payments.orders WHERE id = $1", order_id)

Building a Struct from a record costs about a microsecond; a hot path that measurably cannot afford it keeps the
record and says why where it does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeAlias, TypeVar

import asyncpg
import msgspec

# asyncpg ships no type information: to mypy a connection is opaque, and these names say what is meant.
Connection: TypeAlias = asyncpg.Connection
Pool: TypeAlias = asyncpg.Pool
Record: TypeAlias = asyncpg.Record
RowT = TypeVar("RowT", bound=msgspec.Struct)


def as_row(row: type[RowT], record: Record) -> RowT:
    """A record as the repository's row Struct (its fields named as the statement's columns)."""
    return row(**record)


async def fetch_row(conn: Connection, row: type[RowT], query: str, *args: object) -> RowT | None:
    record = await conn.fetchrow(query, *args)
    return None if record is None else row(**record)


async def fetch_rows(conn: Connection, row: type[RowT], query: str, *args: object) -> list[RowT]:
    return [row(**record) for record in await conn.fetch(query, *args)]


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
async def pooled_connection(db_pool: Pool, wait: float = 5.0) -> AsyncIterator[Connection]:
    """One connection for a request whose statements each stand alone (no transaction: every statement commits
    by itself, and the request saves the BEGIN and COMMIT round trips)."""
    try:
        conn = await db_pool.acquire(timeout=wait)
    except TimeoutError:
        raise PoolExhausted from None
    try:
        yield conn
    finally:
        await db_pool.release(conn)


@contextlib.asynccontextmanager
async def transaction_connection(db_pool: Pool, wait: float = 5.0) -> AsyncIterator[Connection]:
    """One connection in one transaction for a request; rolled back when the handler raises."""
    # A managed transaction: when a sibling dependency fails (an unsigned request's 401), Litestar cancels this
    # one, possibly in the middle of BEGIN; the pool's release then rolls back quietly, where a transaction
    # started by hand made asyncpg log an ERROR about resetting an active transaction.
    async with pooled_connection(db_pool, wait) as conn, conn.transaction():
        yield conn
