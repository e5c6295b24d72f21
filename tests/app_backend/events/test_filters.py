"""Residents' session list: by business day (Asia/Shanghai, not UTC), sport, venue and event, paged."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.clock import BUSINESS_TZ, business_day
from tests.app_backend.events.helpers import PUBLIC, event_body, manage, ok, organiser, venue_body

UTC = dt.UTC


async def _schedule(
    client: Any, dept: dict[str, Any], competition_id: str, venue_id: str, at: dt.datetime
) -> str:
    session = ok(
        await manage(
            client,
            dept,
            "POST",
            "/sessions",
            {
                "competition_id": competition_id,
                "venue_id": venue_id,
                "title": f"场次{at:%m%d%H%M}",
                "starts_at": at.isoformat(),
                "ends_at": (at + dt.timedelta(hours=1)).isoformat(),
            },
        )
    )
    return str(session["id"])


async def _ids(client: Any, **params: Any) -> list[str]:
    answer = ok(await client.get(f"{PUBLIC}/sessions", params={k: str(v) for k, v in params.items()}))
    return [s["id"] for s in answer["sessions"]]


async def test_sessions_by_day_sport_venue_event_and_page(client: Any, services: Any) -> None:
    dept = await organiser(client, services)
    swim, dive = f"游泳{uuid.uuid4().hex[:4]}", f"跳水{uuid.uuid4().hex[:4]}"
    event = ok(await manage(client, dept, "POST", "/events", event_body()))
    other_event = ok(await manage(client, dept, "POST", "/events", event_body(name="市运会")))
    swimming = ok(
        await manage(
            client, dept, "POST", f"/events/{event['id']}/competitions", {"sport": swim, "name": "游泳"}
        )
    )
    diving = ok(
        await manage(
            client, dept, "POST", f"/events/{other_event['id']}/competitions", {"sport": dive, "name": "跳水"}
        )
    )
    pool = ok(await manage(client, dept, "POST", "/venues", venue_body()))
    hall = ok(await manage(client, dept, "POST", "/venues", venue_body(name="泰州体育馆")))

    # 9 October 23:30 and 10 October 00:30, 23:30 and 11 October 00:30, Taizhou time.
    late_9 = await _schedule(
        client, dept, swimming["id"], pool["id"], dt.datetime(2026, 10, 9, 15, 30, tzinfo=UTC)
    )
    early_10 = await _schedule(
        client, dept, swimming["id"], pool["id"], dt.datetime(2026, 10, 9, 16, 30, tzinfo=UTC)
    )
    late_10 = await _schedule(
        client, dept, swimming["id"], hall["id"], dt.datetime(2026, 10, 10, 15, 30, tzinfo=UTC)
    )
    early_11 = await _schedule(
        client, dept, swimming["id"], pool["id"], dt.datetime(2026, 10, 10, 16, 30, tzinfo=UTC)
    )
    diving_10 = await _schedule(
        client, dept, diving["id"], hall["id"], dt.datetime(2026, 10, 10, 2, 0, tzinfo=UTC)
    )

    assert await _ids(client, date="2026-10-10", sport=swim) == [early_10, late_10]
    assert await _ids(client, date="2026-10-09", sport=swim) == [late_9]
    assert await _ids(client, date="2026-10-11", sport=swim) == [early_11]
    assert await _ids(client, sport=swim) == [late_9, early_10, late_10, early_11]
    assert await _ids(client, date="2026-10-10", sport=dive) == [diving_10]
    assert await _ids(client, venue_id=hall["id"]) == [diving_10, late_10]
    assert await _ids(client, venue_id=hall["id"], sport=swim) == [late_10]
    assert await _ids(client, event_id=other_event["id"]) == [diving_10]
    assert await _ids(client, date="2026-10-10", event_id=event["id"]) == [early_10, late_10]

    pages, page = [], 1
    while True:
        answer = ok(
            await client.get(
                f"{PUBLIC}/sessions", params={"sport": swim, "page_size": "3", "page": str(page)}
            )
        )
        pages.append([s["id"] for s in answer["sessions"]])
        if answer["next_page"] is None:
            break
        page = answer["next_page"]
    assert pages == [[late_9, early_10, late_10], [early_11]]


async def test_today_is_the_business_day(client: Any, services: Any) -> None:
    dept = await organiser(client, services)
    sport = f"射击{uuid.uuid4().hex[:4]}"
    event = ok(await manage(client, dept, "POST", "/events", event_body()))
    competition = ok(
        await manage(
            client, dept, "POST", f"/events/{event['id']}/competitions", {"sport": sport, "name": "射击"}
        )
    )
    venue = ok(await manage(client, dept, "POST", "/venues", venue_body()))
    noon = dt.datetime.combine(business_day(), dt.time(12), BUSINESS_TZ)
    today = await _schedule(client, dept, competition["id"], venue["id"], noon)
    await _schedule(client, dept, competition["id"], venue["id"], noon + dt.timedelta(days=1))
    assert await _ids(client, date="today", sport=sport) == [today]


async def test_bad_filters_are_named(client: Any) -> None:
    for params, field in (
        ({"date": "2026-02-30"}, "date"),
        ({"date": "yesterday"}, "date"),
        ({"date": "9999-12-31"}, "date"),
        ({"date": "0001-01-01"}, "date"),
        ({"venue_id": "not-a-uuid"}, "venue_id"),
        ({"page": "0"}, "page"),
        ({"page_size": "101"}, "page_size"),
    ):
        answer = await client.get(f"{PUBLIC}/sessions", params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert field in answer.text, (params, answer.text)
