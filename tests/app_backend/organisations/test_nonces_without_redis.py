"""While Redis is unavailable, a signed request's nonce is still single use across every server process: it is
held in PostgreSQL (organisations.used_nonces), not in each process's memory.

Two apps stand for two processes (each its own breaker, caches and memory), on the suite's PostgreSQL and a Redis
of their own that the test stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from app_backend.composition.embedded import EmbeddedServices
from app_backend.kernel.settings import Settings
from app_backend.organisations.signing import sign_request
from tests.conftest import ApiClient, serving
from tests.helpers import machine_credential

WHOAMI = "/api/v1/machine/whoami"


@pytest.fixture
async def two_processes(
    settings: Settings, own_redis: EmbeddedServices
) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    mine = msgspec.structs.replace(settings, redis_url=own_redis.redis_url, redis_timeout=0.5)
    async with serving(mine, client_port=50021) as first, serving(mine, client_port=50022) as second:
        yield first, second


async def _get(client: ApiClient, headers: dict[str, str]) -> Any:
    return await client.get(WHOAMI, headers=headers)


async def test_a_signed_request_is_accepted_once_across_processes_while_redis_is_down(
    two_processes, own_redis, db
):
    first, second = two_processes
    gate = await machine_credential(first, first.app.state.services, ["verify:transit"])
    online = sign_request(gate["key_id"], gate["secret"], "GET", WHOAMI)
    assert (await _get(first, online)).status_code == 200
    assert (await _get(second, online)).status_code == 401  # Redis holds it: the ordinary case

    own_redis.stop()
    replayed = sign_request(gate["key_id"], gate["secret"], "GET", WHOAMI)
    accepted = await _get(first, replayed)
    assert accepted.status_code == 200, accepted.text
    for process in (second, first):
        again = await _get(process, replayed)
        assert again.status_code == 401, again.text
        assert again.json()["detail"].startswith("X-Tzt-Nonce: already used")
    assert first.app.state.services.platform.breaker.is_open
    assert second.app.state.services.platform.breaker.is_open
    held = await db.fetchval(
        "SELECT count(*) FROM organisations.used_nonces WHERE key_id = $1 AND nonce = $2 AND expires_at > now()",
        gate["key_id"],
        replayed["X-Tzt-Nonce"],
    )
    assert held == 1

    # A fresh nonce still works in either process: degraded, not down.
    for process in (second, first):
        fresh = sign_request(gate["key_id"], gate["secret"], "GET", WHOAMI)
        assert (await _get(process, fresh)).status_code == 200


async def test_a_request_accepted_during_the_outage_is_not_accepted_again_when_redis_returns(
    two_processes, own_redis
):
    """Issue 13 probe: a signed request replayed after Redis came back passed once more (Redis, asked alone
    again, had never seen its nonce)."""
    first, second = two_processes
    gate = await machine_credential(first, first.app.state.services, ["verify:transit"])
    own_redis.stop()
    replayed = sign_request(gate["key_id"], gate["secret"], "GET", WHOAMI)
    assert (await _get(first, replayed)).status_code == 200
    own_redis.start(want_postgres=False, want_redis=True, persistent_redis=False)  # empty: it knows nothing

    # The replay is sent again and again while the process finds Redis back (its next probe): the first answer
    # from Redis, before the hand-back has finished, must refuse it as well as every later one.
    breaker = first.app.state.services.platform.breaker
    for _ in range(100):
        again = await _get(first, replayed)
        assert again.status_code == 401 and again.json()["detail"].startswith("X-Tzt-Nonce: already used")
        if not breaker.is_open:
            break
        await asyncio.sleep(0.1)
    assert not breaker.is_open
    await breaker.settled()
    for process in (second, first):
        again = await _get(process, replayed)
        assert again.status_code == 401 and again.json()["detail"].startswith("X-Tzt-Nonce: already used")


async def test_the_sweep_deletes_only_expired_nonces(services, db):
    from app_backend.organisations.repository import UsedNonceRepository
    from app_backend.organisations.tasks import purge_used_nonces

    repo = UsedNonceRepository()
    async with services.pool.acquire() as conn:
        assert await repo.claim(conn, "tzk_sweeptest000000", "expired-nonce-0000", 0)
        assert await repo.claim(conn, "tzk_sweeptest000000", "live-nonce-000000", 600)
        # An expired claim may be made again (the window has long refused its timestamp anyway).
        assert await repo.claim(conn, "tzk_sweeptest000000", "expired-nonce-0000", 0)
        assert not await repo.claim(conn, "tzk_sweeptest000000", "live-nonce-000000", 600)
    assert await purge_used_nonces({"platform": services.platform}) >= 1
    left = await db.fetch("SELECT nonce FROM organisations.used_nonces WHERE key_id = 'tzk_sweeptest000000'")
    assert [r["nonce"] for r in left] == ["live-nonce-000000"]
