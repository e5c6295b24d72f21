from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture(autouse=True)
async def forget_printed_tickets(db: asyncpg.Connection) -> AsyncIterator[None]:
    """A printed ticket keeps its signing key published until it expires (codes.ticket_codes): the tickets printed
    here are forgotten afterwards, so the key rotation tests of the same session see the usual retirement."""
    started = await db.fetchval("SELECT clock_timestamp()")
    yield
    await db.execute("DELETE FROM codes.ticket_codes WHERE issued_at >= $1", started)
