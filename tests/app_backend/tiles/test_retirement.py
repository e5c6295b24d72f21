"""Issue 16: retirement candidates. The report lists exactly the live tiles opened less than the threshold over the
period, or degraded too often in it (and, once ratings exist, rated badly), each with its figures; never a tile
newer than the period or one already retired. A reviewer retires a candidate in one step and the department is
told why, with the figures."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from app_backend.kernel.clock import now
from app_backend.kernel.db import Connection
from app_backend.kernel.settings import TileSettings
from app_backend.tiles.health import HealthChecks
from app_backend.tiles.service import HEALTH_ACTOR, Caller, TileService
from app_backend.tiles.usage import UsageService
from tests.app_backend.tiles.helpers import (
    NOTICES,
    department,
    live,
    manage,
    ok,
    review,
    reviewer,
    unique,
)
from tests.helpers import SetClock, bearer, login, signed, staff

CANDIDATES = "/api/v1/admin/tiles/retirement-candidates"


async def published_days_ago(services: Any, tile_id: str, days: int) -> None:
    """Stands in for time: the tile went live `days` ago (its versions' publication moved back)."""
    async with services.pool.acquire() as conn:
        await conn.execute(
            "UPDATE tiles.versions SET published_at = published_at - make_interval(days => $2)"
            " WHERE tile_id = $1 AND published_at IS NOT NULL",
            uuid.UUID(tile_id),
            days,
        )


async def open_times(client: Any, tile_id: str, times: int) -> None:
    for _ in range(times):
        resident = await login(client)
        answer = await client.post(f"/api/v1/tiles/{tile_id}/open", headers=bearer(resident))
        assert answer.status_code == 200, answer.text


class _Ratings:
    """What the ratings will tell the report (their own issue): here, the tiles named by the test."""

    def __init__(self, bad: dict[uuid.UUID, str]) -> None:
        self.bad = bad

    async def poorly_rated(
        self, conn: Connection, tile_ids: Sequence[uuid.UUID], start: dt.date, end: dt.date
    ) -> Mapping[uuid.UUID, str]:
        return {t: self.bad[t] for t in tile_ids if t in self.bad}


async def test_the_report_lists_exactly_the_tiles_under_the_thresholds(client, services, site):
    dept, rev = await department(client, services), await reviewer(client, services)
    tiles: TileService = services.platform.get(TileService)
    made = {
        kind: (
            await live(
                client,
                dept,
                rev,
                name=unique(kind),
                **(
                    {"health_check_url": site.url("/health"), "entry": {"h5_url": site.url("/h5")}}
                    if kind == "flaky"
                    else {}
                ),
            )
        )["id"]
        for kind in ("busy", "quiet", "unused", "flaky", "young", "retired", "suspended", "disliked")
    }
    for kind, tid in made.items():
        if kind != "young":
            await published_days_ago(services, tid, 40)
    await open_times(client, made["busy"], 3)
    await open_times(client, made["quiet"], 2)
    await open_times(client, made["flaky"], 5)
    await open_times(client, made["disliked"], 4)
    ok(await manage(client, dept, "POST", f"/{made['retired']}/retire", {"reason": "业务调整"}))
    ok(await manage(client, dept, "POST", f"/{made['suspended']}/suspend", {"reason": "系统维护"}))

    # The flaky tile is degraded twice by the health checks (down, up, down).
    clock = SetClock(now())
    health = HealthChecks(
        tiles,
        TileSettings(health_interval=60, health_failures=1),
        allow_private=True,
        caller=Caller.health(HEALTH_ACTOR),
        clock=clock,
    )
    for status in (503, 200, 503, 200):
        site.status = status
        await health.run(services.pool, only=[uuid.UUID(made["flaky"])])
        clock.set(clock() + dt.timedelta(minutes=2))

    rules = TileSettings(retire_period_days=30, retire_min_opens=3, retire_max_outages=2)
    platform = services.platform
    usage = UsageService(
        tiles, platform.redis, platform.batches, platform.breaker, rules, platform.settings.public_base_url
    )
    usage.use_ratings(_Ratings({uuid.UUID(made["disliked"]): "差评 12 / 20"}))
    async with services.pool.acquire() as conn:
        report = await usage.retirement_candidates(conn)
    assert (report.period_days, report.min_opens, report.max_outages) == (30, 3, 2)
    assert report.end - report.start == dt.timedelta(days=29)
    mine = {str(c.tile_id): c for c in report.candidates if str(c.tile_id) in made.values()}
    by_kind = {kind: mine[tid].reasons for kind, tid in made.items() if tid in mine}
    assert by_kind == {
        "quiet": ["low_use"],
        "unused": ["low_use"],
        "suspended": ["low_use"],
        "flaky": ["health_failures"],
        "disliked": ["bad_ratings"],
    }
    quiet = mine[made["quiet"]]
    assert (quiet.figures.opens, quiet.figures.residents, quiet.name) == (2, 2, quiet.name)
    flaky = mine[made["flaky"]].figures
    assert (flaky.opens, flaky.outages, flaky.probes, flaky.probe_failures) == (5, 2, 4, 2)
    assert flaky.availability == 0.5
    assert mine[made["disliked"]].ratings == "差评 12 / 20"
    # Least used first.
    listed = [str(c.tile_id) for c in report.candidates if str(c.tile_id) in made.values()]
    assert listed.index(made["unused"]) < listed.index(made["quiet"]) < listed.index(made["flaky"])


async def test_a_reviewer_retires_a_candidate_in_one_step_and_the_department_is_told_why(client, services):
    """With the platform's settings (90 days, 100 opens): a tile live for 100 days and opened once is listed; one
    published today is not."""
    dept, rev = await department(client, services), await reviewer(client, services)
    old = (await live(client, dept, rev, name=unique("冷门")))["id"]
    young = (await live(client, dept, rev, name=unique("新上线")))["id"]
    await published_days_ago(services, old, 100)
    await open_times(client, old, 1)

    answer = await client.get(CANDIDATES, headers=bearer(rev))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["period_days"], report["min_opens"], report["max_outages"]) == (90, 100, 3)
    listed = {c["tile_id"]: c for c in report["candidates"]}
    assert old in listed and young not in listed
    assert listed[old]["reasons"] == ["low_use"] and listed[old]["figures"]["opens"] == 1
    assert listed[old]["organisation_id"] == dept["organisation"]["id"]

    # An auditor reads the report but does not retire; a tile the report does not list is refused.
    auditor = await staff(client, services, role="auditor")
    assert (await client.get(CANDIDATES, headers=bearer(auditor))).status_code == 200
    refused = await client.post(
        f"{CANDIDATES}/{old}/retire", json={"reason": "使用率低"}, headers=bearer(auditor)
    )
    assert refused.status_code == 403
    refused = await review(client, rev, f"/retirement-candidates/{young}/retire", {"reason": "使用率低"})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/not-a-retirement-candidate")
    assert (
        await review(client, rev, f"/retirement-candidates/{uuid.uuid4()}/retire", {"reason": "使用率低"})
    ).status_code == 404

    tile = ok(
        await review(client, rev, f"/retirement-candidates/{old}/retire", {"reason": "使用率低，予以清理"})
    )
    assert tile["state"] == "retired"
    assert (
        tile["state_reason"].startswith("使用率低，予以清理（")
        and "打开1次，低于100次" in tile["state_reason"]
    )
    notices = (await signed(client, dept, "GET", NOTICES)).json()["notices"]
    told = next(n for n in notices if n["tile_id"] == old)
    assert (told["event"], told["by"], told["read_at"]) == ("retire", "operations", None)
    assert told["reason"] == tile["state_reason"]
    assert (await client.get(f"/api/v1/tiles/{old}")).status_code == 404
    after = {c["tile_id"] for c in (await client.get(CANDIDATES, headers=bearer(rev))).json()["candidates"]}
    assert old not in after
