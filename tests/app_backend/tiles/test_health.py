"""Issue 16: the health checks against a department's real HTTP server on loopback (tests run in dev mode, where
loopback may be probed). Its answers are switched by the test: up, down, degraded, suspended (when the department
asked for it), recovered, live again; the department is told each step and residents see why the tile is
unavailable. Without the flag a tile is degraded but never suspended; a suspension by operations is never lifted by
a recovery. Outside dev, a URL on a private address is refused, not probed."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.clock import now
from app_backend.kernel.settings import TileSettings
from app_backend.tiles.health import HealthChecks
from app_backend.tiles.schemas import DEGRADED_NOTICE
from app_backend.tiles.service import HEALTH_ACTOR, Caller, TileService
from tests.app_backend.tiles.helpers import (
    NOTICES,
    DepartmentSite,
    department,
    live,
    manage,
    ok,
    review,
    reviewer,
    unique,
)
from tests.helpers import SetClock, signed

MINUTE = dt.timedelta(seconds=61)  # a little more than the interval: each run finds the tile due


def checks(services: Any, clock: SetClock, *, allow_private: bool = True, **settings: Any) -> HealthChecks:
    """The health checks as the job runs them, on the test's clock: probed every minute, degraded after 2 failed
    rounds, suspended (when asked for) after 10 minutes of failing."""
    rules = {"health_interval": 60, "health_failures": 2, "health_suspend_minutes": 10, "health_timeout": 3.0}
    return HealthChecks(
        services.platform.get(TileService),
        TileSettings(**{**rules, **settings}),
        allow_private=allow_private,
        caller=Caller.health(HEALTH_ACTOR),
        clock=clock,
    )


async def watched(
    client: Any, services: Any, site: DepartmentSite, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A live tile of a new department whose health-check URL and H5 entry are on `site`."""
    dept, rev = await department(client, services), await reviewer(client, services)
    tile = await live(
        client,
        dept,
        rev,
        name=unique("健康"),
        health_check_url=site.url("/health"),
        entry={"h5_url": site.url("/h5")},
        **fields,
    )
    return dept, rev, tile["id"]


async def notices_of(client: Any, dept: dict[str, Any], tile_id: str) -> list[tuple[str, str, bool]]:
    """(event, by, unread) of the tile's notices, oldest first."""
    answer = await signed(client, dept, "GET", NOTICES + "?limit=200")
    assert answer.status_code == 200, answer.text
    found = [n for n in answer.json()["notices"] if n["tile_id"] == tile_id]
    return [(n["event"], n["by"], n["read_at"] is None) for n in reversed(found)]


