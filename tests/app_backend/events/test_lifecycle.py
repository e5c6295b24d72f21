"""The schedule's whole path by HTTP: the organising department publishes an event, its competitions, a venue, a
session, a broadcast link and news through signed requests; a resident reads them without logging in, in Chinese;
the session is delayed, goes live, finishes; each publish is in the audit trail."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from tests.app_backend.events.helpers import (
    PUBLIC,
    event_body,
    manage,
    ok,
    organiser,
    set_session_status,
    venue_body,
)


async def test_the_department_publishes_and_a_resident_reads_the_schedule(
    client: Any, services: Any, db: Any
) -> None:
    dept = await organiser(client, services)
    gate = await organiser(client, services)
    sport = f"游泳{uuid.uuid4().hex[:4]}"

    event = ok(await manage(client, dept, "POST", "/events", event_body()))
    assert event["competitions"] == []
    final = ok(
        await manage(
            client,
            dept,
            "POST",
            f"/events/{event['id']}/competitions",
            {"sport": sport, "name": "男子100米自由泳决赛"},
        )
    )
    heats = ok(
        await manage(
            client, dept, "POST", f"/events/{event['id']}/competitions", {"sport": sport, "name": "预赛"}
        )
    )
    renamed = ok(
        await manage(
            client,
            dept,
            "PUT",
            f"/competitions/{heats['id']}",
            {"sport": sport, "name": "男子100米自由泳预赛"},
        )
    )
    assert renamed["name"] == "男子100米自由泳预赛"
    venue = ok(await manage(client, dept, "POST", "/venues", venue_body([gate["organisation"]["id"]])))
    assert venue["district_name"] == "海陵区" and venue["gate_verifiers"] == [gate["organisation"]["id"]]

    starts_at = dt.datetime(2026, 9, 3, 1, 30, tzinfo=dt.UTC)  # 09:30 in Taizhou
    session = ok(
        await manage(
            client,
            dept,
            "POST",
            "/sessions",
            {
                "competition_id": final["id"],
                "venue_id": venue["id"],
                "title": "男子100米自由泳决赛",
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + dt.timedelta(hours=2)).isoformat(),
            },
        )
    )
    assert session["status"] == "scheduled" and session["status_name"] == "按时进行"
    sid = session["id"]
    link = ok(
        await manage(
            client,
            dept,
            "POST",
            f"/sessions/{sid}/broadcasts",
            {"platform": "央视频", "url": "https://live.example.cn/swim"},
        )
    )
    news = ok(
        await manage(
            client,
            dept,
            "POST",
            "/news",
            {"title": "省运会游泳比赛开赛", "body": "今日开赛。", "event_id": event["id"]},
        )
    )
    later = ok(
        await manage(
            client,
            dept,
            "POST",
            "/news",
            {"title": "明日预告", "body": "明日更精彩。", "published_at": "2099-01-01T00:00:00+08:00"},
        )
    )

    # A resident, with no token.
    listed = ok(await client.get(PUBLIC))
    assert event["id"] in [e["id"] for e in listed["events"]]
    detail = ok(await client.get(f"{PUBLIC}/{event['id']}"))
    assert detail["name"] == "江苏省第二十一届运动会"
    assert sorted(c["name"] for c in detail["competitions"]) == ["男子100米自由泳决赛", "男子100米自由泳预赛"]
    day = ok(await client.get(f"{PUBLIC}/sessions", params={"date": "2026-09-03", "sport": sport}))
    assert [s["id"] for s in day["sessions"]] == [sid] and day["next_page"] is None
    shown = day["sessions"][0]
    assert (
        shown["venue_name"] == "泰州市体育中心游泳馆" and shown["competition_name"] == "男子100米自由泳决赛"
    )
    assert shown["broadcasts"] == [link]
    assert ok(await client.get(f"{PUBLIC}/sessions/{sid}/broadcasts"))["broadcasts"] == [link]
    guide = ok(await client.get(f"{PUBLIC}/venues/{venue['id']}"))
    assert guide["sections"] == ["A区", "B区"] and guide["entrances"] == ["东门", "西门"]
    assert (
        guide["transport_notes"] == "乘坐3路公交至体育中心站"
        and guide["accessibility_notes"] == "东门设无障碍通道"
    )
    assert venue["id"] in [v["id"] for v in ok(await client.get(f"{PUBLIC}/venues"))["venues"]]
    of_event = ok(await client.get(f"{PUBLIC}/news", params={"event_id": event["id"]}))
    assert [n["id"] for n in of_event["news"]] == [news["id"]]
    every = [n["id"] for n in ok(await client.get(f"{PUBLIC}/news", params={"page_size": 100}))["news"]]
    assert news["id"] in every and later["id"] not in every  # not yet published
    assert (await client.get(f"{PUBLIC}/news/{later['id']}")).status_code == 404
    assert ok(await client.get(f"{PUBLIC}/news/{news['id']}"))["body"] == "今日开赛。"

    # Delayed by an hour: the resident sees the new start and the reason; then live, then finished.
    new_start = starts_at + dt.timedelta(hours=1)
    delayed = ok(
        await set_session_status(client, dept, sid, "delayed", reason="天气原因", starts_at=new_start)
    )
    assert delayed["status_name"] == "延期" and delayed["status_reason"] == "天气原因"
    seen = ok(await client.get(f"{PUBLIC}/sessions/{sid}"))
    assert seen["status"] == "delayed"
    assert dt.datetime.fromisoformat(seen["starts_at"]) == new_start
    assert dt.datetime.fromisoformat(seen["ends_at"]) == new_start + dt.timedelta(hours=2)
    assert dt.datetime.fromisoformat(seen["scheduled_starts_at"]) == starts_at
    ok(await set_session_status(client, dept, sid, "live"))
    assert ok(await client.get(f"{PUBLIC}/sessions/{sid}"))["status_name"] == "进行中"
    ok(await set_session_status(client, dept, sid, "finished"))
    refused = await set_session_status(client, dept, sid, "live")
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/session-status") and "finished" in refused.json()["detail"]

    # Withdrawn news and a removed link are gone for residents.
    assert (await manage(client, dept, "DELETE", f"/broadcasts/{link['id']}")).status_code == 204
    assert (await manage(client, dept, "DELETE", f"/news/{news['id']}")).status_code == 204
    assert ok(await client.get(f"{PUBLIC}/sessions/{sid}"))["broadcasts"] == []
    assert (await client.get(f"{PUBLIC}/news/{news['id']}")).status_code == 404

    # Every publish of the department is in the audit trail, as the organisation.
    actions = await db.fetch(
        "SELECT action, actor_type, actor_id FROM audit.events WHERE target_id = $1 ORDER BY id", sid
    )
    assert [a["action"] for a in actions] == [
        "events.session_create",
        "events.broadcast_create",
        "events.session_status",
        "events.session_status",
        "events.session_status",
        "events.broadcast_delete",
    ]
    assert {(a["actor_type"], a["actor_id"]) for a in actions} == {
        ("organisation", dept["organisation"]["id"])
    }


async def test_the_department_changes_its_event_venue_and_session(client: Any, services: Any) -> None:
    dept = await organiser(client, services)
    event = ok(await manage(client, dept, "POST", "/events", event_body()))
    changed = ok(
        await manage(
            client,
            dept,
            "PUT",
            f"/events/{event['id']}",
            event_body(name="省运会（泰州）", ends_on="2026-09-20"),
        )
    )
    assert changed["name"] == "省运会（泰州）" and changed["ends_on"] == "2026-09-20"
    venue = ok(await manage(client, dept, "POST", "/venues", venue_body()))
    moved = ok(
        await manage(
            client, dept, "PUT", f"/venues/{venue['id']}", venue_body(district="321204", entrances=["北门"])
        )
    )
    assert moved["district_name"] == "姜堰区" and moved["entrances"] == ["北门"]
    assert ok(await client.get(f"{PUBLIC}/venues/{venue['id']}"))["entrances"] == ["北门"]
    competition = ok(
        await manage(
            client,
            dept,
            "POST",
            f"/events/{event['id']}/competitions",
            {"sport": "田径", "name": "男子100米"},
        )
    )
    starts_at = dt.datetime(2026, 9, 5, 8, 0, tzinfo=dt.UTC)
    body = {
        "competition_id": competition["id"],
        "venue_id": venue["id"],
        "title": "男子100米决赛",
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + dt.timedelta(hours=1)).isoformat(),
    }
    session = ok(await manage(client, dept, "POST", "/sessions", body))
    renamed = ok(
        await manage(
            client, dept, "PUT", f"/sessions/{session['id']}", {**body, "title": "男子100米决赛（改）"}
        )
    )
    assert renamed["title"] == "男子100米决赛（改）" and renamed["status"] == "scheduled"
    ok(await set_session_status(client, dept, session["id"], "cancelled", reason="赛程调整"))
    final = await manage(client, dept, "PUT", f"/sessions/{session['id']}", body)
    assert final.status_code == 409 and "cancelled" in final.json()["detail"]
