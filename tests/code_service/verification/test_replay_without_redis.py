"""While Redis is unavailable, a transit or medical code is still accepted once across every server process: its
replay id is held in PostgreSQL (codes.used_codes_fallback), not in each process's memory.

Two apps stand for two processes (each its own breaker and memory), on the suite's PostgreSQL and a Redis of
their own that the test stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from app_backend.composition.embedded import EmbeddedServices
from app_backend.kernel.settings import Settings
from code_service.verification.repository import ReplayFallbackRepository
from code_service.verification.tasks import purge_replay_fallback
from tests.conftest import ApiClient, serving
from tests.helpers import machine_credential, personal_code, rider, verify


@pytest.fixture
async def two_processes(
    settings: Settings, own_redis: EmbeddedServices
) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    mine = msgspec.structs.replace(settings, redis_url=own_redis.redis_url, redis_timeout=0.5)
    async with serving(mine, client_port=50023) as first, serving(mine, client_port=50024) as second:
        yield first, second


async def test_a_transit_code_is_accepted_once_across_processes_while_redis_is_down(two_processes, own_redis):
    first, second = two_processes
    person = await rider(first, first.app.state.services)
    gate = await machine_credential(first, first.app.state.services, ["verify:transit"])
    codes = [await personal_code(first, person) for _ in range(2)]

    own_redis.stop()
    ride = (await verify(first, gate, codes[0], "transit")).json()
    assert ride["allowed"] and ride["degraded"], ride
    for process in (second, first):
        again = (await verify(process, gate, codes[0], "transit")).json()
        assert not again["allowed"] and again["reason"] == "replayed" and again["degraded"], again
    # Another code of the same rider rides, in the other process too.
    other = (await verify(second, gate, codes[1], "transit")).json()
    assert other["allowed"] and other["degraded"], other


async def test_a_code_accepted_during_the_outage_is_not_accepted_again_when_redis_returns(
    two_processes, own_redis
):
    """Issue 13 probe: after Redis came back, codes accepted while it was away were accepted once more (Redis,
    asked alone again, had never seen them)."""
    first, second = two_processes
    person = await rider(first, first.app.state.services)
    gate = await machine_credential(first, first.app.state.services, ["verify:transit"])
    code = await personal_code(first, person)

    own_redis.stop()
    ride = (await verify(first, gate, code, "transit")).json()
    assert ride["allowed"] and ride["degraded"], ride
    own_redis.start(want_postgres=False, want_redis=True, persistent_redis=False)  # empty: it knows nothing

    # The code is shown again and again while the process finds Redis back (its next probe): the first answer
    # from Redis, before the hand-back has finished, must refuse it as well as every later one.
    breaker = first.app.state.services.platform.breaker
    for _ in range(100):
        again = (await verify(first, gate, code, "transit")).json()
        assert (again["allowed"], again["reason"]) == (False, "replayed"), again
        if not again.get("degraded"):  # (the answer leaves out what is false)
            break
        await asyncio.sleep(0.1)
    assert not again.get("degraded"), again
    await breaker.settled()
    for process in (second, first):
        again = (await verify(process, gate, code, "transit")).json()
        assert (again["allowed"], again["reason"], again.get("degraded")) == (False, "replayed", None), again


async def test_the_sweep_deletes_only_expired_replay_ids(services, db):
    repo = ReplayFallbackRepository()
    expired, live = b"\x01sweep-expired", b"\x01sweep-live"
    async with services.pool.acquire() as conn:
        assert await repo.claim(conn, expired, 0)
        assert await repo.claim(conn, live, 600)
        assert not await repo.claim(conn, live, 600)
    assert await purge_replay_fallback({"platform": services.platform}) >= 1
    left = await db.fetch(
        "SELECT code_id FROM codes.used_codes_fallback WHERE code_id = ANY($1::bytea[])", [expired, live]
    )
    assert [bytes(r["code_id"]) for r in left] == [live]
