"""A printed ticket is shown weeks after it was signed: the key that signed it stays in the JWKS until the ticket
has expired, whether the key's successor was staged before or after the ticket was printed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app_backend.kernel.clock import now as utc_now
from code_service.keys.repository import TICKET_RETIRE_MARGIN
from code_service.keys.service import PUBLISH_LEAD, RETIRE_AFTER
from code_service.verifier.format import decode
from tests.helpers import SetClock

JWKS = "/.well-known/jwks.json"


@pytest.fixture
async def key_clock(services: Any, db: asyncpg.Connection) -> AsyncIterator[SetClock]:
    """The key schedule's clock, a day after every instant of every key so far, and the keys as they were
    afterwards (as tests/code_service/keys/test_rotation.py does)."""
    keys = services.codes.keys
    before = await db.fetch("SELECT kid, signs_until, retire_at FROM codes.signing_keys")
    latest = await db.fetchval(
        "SELECT max(greatest(created_at, signs_from, signs_until, retire_at)) FROM codes.signing_keys"
    )
    clock = SetClock(max(utc_now(), latest or utc_now()) + dt.timedelta(days=1))
    keys.clock = clock
    keys.invalidate()
    try:
        yield clock
    finally:
        keys.clock = utc_now
        await db.execute(
            "DELETE FROM codes.signing_keys WHERE NOT kid = ANY($1::text[])", [r["kid"] for r in before]
        )
        await db.executemany(
            "UPDATE codes.signing_keys SET signs_until = $2, retire_at = $3 WHERE kid = $1",
            [(r["kid"], r["signs_until"], r["retire_at"]) for r in before],
        )
        keys.invalidate()


async def _kids(client: Any) -> set[str]:
    return {k["kid"] for k in (await client.get(JWKS)).json()["keys"]}


async def _stage(services: Any) -> Any:
    async with services.pool.acquire() as conn, conn.transaction():
        return await services.codes.keys.stage(conn)


@pytest.mark.parametrize("printed_first", [True, False], ids=["printed-then-staged", "staged-then-printed"])
async def test_the_signing_key_of_a_printed_ticket_stays_published_until_the_ticket_expires(
    client, services, key_clock, printed_first
):
    ends = key_clock() + dt.timedelta(days=45)  # well past the key's usual retirement
    tickets = services.codes.ticket_codes
    await services.codes.keys.signer()  # a key in use (a fresh database has none until asked)
    staged_at = key_clock()
    if printed_first:
        printed = await tickets.issue(uuid.uuid4(), uuid.uuid4(), ends)
        change = await _stage(services)
    else:
        change = await _stage(services)
        printed = await tickets.issue(uuid.uuid4(), uuid.uuid4(), ends)
    kid = decode(printed).kid.hex()
    assert kid == change.previous.kid  # signed by the key in use, not the staged one
    usual_retirement = staged_at + PUBLISH_LEAD + RETIRE_AFTER

    key_clock.set(usual_retirement + dt.timedelta(days=1))
    services.codes.keys.invalidate()
    assert kid in await _kids(client)
    key_clock.set(ends + TICKET_RETIRE_MARGIN + dt.timedelta(seconds=1))
    services.codes.keys.invalidate()
    assert kid not in await _kids(client)


async def test_a_withdrawn_key_takes_its_printed_tickets_with_it(client, services, key_clock):
    printed = await services.codes.ticket_codes.issue(
        uuid.uuid4(), uuid.uuid4(), key_clock() + dt.timedelta(days=9)
    )
    async with services.pool.acquire() as conn, conn.transaction():
        await services.codes.keys.rotate_now(conn, withdraw=True)
    services.codes.keys.invalidate()
    assert decode(printed).kid.hex() not in await _kids(client)
