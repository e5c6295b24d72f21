"""What the organising department's system and a resident do in the events tests, over HTTP (tickets, bookings
and the gates' tests build on these: `organiser`, `published_session`, `set_session_status`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from tests.helpers import machine_credential, signed

MANAGE = "/api/v1/events/manage"
PUBLIC = "/api/v1/events"
SECTIONS = ("A区", "B区")
ENTRANCES = ("东门", "西门")


async def organiser(client: Any, services: Any) -> dict[str, Any]:
    """A new department whose credential publishes events (events:publish) and refunds (payments:refund)."""
    return await machine_credential(
        client, services, ["events:publish", "payments:refund"], kind="department"
    )


async def manage(
    client: Any, who: dict[str, Any], method: str, tail: str, body: Any = None
) -> httpx.Response:
    """A signed request of the organiser: `tail` after /api/v1/events/manage."""
    return await signed(client, who, method, MANAGE + tail, body)  # type: ignore[no-any-return]


def ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code in (200, 201), answer.text
    return answer.json()  # type: ignore[no-any-return]


def event_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "江苏省第二十一届运动会",
        "description": "省运会在泰州举行",
        "starts_on": "2026-09-01",
        "ends_on": "2026-09-15",
    }
    body.update(fields)
    return body


def venue_body(gate_verifiers: Iterable[Any] = (), **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "泰州市体育中心游泳馆",
        "address": "泰州市海陵区体育路1号",
        "district": "321202",
        "sections": list(SECTIONS),
        "entrances": list(ENTRANCES),
        "transport_notes": "乘坐3路公交至体育中心站",
        "accessibility_notes": "东门设无障碍通道",
        "gate_verifiers": [str(v) for v in gate_verifiers],
    }
    body.update(fields)
    return body


async def published_session(
    client: Any,
    services: Any,
    organiser: dict[str, Any] | None = None,
    *,
    starts_in: dt.timedelta = dt.timedelta(days=7),
    gate_verifiers: Iterable[Any] = (),
    sport: str = "游泳",
) -> dict[str, Any]:
    """A session of a new event, competition and venue of `organiser` (a new one when absent), scheduled to start
    `starts_in` from now for two hours, at a venue with sections A区, B区 and entrances 东门, 西门 whose gates are
    `gate_verifiers` (organisation ids)."""
    if organiser is None:
        organiser = await _new_organiser(client, services)
    event = ok(await manage(client, organiser, "POST", "/events", event_body()))
    competition = ok(
        await manage(
            client,
            organiser,
            "POST",
            f"/events/{event['id']}/competitions",
            {"sport": sport, "name": f"{sport}决赛"},
        )
    )
    venue = ok(await manage(client, organiser, "POST", "/venues", venue_body(gate_verifiers)))
    starts_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + starts_in
    session = ok(
        await manage(
            client,
            organiser,
            "POST",
            "/sessions",
            {
                "competition_id": competition["id"],
                "venue_id": venue["id"],
                "title": f"{sport}决赛 第{uuid.uuid4().hex[:4]}场",
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + dt.timedelta(hours=2)).isoformat(),
            },
        )
    )
    return {
        "organiser": organiser,
        "event_id": event["id"],
        "competition_id": competition["id"],
        "venue_id": venue["id"],
        "session_id": session["id"],
        "sections": list(SECTIONS),
        "entrances": list(ENTRANCES),
        "starts_at": session["starts_at"],
    }


async def _new_organiser(client: Any, services: Any) -> dict[str, Any]:
    return await organiser(client, services)


async def set_session_status(
    client: Any, organiser: dict[str, Any], session_id: Any, status: str, **fields: Any
) -> httpx.Response:
    """The organiser moves the session's status; `fields` are the rest of the body (reason, starts_at, ends_at;
    datetimes are sent in RFC 3339)."""
    body: dict[str, Any] = {"status": status}
    for name, value in fields.items():
        body[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return await manage(client, organiser, "POST", f"/sessions/{session_id}/status", body)