async def shown(client: Any, tile_id: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/tiles/{tile_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def test_down_degraded_suspended_recovered_live_and_told_each_step(client, services, site):
    dept, _, tid = await watched(client, services, site, auto_suspend=True)
    clock = SetClock(now())
    health = checks(services, clock)
    heard: list[uuid.UUID] = []

    async def listener(tile_id: uuid.UUID) -> None:
        heard.append(tile_id)

    stop = services.platform.get(TileService).on_change(listener)
    only = [uuid.UUID(tid)]

    async def round_() -> dict[str, int]:
        counts = await health.run(services.pool, only=only)
        clock.set(clock() + MINUTE)
        return counts

    try:
        # Up: probed (both URLs), nothing to tell.
        assert await round_() == {"probed": 1, "failed": 0, "changed": 0}
        assert site.hits == {"/health": 1, "/h5": 1}
        assert (await shown(client, tid))["status"] == "available"

        # Down: one failed round is not yet an outage.
        site.down(503)
        assert await round_() == {"probed": 1, "failed": 1, "changed": 0}
        assert (await shown(client, tid))["status"] == "available"
        assert [by for _, by, _ in await notices_of(client, dept, tid)] == [
            "department",
            "operations",
            "department",
        ]

        # The second failed round in a row: degraded; residents see why; the department is told.
        assert (await round_())["changed"] == 1
        seen = await shown(client, tid)
        assert seen["status"] == "temporarily_unavailable" and seen["unavailable_reason"] == DEGRADED_NOTICE
        mine = ok(await manage(client, dept, "GET", f"/{tid}"))
        assert mine["state"] == "live" and mine["health"] == "degraded"
        assert (await notices_of(client, dept, tid))[-1] == ("degraded", "health", True)
        assert heard == [uuid.UUID(tid)]

        # Ten minutes of failing: the department asked for it, so the health checks suspend the tile.
        clock.set(clock() + dt.timedelta(minutes=10))
        assert (await round_())["changed"] == 1
        mine = ok(await manage(client, dept, "GET", f"/{tid}"))
        assert mine["state"] == "suspended" and mine["suspended_by"] == "health"
        seen = await shown(client, tid)
        assert seen["status"] == "temporarily_unavailable" and seen["unavailable_reason"] == DEGRADED_NOTICE
        assert (await notices_of(client, dept, tid))[-1] == ("suspend", "health", True)
        assert await round_() == {"probed": 1, "failed": 1, "changed": 0}  # nothing new to tell

        # The URL answers again: the degradation clears and the health checks' suspension is lifted.
        site.up()
        assert (await round_())["changed"] == 1
        mine = ok(await manage(client, dept, "GET", f"/{tid}"))
        assert mine["state"] == "live" and mine["suspended_by"] is None and mine["health"] == "ok"
        assert (await shown(client, tid))["status"] == "available"
        told = await notices_of(client, dept, tid)
        assert [(event, by) for event, by, _ in told][-4:] == [
            ("degraded", "health"),
            ("suspend", "health"),
            ("recovered", "health"),
            ("resume", "health"),
        ]
        assert all(unread for _, by, unread in told if by == "health")
        assert heard == [uuid.UUID(tid)] * 3
        assert await round_() == {"probed": 1, "failed": 0, "changed": 0}
    finally:
        stop()

    # The department reads what was probed: status and latency of each URL, newest first.
    report = ok(await manage(client, dept, "GET", f"/{tid}/health?limit=4"))
    assert (
        report["health"] == "ok" and report["consecutive_failures"] == 0 and report["failing_since"] is None
    )
    assert [(p["target"], p["status_code"], p["ok"]) for p in report["probes"]] == [
        ("entry.h5_url", 200, True),
        ("health_check_url", 200, True),
        ("entry.h5_url", 200, True),
        ("health_check_url", 200, True),
    ]
    assert all(p["latency_ms"] is not None and p["latency_ms"] >= 0 for p in report["probes"])
    everything = ok(await manage(client, dept, "GET", f"/{tid}/health?limit=100"))["probes"]
    assert [p["status_code"] for p in everything if p["target"] == "health_check_url"] == [
        200,
        200,
        503,
        503,
        503,
        503,
        200,
    ]
    # The day's figures count the rounds, the failed ones and the outage.
    usage = ok(await manage(client, dept, "GET", f"/{tid}/usage"))
    assert usage["totals"]["probes"] == 7 and usage["totals"]["probe_failures"] == 4
    assert usage["totals"]["outages"] == 1

    # Every health transition is in the audit trail as the health checks' own.
    async with services.pool.acquire() as conn:
        events = await services.audit.search(conn, target_id=tid, limit=100)
    by_health = sorted(e.action for e in events if e.actor_id == "tile-health")
    assert by_health == ["tile.degraded", "tile.recovered", "tile.resume", "tile.suspend"]


async def test_without_the_flag_a_tile_is_degraded_but_never_suspended(client, services, site):
    dept, _, tid = await watched(client, services, site)
    clock = SetClock(now())
    health = checks(services, clock)
    only = [uuid.UUID(tid)]
    site.down(500)
    for _ in range(3):
        await health.run(services.pool, only=only)
        clock.set(clock() + MINUTE)
    clock.set(clock() + dt.timedelta(hours=2))
    await health.run(services.pool, only=only)
    mine = ok(await manage(client, dept, "GET", f"/{tid}"))
    assert mine["state"] == "live" and mine["health"] == "degraded"
    assert (await shown(client, tid))["unavailable_reason"] == DEGRADED_NOTICE
    assert [e for e, by, _ in await notices_of(client, dept, tid) if by == "health"] == ["degraded"]

    site.up()
    clock.set(clock() + MINUTE)
    await health.run(services.pool, only=only)
    assert (await shown(client, tid))["status"] == "available"
    assert [e for e, by, _ in await notices_of(client, dept, tid) if by == "health"] == [
        "degraded",
        "recovered",
    ]


async def test_a_suspension_by_operations_is_not_lifted_by_a_recovery(client, services, site):
    dept, rev, tid = await watched(client, services, site, auto_suspend=True)
    ok(
        await review(
            client, rev, f"/{tid}/suspend", {"reason": "投诉核查中", "resident_notice": "核查中，暂停服务"}
        )
    )
    clock = SetClock(now())
    health = checks(services, clock)
    only = [uuid.UUID(tid)]
    site.down(502)
    for _ in range(2):
        await health.run(services.pool, only=only)
        clock.set(clock() + dt.timedelta(minutes=11))
    site.up()
    await health.run(services.pool, only=only)

    mine = ok(await manage(client, dept, "GET", f"/{tid}"))
    assert mine["state"] == "suspended" and mine["suspended_by"] == "operations" and mine["health"] == "ok"
    seen = await shown(client, tid)
    assert seen["status"] == "temporarily_unavailable" and seen["unavailable_reason"] == "核查中，暂停服务"
    told = [(e, by) for e, by, _ in await notices_of(client, dept, tid)]
    assert told[-3:] == [("suspend", "operations"), ("degraded", "health"), ("recovered", "health")]


async def test_a_suspension_by_the_department_is_not_lifted_by_a_recovery(client, services, site):
    dept, _, tid = await watched(client, services, site, auto_suspend=True)
    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "系统维护"}))
    clock = SetClock(now())
    health = checks(services, clock)
    site.down()
    for _ in range(3):
        await health.run(services.pool, only=[uuid.UUID(tid)])
        clock.set(clock() + dt.timedelta(minutes=11))
    site.up()
    await health.run(services.pool, only=[uuid.UUID(tid)])
    mine = ok(await manage(client, dept, "GET", f"/{tid}"))
    assert mine["state"] == "suspended" and mine["suspended_by"] == "department"


