"""Issue 16: how tiles are used. A resident opening a tile is recorded (who, which tile, which day) and told how to
open it (its entry points; with a one-login client, how the department's service opens signed in); the figures
count exactly the opens made, also under many concurrent opens; impressions are counted in Redis without who saw
them and added to the figures exactly once, also when two flushes run at once or one stops half-way; completions
are counted once per department reference; departments and operations read daily and monthly figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app_backend.kernel.clock import business_day
from app_backend.tiles.service import TileService
from tests.app_backend.oidc.department import app_for, discover, log_in, register
from tests.app_backend.tiles.helpers import department, live, manage, ok, review, reviewer, unique
from tests.helpers import bearer, login, real_named, signed, staff


def tiles_of(services: Any) -> TileService:
    return services.platform.get(TileService)  # type: ignore[no-any-return]


async def opened(client: Any, resident: dict[str, Any], tile_id: str) -> Any:
    return await client.post(f"/api/v1/tiles/{tile_id}/open", headers=bearer(resident))


async def usage_of(client: Any, dept: dict[str, Any], tile_id: str) -> dict[str, Any]:
    """Today's figures of the tile as its department reads them."""
    answer = await manage(client, dept, "GET", f"/{tile_id}/usage")
    assert answer.status_code == 200, answer.text
    days = answer.json()["days"]
    today = f"{business_day():%Y-%m-%d}"
    return next((d for d in days if d["day"] == today), {"opens": 0, "residents": 0, "impressions": 0})


async def test_an_open_is_recorded_and_answers_how_to_open(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("公积金")))["id"]
    first, second = await login(client), await login(client)

    answer = await opened(client, first, tid)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tile_id"] == tid and body["version"] == 1 and body["one_login"] is None
    assert body["entry"]["h5_url"] == "https://gjj.example.cn/h5"
    assert body["entry"]["wechat"] == {"app_id": "wx0123456789abcdef", "path": "pages/index/index"}

    for resident in (first, first, second):
        assert (await opened(client, resident, tid)).status_code == 200
    today = await usage_of(client, dept, tid)
    assert (today["opens"], today["residents"]) == (4, 2)

    # Who opened it is kept (and only for opens): the residents and their counts.
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT resident_id, opens FROM tiles.opens WHERE tile_id = $1 ORDER BY opens", uuid.UUID(tid)
        )
    assert [(str(r["resident_id"]), r["opens"]) for r in rows] == [
        (second["resident_id"], 1),
        (first["resident_id"], 3),
    ]

    # Without a token there is no open.
    assert (await client.post(f"/api/v1/tiles/{tid}/open")).status_code == 401


async def test_opens_are_counted_exactly_under_many_concurrent_opens(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("并发")))["id"]
    other = (await live(client, dept, rev, name=unique("并发")))["id"]
    residents = await asyncio.gather(*(login(client) for _ in range(24)))
    opens = [(r, tid) for r in residents for _ in range(3)] + [(r, other) for r in residents[:10]]
    answers = await asyncio.gather(*(opened(client, r, t) for r, t in opens))
    assert [a.status_code for a in answers] == [200] * len(opens)

    assert (await usage_of(client, dept, tid))["opens"] == 72
    assert (await usage_of(client, dept, tid))["residents"] == 24
    assert (
        (await usage_of(client, dept, other))["opens"],
        (await usage_of(client, dept, other))["residents"],
    ) == (
        10,
        10,
    )
    # The monthly report has the same totals, unique residents counted over the month.
    report = ok(await manage(client, dept, "GET", "/report"))
    totals = {t["tile_id"]: t["totals"] for t in report["tiles"]}
    assert (totals[tid]["opens"], totals[tid]["residents"]) == (72, 24)
    assert (totals[other]["opens"], totals[other]["residents"]) == (10, 10)


async def test_a_tile_above_the_residents_level_names_the_step_up_and_records_nothing(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("不动产"), min_level="L2"))["id"]
    resident = await login(client)
    refused = await opened(client, resident, tid)
    assert refused.status_code == 403, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/step-up-required") and problem["level"] == "L1"
    assert problem["step_up"] == {"level": "L2", "action": "real_name", "path": "/api/v1/me/real-name"}
    assert (await usage_of(client, dept, tid))["opens"] == 0

    # The level is the account's now: a resident just real-named opens it with the token they already hold.
    named = await real_named(client, services)
    assert (await opened(client, named, tid)).status_code == 200
    assert (await usage_of(client, dept, tid))["opens"] == 1


