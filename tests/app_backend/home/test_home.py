"""Issue 16, "One home for every resident": `GET /api/v1/home` answers the tiles of the resident's region and level
(a tile above their level with its step-up, a suspended one as temporarily unavailable), their pins in order, the
tiles they used last and their unread messages, and counts an impression of each tile shown; at most one PostgreSQL
statement when cold and none when warm; a change of a tile reaches the home within seconds."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app_backend.home.service import HomeService, resident_key
from app_backend.tiles.service import TileService
from tests.app_backend.tiles.helpers import department, live, manage, ok, reviewer, unique
from tests.app_backend.tiles.test_usage import usage_of
from tests.helpers import bearer, enrol_person, login, random_id_number, staff

REGION = "321204"


def home_of(services: Any) -> HomeService:
    return services.platform.get(HomeService)  # type: ignore[no-any-return]


async def resident_in(client: Any, region: str = REGION) -> dict[str, Any]:
    resident = await login(client)
    ok(await client.put("/api/v1/me/region", json={"region": region}, headers=bearer(resident)))
    return resident


async def home(client: Any, resident: dict[str, Any]) -> dict[str, Any]:
    return ok(await client.get("/api/v1/home", headers=bearer(resident)))


def ids(tiles: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for t in tiles]


async def test_the_home_of_a_resident(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    first = (await live(client, dept, rev, name=unique("首"), regions=[REGION]))["id"]
    face = (await live(client, dept, rev, name=unique("刷脸"), regions=["321200"], min_level="L3"))["id"]
    paused = (await live(client, dept, rev, name=unique("暂停"), regions=[REGION]))["id"]
    elsewhere = (await live(client, dept, rev, name=unique("兴化"), regions=["321281"]))["id"]
    ok(await manage(client, dept, "POST", f"/{paused}/suspend", {"reason": "系统升级"}))
    resident = await resident_in(client)
    ok(await client.post(f"/api/v1/tiles/{first}/open", headers=bearer(resident)))
    async with services.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO notifications.messages (resident_id, kind, title, body, sender, sender_name)
               VALUES ($1, 'notice', '通知', '正文', 'platform', '泰州通'), ($1, 'notice', '通知', '正文', 'platform',
               '泰州通')""",
            uuid.UUID(resident["resident_id"]),
        )

    shown = await home(client, resident)
    assert shown["region"] == REGION and shown["level"] == "L1"
    by_id = {t["id"]: t for t in shown["tiles"]}
    assert {first, face, paused} <= set(by_id) and elsewhere not in by_id
    assert by_id[first]["step_up"] is None and by_id[first]["status"] == "available"
    assert by_id[face]["step_up"] == {
        "level": "L3",
        "action": "face_verification",
        "path": "/api/v1/me/face-verification/sessions",
    }
    assert by_id[paused]["status"] == "temporarily_unavailable"
    assert by_id[paused]["unavailable_reason"]
    assert ids(shown["recent"]) == [first] and shown["pinned"] == []
    assert shown["unread_messages"] == 2
    # The code summary: nothing cached before the code was shown, and no device credential yet.
    assert shown["code"] == {
        "entitlements": None,
        "device_credential_ends_at": None,
        "device_credential_needs_refresh": True,
    }
    code = ok(await client.post("/api/v1/codes/personal", headers=bearer(resident)))
    for _ in range(2):  # the first learns the code's subject; the next reads the facts in the home's batch
        assert (await home(client, resident))["code"]["entitlements"] == code["entitlements"]

    # Pins: in the order pinned; pinning again keeps the place; unpinned is gone.
    for tid in (face, first, paused, face):
        answer = await client.put(f"/api/v1/me/home/pins/{tid}", headers=bearer(resident))
        assert answer.status_code == 204, answer.text
    assert ids((await home(client, resident))["pinned"]) == [face, first, paused]
    assert (await client.delete(f"/api/v1/me/home/pins/{first}", headers=bearer(resident))).status_code == 204
    assert ids((await home(client, resident))["pinned"]) == [face, paused]
    assert (await client.delete(f"/api/v1/me/home/pins/{first}", headers=bearer(resident))).status_code == 404
    assert (
        await client.put(f"/api/v1/me/home/pins/{uuid.uuid4()}", headers=bearer(resident))
    ).status_code == 404
    assert (await client.get("/api/v1/home")).status_code == 401

    # Impressions of the tiles shown: counted in Redis, added by the flush.
    usage = services.platform.get(TileService).usage
    await usage.flush_impressions(services.pool)
    # One per home answered (five), whether the tile was also pinned or recent or not.
    assert (await usage_of(client, dept, first))["impressions"] == 5


