"""What the schedule refuses: another organisation's rows (404, as if absent), bad fields (4xx naming the field),
illegal status moves (409 naming them), a credential without events:publish (403), an unsigned request (401)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.app_backend.events.helpers import (
    MANAGE,
    event_body,
    manage,
    ok,
    organiser,
    published_session,
    set_session_status,
    venue_body,
)
from tests.helpers import machine_credential


def _field(answer: Any) -> str:
    """The field a 4xx names."""
    problem = answer.json()
    return str(problem["errors"][0]["field"]) if problem.get("errors") else str(problem.get("detail", ""))


async def test_another_organisations_rows_are_not_found(client: Any, services: Any) -> None:
    made = await published_session(client, services)
    other = await organiser(client, services)
    sid = made["session_id"]
    session_body = {
        "competition_id": made["competition_id"],
        "venue_id": made["venue_id"],
        "title": "冒名场次",
        "starts_at": "2026-09-03T09:00:00+08:00",
        "ends_at": "2026-09-03T11:00:00+08:00",
    }
    for answer in (
        await set_session_status(client, other, sid, "cancelled", reason="冒名取消"),
        await manage(client, other, "PUT", f"/sessions/{sid}", session_body),
        await manage(
            client,
            other,
            "POST",
            f"/sessions/{sid}/broadcasts",
            {"platform": "某台", "url": "https://x.example.cn/"},
        ),
        await manage(client, other, "PUT", f"/events/{made['event_id']}", event_body()),
        await manage(
            client,
            other,
            "POST",
            f"/events/{made['event_id']}/competitions",
            {"sport": "游泳", "name": "冒名"},
        ),
        await manage(
            client, other, "PUT", f"/competitions/{made['competition_id']}", {"sport": "游泳", "name": "冒名"}
        ),
        await manage(client, other, "PUT", f"/venues/{made['venue_id']}", venue_body()),
    ):
        assert answer.status_code == 404, answer.text
    # Nor may it schedule a session in the owner's competition or venue, nor news of its event.
    own = ok(await manage(client, other, "POST", "/venues", venue_body()))
    answer = await manage(client, other, "POST", "/sessions", {**session_body, "venue_id": own["id"]})
    assert answer.status_code == 422 and _field(answer) == "competition_id"
    news = await manage(
        client, other, "POST", "/news", {"title": "冒名", "body": "冒名", "event_id": made["event_id"]}
    )
    assert news.status_code == 422 and _field(news) == "event_id"
    owners = ok(await manage(client, made["organiser"], "POST", "/news", {"title": "公告", "body": "正文"}))
    for method in ("PUT", "DELETE"):
        answer = await manage(
            client,
            other,
            method,
            f"/news/{owners['id']}",
            {"title": "改", "body": "改"} if method == "PUT" else None,
        )
        assert answer.status_code == 404, answer.text
    link = ok(
        await manage(
            client,
            made["organiser"],
            "POST",
            f"/sessions/{sid}/broadcasts",
            {"platform": "央视频", "url": "https://live.example.cn/a"},
        )
    )
    assert (await manage(client, other, "DELETE", f"/broadcasts/{link['id']}")).status_code == 404
    # Untouched.
    assert ok(await client.get(f"/api/v1/events/sessions/{sid}"))["status"] == "scheduled"


@pytest.mark.parametrize(
    ("tail", "body", "status", "field"),
    [
        ("/events", event_body(name=" "), 400, "name"),
        ("/events", event_body(ends_on="2026-08-01"), 400, "ends_on"),
        ("/events", event_body(starts_on="2026-13-01"), 400, "starts_on"),
        ("/events", {**event_body(), "colour": "red"}, 400, "colour"),
        ("/events", event_body(starts_on="1999-12-31"), 400, "starts_on"),
        (
            "/news",
            {"title": "标题", "body": "正文", "published_at": "9999-12-31T23:59:59-12:00"},
            400,
            "published_at",
        ),
        ("/venues", venue_body(district="110101"), 400, "district"),
        ("/venues", venue_body(sections=["A区", "A区"]), 400, "sections"),
        ("/venues", venue_body(gate_verifiers=[uuid.uuid4()]), 422, "gate_verifiers"),
        ("/venues", venue_body(name=""), 400, "name"),
        ("/news", {"title": "标题", "body": ""}, 400, "body"),
        (
            "/news",
            {"title": "标题", "body": "正文", "published_at": "2026-09-01T10:00:00"},
            400,
            "published_at",
        ),
    ],
)
async def test_bad_fields_are_named(
    client: Any, services: Any, tail: str, body: dict[str, Any], status: int, field: str
) -> None:
    dept = await organiser(client, services)
    answer = await manage(client, dept, "POST", tail, body)
    assert answer.status_code == status, answer.text
    assert field in _field(answer), answer.text


async def test_bad_session_and_status_fields_are_named(client: Any, services: Any) -> None:
    made = await published_session(client, services)
    dept, sid = made["organiser"], made["session_id"]
    body = {
        "competition_id": made["competition_id"],
        "venue_id": made["venue_id"],
        "title": "决赛",
        "starts_at": "2026-09-03T09:00:00+08:00",
        "ends_at": "2026-09-03T08:00:00+08:00",
    }
    for change, status, field in (
        ({}, 400, "ends_at"),
        ({"ends_at": "2026-09-03T11:00:00+08:00", "venue_id": str(uuid.uuid4())}, 422, "venue_id"),
        ({"ends_at": "2026-09-03T11:00:00+08:00", "title": "  "}, 400, "title"),
        ({"ends_at": "2026-09-03T11:00:00"}, 400, "ends_at"),
        (
            {"starts_at": "0001-01-01T00:00:00+14:00", "ends_at": "0001-01-01T01:00:00+14:00"},
            400,
            "starts_at",
        ),
        ({"starts_at": "2026-09-03T09:00:00+08:00", "ends_at": "9999-12-31T23:00:00-12:00"}, 400, "ends_at"),
    ):
        answer = await manage(client, dept, "POST", "/sessions", {**body, **change})
        assert answer.status_code == status and field in _field(answer), (change, answer.text)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=9)
    for status_name, fields, field in (
        ("cancelled", {}, "reason"),
        ("delayed", {"starts_at": later}, "reason"),
        ("delayed", {"reason": "天气原因"}, "starts_at"),
        ("delayed", {"reason": "天气原因", "starts_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "starts_at"),
        ("delayed", {"reason": "天气原因", "starts_at": later, "ends_at": later}, "ends_at"),
        (
            "delayed",
            {"reason": "天气原因", "starts_at": dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)},
            "starts_at",
        ),
        ("live", {"starts_at": later}, "starts_at"),
        ("postponed", {}, "status"),
    ):
        answer = await set_session_status(client, dept, sid, status_name, **fields)
        assert answer.status_code == 400 and field in _field(answer), (status_name, fields, answer.text)
    for url in (
        "http://live.example.cn/",
        "https:///path",
        "https://live.example.cn/a b",
        "ftp://x.example.cn/",
    ):
        bad_link = await manage(
            client, dept, "POST", f"/sessions/{sid}/broadcasts", {"platform": "某台", "url": url}
        )
        assert bad_link.status_code == 400 and "url" in _field(bad_link), (url, bad_link.text)


@pytest.mark.parametrize(
    ("path", "moves", "refused"),
    [
        ("cancelled", ["cancelled"], "live"),
        ("cancelled", ["cancelled"], "delayed"),
        ("finished", ["live", "finished"], "cancelled"),
        ("finished", ["live", "finished"], "scheduled"),
        ("scheduled", [], "finished"),
        ("live", ["live"], "delayed"),
        ("live", ["live"], "scheduled"),
    ],
)
async def test_illegal_status_moves_are_409_naming_them(
    client: Any, services: Any, path: str, moves: list[str], refused: str
) -> None:
    made = await published_session(client, services)
    for move in moves:
        ok(await set_session_status(client, made["organiser"], made["session_id"], move, reason="原因说明"))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=9)
    answer = await set_session_status(
        client,
        made["organiser"],
        made["session_id"],
        refused,
        reason="原因说明",
        **({"starts_at": later} if refused == "delayed" else {}),
    )
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/session-status")
    assert problem["state"] == path and problem["refused"] == refused
    assert f"a {path} session cannot become {refused}" in problem["detail"]


async def test_a_credential_without_the_publish_scope_is_refused(client: Any, services: Any) -> None:
    tiles_only = await machine_credential(client, services, ["tiles:manage"], kind="department")
    answer = await manage(client, tiles_only, "POST", "/events", event_body())
    assert answer.status_code == 403 and "events:publish" in answer.json()["detail"]
    made = await published_session(client, services)
    answer = await set_session_status(client, tiles_only, made["session_id"], "cancelled", reason="无权限")
    assert answer.status_code == 403
    unsigned = await client.post(MANAGE + "/events", json=event_body())
    assert unsigned.status_code == 401