async def test_an_unavailable_or_unknown_tile_is_not_opened(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("暂停")))["id"]
    resident = await login(client)
    ok(
        await manage(
            client, dept, "POST", f"/{tid}/suspend", {"reason": "维护", "resident_notice": "今晚维护"}
        )
    )
    refused = await opened(client, resident, tid)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/tile-unavailable")
    assert refused.json()["unavailable_reason"] == "今晚维护"
    ok(await manage(client, dept, "POST", f"/{tid}/resume"))
    async with services.pool.acquire() as conn:
        await tiles_of(services).record_health(conn, uuid.UUID(tid), "degraded", "HTTP 503")
    refused = await opened(client, resident, tid)
    assert (
        refused.status_code == 409 and refused.json()["unavailable_reason"] == "服务暂时无法访问，请稍后再试"
    )
    async with services.pool.acquire() as conn:
        await tiles_of(services).record_health(conn, uuid.UUID(tid), "ok")
    assert (await usage_of(client, dept, tid))["opens"] == 0

    ok(await manage(client, dept, "POST", f"/{tid}/retire", {"reason": "下线"}))
    assert (await opened(client, resident, tid)).status_code == 404
    assert (await opened(client, resident, str(uuid.uuid4()))).status_code == 404


async def test_a_tile_with_a_one_login_client_opens_the_departments_service_signed_in(client, services):
    """The open answers a login URL for the department's entry (OpenID Connect third-party-initiated login); the
    department's app (Authlib's client) starts the authorization there, and the resident's web-view, carrying the
    app's token, comes back with a code: no log-in page."""
    dept, rev = await department(client, services), await reviewer(client, services)
    registered = await register(client, {"id": dept["organisation"]["id"], "admin": dept["admin"]})
    assert registered.status_code == 201, registered.text
    reg = registered.json()
    entry = "https://dept.example.cn/start?from=tzt"
    tid = (
        await live(
            client,
            dept,
            rev,
            name=unique("健康档案"),
            entry={"h5_url": entry},
            oidc_client_id=reg["client"]["client_id"],
        )
    )["id"]
    resident = await login(client)

    body = ok(await opened(client, resident, tid))
    issuer = str(client.app.state.oidc.issuer)
    one_login = body["one_login"]
    assert one_login["client_id"] == reg["client"]["client_id"] and one_login["issuer"] == issuer
    assert (
        one_login["authorization_endpoint"] == issuer + "/oidc/authorize" and one_login["acr_values"] == "L1"
    )
    sent = urlsplit(one_login["login_url"])
    assert one_login["login_url"].startswith(entry + "&")
    assert parse_qs(sent.query) == {"from": ["tzt"], "iss": [issuer], "target_link_uri": [entry]}

    # The department's app, started at its entry with `iss`, logs the resident in through the web-view's token.
    app = app_for(client, reg)
    meta = await discover(app, client)
    assert meta["issuer"] == parse_qs(sent.query)["iss"][0]
    token = await log_in(client, app, meta, resident, acr_values=one_login["acr_values"])
    assert token["access_token"] and token["id_token"]

    # A client revoked since: the tile still opens, without the one-login start.
    admin = await staff(client, services)
    revoked = await client.delete(
        f"/api/v1/admin/oidc/clients/{reg['client']['client_id']}", headers=bearer(admin)
    )
    assert revoked.status_code in (200, 204), revoked.text
    assert ok(await opened(client, resident, tid))["one_login"] is None