async def test_a_department_that_resumes_during_the_outage_keeps_its_tile_live(client, services, site):
    """The health checks suspend once per run of failures: a department that resumes its tile while the URL still
    fails (it knows better, say) is not overruled at the next round; a new outage suspends it again."""
    dept, _, tid = await watched(client, services, site, auto_suspend=True)
    clock = SetClock(now())
    health = checks(services, clock)
    only = [uuid.UUID(tid)]

    async def rounds(count: int, step: dt.timedelta = dt.timedelta(minutes=6)) -> None:
        for _ in range(count):
            await health.run(services.pool, only=only)
            clock.set(clock() + step)

    site.down()
    await rounds(3)
    assert ok(await manage(client, dept, "GET", f"/{tid}"))["suspended_by"] == "health"
    ok(await manage(client, dept, "POST", f"/{tid}/resume"))
    await rounds(3)
    mine = ok(await manage(client, dept, "GET", f"/{tid}"))
    assert mine["state"] == "live" and mine["health"] == "degraded"

    site.up()
    await rounds(1)
    site.down()
    await rounds(3)
    assert ok(await manage(client, dept, "GET", f"/{tid}"))["suspended_by"] == "health"
    told = [
        (e, by)
        for e, by, _ in await notices_of(client, dept, tid)
        if e not in ("submit", "approve", "publish")
    ]
    assert told == [
        ("degraded", "health"),
        ("suspend", "health"),
        ("resume", "department"),
        ("recovered", "health"),
        ("degraded", "health"),
        ("suspend", "health"),
    ]


