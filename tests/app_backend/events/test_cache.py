"""Residents' reads are kept whole in Redis and forgotten on every node when a publish commits."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app_backend.events.schemas import Broadcasts
from app_backend.events.service import COPY_PREFIX, GENERATION_KEY, EventsService
from app_backend.kernel.errors import DomainError, not_found
from tests.app_backend.events.helpers import PUBLIC, manage, ok, published_session, set_session_status
from tests.conftest import serving


async def test_a_read_is_kept_until_a_publish_commits_on_any_node(
    client: Any, services: Any, settings: Any
) -> None:
    made = await published_session(client, services)
    sid = made["session_id"]
    path = f"{PUBLIC}/sessions/{sid}"
    listed = {"event_id": made["event_id"]}
    answer = await client.get(path)
    assert (
        answer.headers["cache-control"] == "public, max-age=5"
    )  # clients and CDNs keep it a few seconds at most
    first = ok(answer)
    assert ok(await client.get(f"{PUBLIC}/sessions", params=listed))["sessions"] == [first]
    assert await services.redis.exists(f"{COPY_PREFIX}session:{sid}") == 1

    # Changed behind the API's back (never done but here): residents still get the kept answer, with no
    # PostgreSQL statement.
    async with services.pool.acquire() as conn:
        await conn.execute("UPDATE events.sessions SET title = '改名' WHERE id = $1", uuid.UUID(sid))
    assert ok(await client.get(path))["title"] == first["title"]

    # Another node (its own app and processes' state, the same PostgreSQL and Redis) serves the kept answer too;
    # a publish on this node is seen there on its next read.
    async with serving(settings, client_port=50470) as other_node:
        assert ok(await other_node.get(path))["title"] == first["title"]
        generation = int(await services.redis.get(GENERATION_KEY) or 0)
        ok(await set_session_status(client, made["organiser"], sid, "live"))
        assert int(await services.redis.get(GENERATION_KEY)) > generation
        there = ok(await other_node.get(path))
        assert there["title"] == "改名" and there["status"] == "live"
        assert ok(await other_node.get(f"{PUBLIC}/sessions", params=listed))["sessions"] == [there]
    assert ok(await client.get(path)) == there


async def test_a_refused_publish_forgets_nothing(client: Any, services: Any) -> None:
    """Only what commits bumps the generation: a refused move rolls back and keeps every answer."""
    made = await published_session(client, services)
    ok(await client.get(f"{PUBLIC}/sessions/{made['session_id']}"))
    generation = int(await services.redis.get(GENERATION_KEY) or 0)
    refused = await set_session_status(client, made["organiser"], made["session_id"], "finished")
    assert refused.status_code == 409
    assert int(await services.redis.get(GENERATION_KEY) or 0) == generation


async def test_news_and_venues_are_forgotten_on_publish(client: Any, services: Any) -> None:
    made = await published_session(client, services)
    dept = made["organiser"]
    venue_path = f"{PUBLIC}/venues/{made['venue_id']}"
    assert ok(await client.get(venue_path))["transport_notes"] == "乘坐3路公交至体育中心站"
    before = ok(await client.get(f"{PUBLIC}/news", params={"event_id": made["event_id"]}))["news"]
    assert before == []
    news = ok(
        await manage(
            client,
            dept,
            "POST",
            "/news",
            {"title": "交通提示", "body": "地铁加开班次", "event_id": made["event_id"]},
        )
    )
    assert [
        n["id"] for n in ok(await client.get(f"{PUBLIC}/news", params={"event_id": made["event_id"]}))["news"]
    ] == [news["id"]]
    venue = ok(await client.get(venue_path))
    body = {
        k: venue[k]
        for k in (
            "name",
            "address",
            "district",
            "sections",
            "entrances",
            "accessibility_notes",
            "gate_verifiers",
        )
    }
    ok(
        await manage(
            client, dept, "PUT", f"/venues/{made['venue_id']}", {**body, "transport_notes": "乘坐地铁1号线"}
        )
    )
    assert ok(await client.get(venue_path))["transport_notes"] == "乘坐地铁1号线"


async def test_a_rush_of_reads_of_one_query_loads_it_once(services: Any) -> None:
    """Right after a publish every read of a query misses: within a process they share one load."""
    cache = services.platform.get(EventsService).cache
    key = f"test:{uuid.uuid4().hex}"
    loads: list[int] = []
    release = asyncio.Event()

    async def load() -> Broadcasts:
        loads.append(1)
        await release.wait()
        return Broadcasts(broadcasts=[])

    readers = [asyncio.ensure_future(cache.read(key, load)) for _ in range(50)]
    await asyncio.sleep(0.05)
    release.set()
    answers = await asyncio.gather(*readers)
    assert len(loads) == 1 and set(answers) == {b'{"broadcasts":[]}'}
    assert await cache.read(key, load) == b'{"broadcasts":[]}' and len(loads) == 1  # kept

    # A failed load is every waiting reader's answer, and is not kept: the next read loads again.
    async def missing() -> Broadcasts:
        loads.append(1)
        await asyncio.sleep(0.01)
        raise not_found("no session has this id")

    other = f"test:{uuid.uuid4().hex}"
    results = await asyncio.gather(*(cache.read(other, missing) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, DomainError) and r.status == 404 for r in results) and len(loads) == 2
    with pytest.raises(DomainError):
        await cache.read(other, missing)
    assert len(loads) == 3