async def test_at_most_twelve_pins(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("满"), regions=[REGION]))["id"]
    resident = await resident_in(client)
    async with services.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO home.pins (resident_id, tile_id, position)
               SELECT $1, gen_random_uuid(), n FROM generate_series(1, 12) n""",
            uuid.UUID(resident["resident_id"]),
        )
    refused = await client.put(f"/api/v1/me/home/pins/{tid}", headers=bearer(resident))
    assert refused.status_code == 409 and refused.json()["type"].endswith("home-pins-full"), refused.text
    # Twelve at once for a fresh resident: exactly twelve pinned, whatever the interleaving.
    other = await resident_in(client)
    tiles = [(await live(client, dept, rev, name=unique("并"), regions=[REGION]))["id"] for _ in range(13)]
    answers = await asyncio.gather(
        *(client.put(f"/api/v1/me/home/pins/{t}", headers=bearer(other)) for t in tiles)
    )
    assert sorted(a.status_code for a in answers) == [204] * 12 + [409]
    assert len((await home(client, other))["pinned"]) == 12


class _Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any, statements: list[str]) -> None:
        self._conn = conn
        self.statements = statements

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            return attr

        async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(query)
            return await attr(query, *args, **kwargs)

        return counted


class _CountingPool:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.statements: list[str] = []
        self.acquired = 0

    async def acquire(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (asyncpg Pool.acquire)
        self.acquired += 1
        return _Counting(await self._pool.acquire(timeout=timeout), self.statements)

    async def release(self, conn: Any) -> None:
        await self._pool.release(conn._conn)


@asynccontextmanager
async def counting(service: HomeService) -> AsyncIterator[_CountingPool]:
    pool = service._pool
    counted = _CountingPool(pool)
    service._pool = counted  # type: ignore[assignment]
    try:
        yield counted
    finally:
        service._pool = pool


async def test_one_statement_cold_none_warm(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    (await live(client, dept, rev, name=unique("快"), regions=[REGION]))["id"]
    resident = await resident_in(client)
    service = home_of(services)
    await home(client, resident)  # the shared list of the region and level is loaded

    await services.platform.redis.delete(resident_key(uuid.UUID(resident["resident_id"])))
    async with counting(service) as cold:
        await home(client, resident)
    assert len(cold.statements) == 1, cold.statements
    async with counting(service) as warm:
        for _ in range(3):
            await home(client, resident)
    assert warm.statements == [] and warm.acquired == 0

    # The shared list cold (a tile changed), the resident's part warm: one statement.
    service._shared.clear()
    async with counting(service) as shared_cold:
        await home(client, resident)
    assert len(shared_cold.statements) == 1, shared_cold.statements

    # Both cold (a tile changed, and the resident's part expired): still one statement, with the right tiles.
    warm_home = await home(client, resident)
    service._shared.clear()
    await services.platform.redis.delete(resident_key(uuid.UUID(resident["resident_id"])))
    async with counting(service) as both_cold:
        cold_home = await home(client, resident)
    assert len(both_cold.statements) == 1, both_cold.statements
    assert [t["id"] for t in cold_home["tiles"]] == [t["id"] for t in warm_home["tiles"]]
    # The next cold part on this node, its list fresh: the statement does not carry the tiles again.
    await services.platform.redis.delete(resident_key(uuid.UUID(resident["resident_id"])))
    async with counting(service) as part_cold:
        await home(client, resident)
    assert len(part_cold.statements) == 1, part_cold.statements


async def test_a_tile_change_reaches_the_home_within_seconds(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("变"), regions=[REGION]))["id"]
    resident = await resident_in(client)
    assert {t["id"]: t for t in (await home(client, resident))["tiles"]}[tid]["status"] == "available"

    async def status() -> str | None:
        return {t["id"]: t for t in (await home(client, resident))["tiles"]}.get(tid, {}).get("status")

    async def eventually(expected: str | None) -> None:
        deadline = time.monotonic() + 5
        while (seen := await status()) != expected:
            assert time.monotonic() < deadline, f"still {seen!r}, not {expected!r}"
            await asyncio.sleep(0.05)

    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}))
    await eventually("temporarily_unavailable")
    ok(await manage(client, dept, "POST", f"/{tid}/resume"))
    await eventually("available")
    # Another node's list: loaded before the change, it learns of it from the generation in Redis.
    service = home_of(services)
    before = dict(service._shared)
    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}))
    service._shared.update(before)  # as if this node had not heard the change itself
    await eventually("temporarily_unavailable")


async def test_notices_and_banners_by_operations(client, services):
    admin, auditor = await staff(client, services), await staff(client, services, "auditor")
    resident, elsewhere = await resident_in(client), await resident_in(client, "321281")
    at = dt.datetime.now(dt.UTC)
    window = {
        "starts_at": (at - dt.timedelta(minutes=1)).isoformat(),
        "ends_at": (at + dt.timedelta(hours=1)).isoformat(),
    }
    outage = ok(
        await client.post(
            "/api/v1/admin/home/notices",
            json={
                "kind": "outage",
                "title": unique("停机"),
                "body": "系统维护",
                "regions": [REGION],
                **window,
            },
            headers=bearer(admin),
        )
    )
    later = {
        "starts_at": (at + dt.timedelta(hours=1)).isoformat(),
        "ends_at": (at + dt.timedelta(hours=2)).isoformat(),
    }
    future = ok(
        await client.post(
            "/api/v1/admin/home/notices",
            json={"kind": "event", "title": unique("活动"), "body": "明天", "regions": ["321200"], **later},
            headers=bearer(admin),
        )
    )
    shown = [n["id"] for n in (await home(client, resident))["notices"]]
    assert outage["id"] in shown and future["id"] not in shown
    assert outage["id"] not in [n["id"] for n in (await home(client, elsewhere))["notices"]]

    # Only ops_admin writes; auditors read; every call is audited.
    refused = await client.post(
        "/api/v1/admin/home/notices",
        json={"kind": "event", "title": "x", "body": "y", "regions": [REGION], **window},
        headers=bearer(auditor),
    )
    assert refused.status_code == 403
    bad = await client.post(
        "/api/v1/admin/home/notices",
        json={"kind": "event", "title": "x", "body": "y", "regions": ["110105"], **window},
        headers=bearer(admin),
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "regions"
    listed = ok(
        await client.get("/api/v1/admin/home/notices", params={"current": "true"}, headers=bearer(auditor))
    )
    assert {outage["id"], future["id"]} <= {n["id"] for n in listed["notices"]}
    withdrawn = await client.delete(f"/api/v1/admin/home/notices/{outage['id']}", headers=bearer(admin))
    assert withdrawn.status_code == 204
    assert outage["id"] not in [n["id"] for n in (await home(client, resident))["notices"]]
    async with services.pool.acquire() as conn:
        actions = {
            r["action"]
            for r in await conn.fetch(
                "SELECT action FROM audit.events WHERE actor_id = $1", admin["resident_id"]
            )
        }
    assert {"admin.home_notice_create", "admin.home_notice_withdraw"} <= actions


async def test_the_unread_count_follows_the_residents_own_reads_and_deletions_at_once(client, services):
    """The resident's part of the home is cached for half a minute; reading or deleting messages in the inbox
    shows on the very next home, not up to 30 s later (the badge a resident just cleared must not come back)."""
    resident = await resident_in(client)
    async with services.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO notifications.messages (resident_id, kind, title, body, sender, sender_name)
               SELECT $1, 'notice', '通知', '正文', 'platform', '泰州通' FROM generate_series(1, 3)""",
            uuid.UUID(resident["resident_id"]),
        )
    assert (await home(client, resident))["unread_messages"] == 3  # now cached
    inbox = ok(await client.get("/api/v1/me/inbox", headers=bearer(resident)))["messages"]

    read = await client.post(f"/api/v1/me/inbox/{inbox[0]['id']}/read", headers=bearer(resident))
    assert read.status_code == 204
    assert (await home(client, resident))["unread_messages"] == 2
    gone = await client.delete(f"/api/v1/me/inbox/{inbox[1]['id']}", headers=bearer(resident))
    assert gone.status_code == 204
    assert (await home(client, resident))["unread_messages"] == 1
    assert (await client.post("/api/v1/me/inbox/read", headers=bearer(resident))).status_code == 204
    assert (await home(client, resident))["unread_messages"] == 0