async def test_impressions_are_exact_once_flushed_also_by_two_flushes_at_once(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    shown = [(await live(client, dept, rev, name=unique("曝光")))["id"] for _ in range(3)]
    resident = await login(client)
    usage = tiles_of(services).usage

    async def show(ids: list[str]) -> None:
        answer = await client.post(
            "/api/v1/tiles/impressions", json={"tile_ids": ids}, headers=bearer(resident)
        )
        assert answer.status_code == 204, answer.text

    await asyncio.gather(*(show(shown) for _ in range(20)), *(show(shown[:1]) for _ in range(5)))
    # The home counts through the service, in the same hash.
    assert await tiles_of(services).count_impressions([uuid.UUID(shown[2])] * 2)
    assert (await usage_of(client, dept, shown[0]))["impressions"] == 0  # not flushed yet

    results = await asyncio.gather(
        usage.flush_impressions(services.pool), usage.flush_impressions(services.pool)
    )
    assert sum(r["applied"] for r in results) >= 1
    figures = [(await usage_of(client, dept, t))["impressions"] for t in shown]
    assert figures == [25, 20, 22]
    await usage.flush_impressions(services.pool)  # nothing more to add
    assert [(await usage_of(client, dept, t))["impressions"] for t in shown] == [25, 20, 22]

    # Who saw them is not kept: impressions need a token, but only the counts are stored.
    assert (await client.post("/api/v1/tiles/impressions", json={"tile_ids": shown})).status_code == 401
    refused = await client.post(
        "/api/v1/tiles/impressions", json={"tile_ids": ["x"]}, headers=bearer(resident)
    )
    assert refused.status_code == 400


async def test_a_flush_that_stops_half_way_counts_once(client, services):
    """A flush that took a batch and stopped before adding it leaves it for the next flush; one that added it
    and stopped before deleting it leaves a batch the next flush finds already added."""
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("曝光")))["id"]
    tiles = tiles_of(services)
    usage = tiles.usage
    today = business_day()
    await usage.flush_impressions(services.pool)  # what other tests left

    await tiles.count_impressions([uuid.UUID(tid)] * 3)
    taken = await usage._take_batch(today)  # then the worker dies
    assert taken is not None and taken[1][uuid.UUID(tid)] == 3
    await tiles.count_impressions([uuid.UUID(tid)] * 4)  # counted meanwhile, in a new live hash
    await usage.flush_impressions(services.pool)
    assert (await usage_of(client, dept, tid))["impressions"] == 7

    await tiles.count_impressions([uuid.UUID(tid)] * 5)
    batch_id, counts = await usage._take_batch(today)  # type: ignore[misc]
    async with services.pool.acquire() as conn, conn.transaction():
        assert await usage._usage.add_impressions(
            conn, batch_id, today, counts
        )  # added, then the worker dies
    await usage.flush_impressions(services.pool)
    assert (await usage_of(client, dept, tid))["impressions"] == 12


async def test_completions_count_once_per_reference(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("办件")))["id"]
    path = f"/{tid}/completions"
    sent = {"completions": [{"reference": "GJJ-2026-0001"}, {"reference": "GJJ-2026-0002"}]}
    assert ok(await manage(client, dept, "POST", path, sent)) == {"recorded": 2, "already_recorded": 0}
    again = {
        "completions": [
            {"reference": "GJJ-2026-0002"},
            {"reference": "GJJ-2026-0003"},
            {"reference": "GJJ-2026-0003"},
        ]
    }
    assert ok(await manage(client, dept, "POST", path, again)) == {"recorded": 1, "already_recorded": 2}
    assert (await usage_of(client, dept, tid))["completions"] == 3

    # One completed yesterday counts on its own day.
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    ok(
        await manage(
            client, dept, "POST", path, {"completions": [{"reference": "old-1", "completed_at": yesterday}]}
        )
    )
    usage = ok(await manage(client, dept, "GET", f"/{tid}/usage"))
    assert usage["totals"]["completions"] == 4

    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    for body, field in (
        ({"completions": [{"reference": "x", "completed_at": future}]}, "completions[0].completed_at"),
        ({"completions": [{"reference": "bad ref"}]}, "completions[0].reference"),
    ):
        refused = await manage(client, dept, "POST", path, body)
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field, refused.text

    # Another department's tile is not found; a reviewer cannot report completions (not a signed department).
    stranger = await department(client, services)
    assert (await manage(client, stranger, "POST", path, sent)).status_code == 404
    assert (await review(client, rev, path, sent)).status_code in (404, 405)