async def test_two_runs_at_once_probe_a_tile_once(client, services, site):
    _, _, tid = await watched(client, services, site)
    clock = SetClock(now())
    health = checks(services, clock)
    first, second = await asyncio.gather(
        health.run(services.pool, only=[uuid.UUID(tid)]), health.run(services.pool, only=[uuid.UUID(tid)])
    )
    assert first["probed"] + second["probed"] == 1
    assert site.hits == {"/health": 1, "/h5": 1}
    # Not due again until the interval has passed.
    assert (await health.run(services.pool, only=[uuid.UUID(tid)]))["probed"] == 0
    clock.set(clock() + MINUTE)
    assert (await health.run(services.pool, only=[uuid.UUID(tid)]))["probed"] == 1


async def test_a_server_that_is_gone_is_a_failure(client, services, site):
    dept, _, tid = await watched(client, services, site)
    clock = SetClock(now())
    health = checks(services, clock, health_failures=1)
    await site.stop()  # nothing listens on the port any more
    await health.run(services.pool, only=[uuid.UUID(tid)])
    report = ok(await manage(client, dept, "GET", f"/{tid}/health"))
    assert report["health"] == "degraded" and report["consecutive_failures"] == 1
    assert {p["error"] for p in report["probes"]} == {"ConnectError"}


async def test_outside_dev_a_private_address_is_refused_not_probed(client, services, site):
    """The health checks resolve each name and refuse any private, loopback or link-local address (SSRF): the
    department's server on loopback never sees a request, and the round fails with the reason."""
    dept, _, tid = await watched(client, services, site)
    clock = SetClock(now())
    health = checks(services, clock, allow_private=False, health_failures=1)
    await health.run(services.pool, only=[uuid.UUID(tid)])
    assert site.hits == {}
    report = ok(await manage(client, dept, "GET", f"/{tid}/health"))
    assert report["health"] == "degraded"
    assert {p["error"] for p in report["probes"]} == {"refused: https required"}

    # An https name that resolves to an internal address is refused as well (the address is what is checked).
    async def internal(host: str, port: int) -> list[str]:
        return ["10.1.2.3"] if host == "gjj.example.cn" else ["169.254.169.254"]

    probe = HealthChecks(
        services.platform.get(TileService),
        TileSettings(),
        allow_private=False,
        caller=Caller.health(HEALTH_ACTOR),
        resolver=internal,
    )
    from app_backend.kernel import outbound

    async with outbound.client(2.0) as http:
        for url in ("https://gjj.example.cn/health", "https://metadata.example.cn/", "https://[::1]/"):
            result = await probe.probe(http, "health_check_url", url)
            assert not result.ok and result.error == "refused: not a public address", (url, result)


def test_the_worker_runs_the_tile_jobs_once_at_a_time(settings):
    """The cron jobs are SAQ's unique ones: one run of each is queued or running at a time, whichever worker
    schedules it (and two at once would still neither probe nor count twice: see the tests above and
    test_usage.py)."""
    from app_backend.composition.worker import build_worker
    from app_backend.tiles import tasks

    worker = build_worker(settings)
    crons = {cron.function: cron for cron in worker.cron_jobs}
    for job in (
        tasks.probe_tile_health,
        tasks.flush_tile_impressions,
        tasks.score_tile_usage,
        tasks.purge_tile_usage,
    ):
        assert job.__name__ in worker.functions
        assert crons[job].unique
    assert crons[tasks.probe_tile_health].cron == "* * * * *"
    assert crons[tasks.flush_tile_impressions].cron == "* * * * *"