async def test_the_district_and_level_a_resident_just_changed_show_on_the_next_home(client, services):
    """Choosing another district, or becoming real-named, changes which tiles the home shows: the cached part
    of the resident is dropped once the change commits, not kept for its half minute."""
    dept, rev = await department(client, services), await reviewer(client, services)
    here = (await live(client, dept, rev, name=unique("海陵"), regions=["321202"]))["id"]
    named = (await live(client, dept, rev, name=unique("实名"), regions=["321203"], min_level="L2"))["id"]
    resident = await resident_in(client, "321202")
    first = await home(client, resident)
    assert here in ids(first["tiles"]) and first["region"] == "321202"  # now cached

    ok(await client.put("/api/v1/me/region", json={"region": "321203"}, headers=bearer(resident)))
    moved = await home(client, resident)
    assert moved["region"] == "321203" and here not in ids(moved["tiles"])
    assert {t["id"]: t for t in moved["tiles"]}[named]["step_up"]["level"] == "L2"

    id_number = random_id_number()
    await enrol_person(services, "周瑜", id_number, resident["phone"])
    answer = await client.post(
        "/api/v1/me/real-name", json={"name": "周瑜", "id_number": id_number}, headers=bearer(resident)
    )
    assert answer.status_code == 200, answer.text
    verified = await home(client, resident)
    assert verified["level"] == "L2" and {t["id"]: t for t in verified["tiles"]}[named]["step_up"] is None