async def test_monthly_report_for_the_department_and_for_operations(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    first = (await live(client, dept, rev, name=unique("月报")))["id"]
    second = (await live(client, dept, rev, name=unique("月报")))["id"]
    residents = [await login(client) for _ in range(3)]
    for resident in residents:
        assert (await opened(client, resident, first)).status_code == 200
    assert (await opened(client, residents[0], second)).status_code == 200
    ok(await manage(client, dept, "POST", f"/{first}/completions", {"completions": [{"reference": "A1"}]}))

    month = f"{business_day():%Y-%m}"
    report = ok(await manage(client, dept, "GET", f"/report?month={month}"))
    assert report["month"] == month and report["organisation_id"] == dept["organisation"]["id"]
    assert report["start"] == f"{month}-01"
    by_tile = {t["tile_id"]: t for t in report["tiles"]}
    assert set(by_tile) == {first, second}
    assert by_tile[first]["totals"]["opens"] == 3 and by_tile[first]["totals"]["residents"] == 3
    assert by_tile[first]["totals"]["completions"] == 1 and by_tile[second]["totals"]["opens"] == 1
    assert [d["opens"] for d in by_tile[first]["days"]] == [3]

    # Operations read the same report for that department; reviewers, administrators and auditors may.
    for role in ("ops_reviewer", "auditor"):
        reader = await staff(client, services, role=role)
        seen = await client.get(
            "/api/v1/admin/tiles/report",
            params={"organisation_id": dept["organisation"]["id"], "month": month},
            headers=bearer(reader),
        )
        assert seen.status_code == 200, seen.text
        assert seen.json()["tiles"] == report["tiles"]
        assert seen.json()["organisation_name"] == dept["organisation"]["name"]
    resident_only = await login(client)
    assert (
        await client.get(
            "/api/v1/admin/tiles/report",
            params={"organisation_id": dept["organisation"]["id"]},
            headers=bearer(resident_only),
        )
    ).status_code == 403

    # Another month has the tiles with nothing in them; a month that is not one is a 400 naming it.
    earlier = ok(await manage(client, dept, "GET", "/report?month=2020-01"))
    assert {t["tile_id"]: t["totals"]["opens"] for t in earlier["tiles"]} == {first: 0, second: 0}
    refused = await manage(client, dept, "GET", "/report?month=2026-13")
    assert refused.status_code == 400


async def test_a_purged_day_keeps_its_counts(client, services):
    """Who opened what is kept for its retention; a purged day keeps its opens and unique residents as counts."""
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("留存")))["id"]
    for resident in [await login(client) for _ in range(2)]:
        for _ in range(2):
            assert (await opened(client, resident, tid)).status_code == 200
    before = await usage_of(client, dept, tid)
    async with services.pool.acquire() as conn, conn.transaction():
        deleted = await tiles_of(services).usage._usage.close_and_purge(
            conn, business_day() + dt.timedelta(days=1), only=[uuid.UUID(tid)]
        )
    assert deleted == 2
    after = await usage_of(client, dept, tid)
    assert (after["opens"], after["residents"]) == (before["opens"], before["residents"]) == (4, 2)
    usage = ok(await manage(client, dept, "GET", f"/{tid}/usage"))
    assert usage["totals"]["opens"] == 4 and usage["totals"]["residents"] is None  # over a period: not known


async def test_search_ranks_by_recent_use(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    word = unique("排名")
    quiet = (await live(client, dept, rev, name=word + "甲"))["id"]
    busy = (await live(client, dept, rev, name=word + "乙"))["id"]
    for resident in [await login(client) for _ in range(2)]:
        assert (await opened(client, resident, busy)).status_code == 200
    await tiles_of(services).usage.refresh_scores(services.pool)
    hits = (await client.get("/api/v1/tiles/search", params={"q": word})).json()["hits"]
    assert [h["tile"]["id"] for h in hits] == [busy, quiet]


async def test_a_resident_who_opened_a_departments_tile_may_be_messaged_by_it(client, services):
    """Opening a tile is using the department's service (issue 16's inbox: a department may message residents who
    used its service): before the open its message by ID number is refused as not addressable, after it lands."""
    dept = await department(client, services, scopes=("tiles:manage", "messages:send"))
    tid = (await live(client, dept, await reviewer(client, services), name=unique("燃气缴费")))["id"]
    resident = await real_named(client, services)
    message = {
        "resident_ref": {"id_number": resident["id_number"]},
        "message": {"kind": "bill_due", "title": "燃气费账单", "body": "您本月的燃气费已出账"},
    }

    before = await signed(client, dept, "POST", "/api/v1/messages", message)
    assert before.status_code == 403 and before.json()["type"].endswith("/not-addressable"), before.text
    for _ in range(2):  # the day's second open tells nothing new
        assert (await opened(client, resident, tid)).status_code == 200
    after = await signed(client, dept, "POST", "/api/v1/messages", message)
    assert after.status_code == 201, after.text
    inbox = await client.get("/api/v1/me/inbox", headers=bearer(resident))
    assert [m["title"] for m in inbox.json()["messages"]] == ["燃气费账单"]
