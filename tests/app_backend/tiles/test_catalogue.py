"""Issue 16: what residents see of tiles, without a token: live tiles by region and category (a suspended or
failing one as temporarily unavailable, with a reason, not hidden), one tile, the codes tiles use; and the public
service's read for the home: every tile for a region and level, each with the step-up it needs, in one statement."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from app_backend.tiles.schemas import ServiceHours
from app_backend.tiles.service import TileService, open_at
from tests.app_backend.tiles.helpers import create, department, live, manage, ok, reviewer, unique


def tiles_of(services: Any) -> TileService:
    return services.platform.get(TileService)  # type: ignore[no-any-return]


async def _ids(client: Any, **params: Any) -> list[str]:
    answer = await client.get("/api/v1/tiles", params={"limit": 200, **params})
    assert answer.status_code == 200, answer.text
    return [t["id"] for t in answer.json()["tiles"]]


async def test_the_catalogue_by_region_and_category(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    jiangyan = (await live(client, dept, rev, name=unique("姜堰"), regions=["321204"], category="transport"))[
        "id"
    ]
    city = (await live(client, dept, rev, name=unique("全市"), regions=["321200"], category="transport"))[
        "id"
    ]
    xinghua = (await live(client, dept, rev, name=unique("兴化"), regions=["321281"], category="education"))[
        "id"
    ]
    drafted = (await create(client, dept, name=unique("草稿"), regions=["321204"]))["id"]

    everything = await _ids(client)
    assert {jiangyan, city, xinghua} <= set(everything) and drafted not in everything
    in_jiangyan = await _ids(client, region="321204")
    assert jiangyan in in_jiangyan and city in in_jiangyan and xinghua not in in_jiangyan
    city_wide = await _ids(client, region="321200")
    assert city in city_wide and jiangyan not in city_wide and xinghua not in city_wide
    transport = await _ids(client, category="transport")
    assert {jiangyan, city} <= set(transport) and xinghua not in transport

    one = await client.get(f"/api/v1/tiles/{jiangyan}")
    assert one.status_code == 200 and one.json()["regions"] == ["321204"]
    assert one.json()["category_name"] == "交通出行" and one.json()["status"] == "available"
    assert (await client.get(f"/api/v1/tiles/{drafted}")).status_code == 404
    assert (await client.get(f"/api/v1/tiles/{uuid.uuid4()}")).status_code == 404

    for params, field in (({"region": "110105"}, "region"), ({"category": "lottery"}, "category")):
        refused = await client.get("/api/v1/tiles", params=params)
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field


async def test_the_taxonomy_lists_the_regions_and_categories(client):
    taxonomy = (await client.get("/api/v1/tiles/taxonomy")).json()
    regions = {r["code"]: r["name"] for r in taxonomy["regions"]}
    assert regions["321200"].startswith("泰州市") and regions["321204"] == "姜堰区" and len(regions) == 7
    assert {"code": "housing_fund", "name": "公积金"} in taxonomy["categories"]


async def test_a_failing_or_suspended_tile_is_shown_as_temporarily_unavailable(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("公积金")))["id"]
    tiles = tiles_of(services)
    async with services.pool.acquire() as conn:
        assert await tiles.record_health(conn, uuid.UUID(tid), "degraded", "health URL: HTTP 503, 3 times")
        assert not await tiles.record_health(
            conn, uuid.UUID(tid), "degraded", "health URL: HTTP 503, 3 times"
        )
    shown = (await client.get(f"/api/v1/tiles/{tid}")).json()
    assert (
        shown["status"] == "temporarily_unavailable"
        and shown["unavailable_reason"] == "服务暂时无法访问，请稍后再试"
    )
    assert "503" not in shown["unavailable_reason"]  # what failed is for operations, not residents
    async with services.pool.acquire() as conn:
        await tiles.record_health(conn, uuid.UUID(tid), "ok")
    assert (await client.get(f"/api/v1/tiles/{tid}")).json()["status"] == "available"

    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "数据迁移"}))
    shown = (await client.get(f"/api/v1/tiles/{tid}")).json()
    assert (
        shown["status"] == "temporarily_unavailable" and shown["unavailable_reason"] == "服务暂停，请稍后再试"
    )
    assert tid in await _ids(client)


async def test_the_home_read_is_one_statement_with_the_step_up_each_tile_needs(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    region = "321283"  # 泰兴: tiles of this test only, besides city-wide ones
    made = {
        level: (
            await live(client, dept, rev, name=unique(f"泰兴{level}"), regions=[region], min_level=level)
        )["id"]
        for level in ("L1", "L2", "L3")
    }
    elsewhere = (await live(client, dept, rev, name=unique("靖江"), regions=["321282"]))["id"]
    tiles = tiles_of(services)
    async with services.pool.acquire() as conn:
        counting = _Counting(conn)
        for_l1 = await tiles.for_resident(counting, region=region, level=1)  # type: ignore[arg-type]
        assert len(counting.statements) == 1, counting.statements
        for_l3 = await tiles.for_resident(conn, region=region, level=3)
    by_id = {t.id: t for t in for_l1}
    assert elsewhere not in {str(i) for i in by_id}
    steps = {lvl: by_id[uuid.UUID(tid)].step_up for lvl, tid in made.items()}
    assert steps["L1"] is None
    assert msgspec.to_builtins(steps["L2"]) == {
        "level": "L2",
        "action": "real_name",
        "path": "/api/v1/me/real-name",
    }
    assert msgspec.to_builtins(steps["L3"]) == {
        "level": "L3",
        "action": "face_verification",
        "path": "/api/v1/me/face-verification/sessions",
    }
    assert all(t.step_up is None for t in for_l3)
    # Most used first: the usage work's scores order the home.
    async with services.pool.acquire() as conn:
        assert (
            await tiles.set_usage_scores(conn, {uuid.UUID(made["L3"]): 50.0, uuid.UUID(made["L1"]): 10.0})
            == 2
        )
        ordered = [str(t.id) for t in await tiles.for_resident(conn, region=region, level=1)]
    assert ordered.index(made["L3"]) < ordered.index(made["L1"]) < ordered.index(made["L2"])


class _Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            return attr

        async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(query)
            return await attr(query, *args, **kwargs)

        return counted


async def test_a_change_residents_see_is_announced_once_committed(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    heard: list[uuid.UUID] = []

    async def listener(tile_id: uuid.UUID) -> None:
        heard.append(tile_id)

    stop = tiles_of(services).on_change(listener)
    try:
        tid = (await live(client, dept, rev, name=unique("社保")))["id"]
        ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}))
        refused = await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"})
        assert refused.status_code == 409
    finally:
        stop()
    assert heard == [uuid.UUID(tid)] * 2  # published, suspended; not the refused suspension


def test_service_hours_are_read_in_beijing_time():
    hours = msgspec.convert(
        {"windows": [{"days": [1, 2, 3, 4, 5], "opens": "08:30", "closes": "17:30"}], "note": "节假日除外"},
        ServiceHours,
    )
    monday_9am_beijing = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
    assert open_at(hours, monday_9am_beijing)
    assert not open_at(hours, monday_9am_beijing + dt.timedelta(hours=9))  # 18:00
    assert not open_at(hours, monday_9am_beijing + dt.timedelta(days=5))  # Saturday
    assert open_at(None, monday_9am_beijing + dt.timedelta(days=5))


async def test_the_review_queue_is_three_statements_however_long(client, services):
    """The reviewers' queue reads the versions, their tiles and the tiles' live versions in a statement each,
    not two more per waiting version; a new version of a live tile comes with the live one to compare."""
    dept, rev = await department(client, services), await reviewer(client, services)
    fresh = [(await create(client, dept, name=unique("待审"))) for _ in range(3)]
    for tile in fresh:
        ok(await manage(client, dept, "POST", f"/{tile['id']}/versions/1/submit"))
    shown = await live(client, dept, rev, name=unique("在用"))
    content = {k: v for k, v in shown["versions"][0]["content"].items() if v is not None}
    ok(await manage(client, dept, "POST", f"/{shown['id']}/versions", {**content, "description": "新版说明"}))
    ok(await manage(client, dept, "POST", f"/{shown['id']}/versions/2/submit"))

    async with services.pool.acquire() as conn:
        counting = _Counting(conn)
        queue = await tiles_of(services).reviews(counting)  # type: ignore[arg-type]
    assert len(counting.statements) == 3, counting.statements
    mine = {str(r.tile_id): r for r in queue if str(r.tile_id) in {t["id"] for t in [*fresh, shown]}}
    assert len(mine) == 4
    assert all(mine[t["id"]].live is None for t in fresh)
    compared = mine[shown["id"]]
    assert (compared.version.number, compared.live.number if compared.live else None) == (2, 1)
