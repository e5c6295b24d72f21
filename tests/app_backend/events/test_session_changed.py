"""`on_session_changed`: told once per change of a session's status or start, in the publishing transaction (what
a listener writes there commits with the change, or not at all), never for a repeated identical status."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app_backend.events.schemas import SessionFacts, StatusBody
from app_backend.events.service import Caller, EventsService
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from tests.app_backend.events.helpers import manage, ok, published_session, set_session_status


class Heard:
    """What the listener heard of the test's sessions; each hearing is also written in the listener's
    transaction (an audit row `test.session_heard`), to tell what committed from what was only called."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.sessions: set[uuid.UUID] = set()
        self.calls: list[tuple[uuid.UUID, str, str, dt.datetime]] = []

    async def __call__(self, conn: Connection, facts: SessionFacts, previous: str) -> None:
        if facts.id not in self.sessions:
            return
        self.calls.append((facts.id, previous, facts.status, facts.starts_at))
        await self.services.audit.record(
            conn,
            Actor("system", "test-listener"),
            "test.session_heard",
            target_type="session",
            target_id=str(facts.id),
            detail={"status": facts.status, "previous": previous},
        )

    async def durable(self, db: Any, session_id: uuid.UUID) -> list[str]:
        rows = await db.fetch(
            "SELECT detail FROM audit.events WHERE action = 'test.session_heard' AND target_id = $1 ORDER BY id",
            str(session_id),
        )
        return [f"{r['detail']['previous']}->{r['detail']['status']}" for r in rows]


@pytest.fixture
async def heard(services: Any) -> AsyncIterator[Heard]:
    # Listeners cannot be removed: one per test, answering only for the test's sessions.
    listener = Heard(services)
    services.platform.get(EventsService).on_session_changed(listener)
    yield listener
    listener.sessions.clear()


async def test_each_status_and_start_change_is_told_once(
    client: Any, services: Any, db: Any, heard: Heard
) -> None:
    made = await published_session(client, services)
    dept, sid = made["organiser"], uuid.UUID(made["session_id"])
    heard.sessions.add(sid)
    first = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=8)
    second = first + dt.timedelta(hours=3)

    ok(await set_session_status(client, dept, sid, "scheduled"))  # the same status: nothing
    ok(await set_session_status(client, dept, sid, "delayed", reason="天气原因", starts_at=first))
    ok(await set_session_status(client, dept, sid, "delayed", reason="天气原因", starts_at=first))  # the same
    ok(await set_session_status(client, dept, sid, "delayed", reason="天气原因"))  # the same, start omitted
    ok(await set_session_status(client, dept, sid, "delayed", reason="再次延期", starts_at=second))
    # A new end alone is stored but tells nobody.
    longer = ok(
        await set_session_status(
            client,
            dept,
            sid,
            "delayed",
            reason="再次延期",
            starts_at=second,
            ends_at=second + dt.timedelta(hours=4),
        )
    )
    assert dt.datetime.fromisoformat(longer["ends_at"]) == second + dt.timedelta(hours=4)
    # Renaming the session tells nobody; moving its start does.
    session = ok(await client.get(f"/api/v1/events/sessions/{sid}"))
    body = {
        "competition_id": made["competition_id"],
        "venue_id": made["venue_id"],
        "title": "新名称",
        "starts_at": session["starts_at"],
        "ends_at": session["ends_at"],
    }
    ok(await manage(client, dept, "PUT", f"/sessions/{sid}", body))
    third = second + dt.timedelta(days=1)
    ok(
        await manage(
            client,
            dept,
            "PUT",
            f"/sessions/{sid}",
            {**body, "starts_at": third.isoformat(), "ends_at": (third + dt.timedelta(hours=2)).isoformat()},
        )
    )
    ok(await set_session_status(client, dept, sid, "cancelled", reason="场馆检修"))
    ok(await set_session_status(client, dept, sid, "cancelled", reason="场馆检修"))  # the same: nothing
    assert (await set_session_status(client, dept, sid, "live")).status_code == 409  # refused: nothing

    assert [(prev, status, at) for _, prev, status, at in heard.calls] == [
        ("scheduled", "delayed", first),
        ("delayed", "delayed", second),
        ("delayed", "delayed", third),
        ("delayed", "cancelled", third),
    ]
    assert await heard.durable(db, sid) == [
        "scheduled->delayed",
        "delayed->delayed",
        "delayed->delayed",
        "delayed->cancelled",
    ]


async def test_a_rolled_back_change_leaves_nothing_the_listener_wrote(
    client: Any, services: Any, db: Any, heard: Heard
) -> None:
    made = await published_session(client, services)
    sid = uuid.UUID(made["session_id"])
    heard.sessions.add(sid)
    events = services.platform.get(EventsService)
    caller = Caller(uuid.UUID(made["organiser"]["organisation"]["id"]), Actor("organisation", "test"))

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        async with services.pool.acquire() as conn, conn.transaction():
            changed = await events.set_status(
                conn, caller, sid, StatusBody(status="cancelled", reason="测试回滚")
            )
            assert changed.status == "cancelled"
            raise Abandoned
    assert len(heard.calls) == 1  # called inside the transaction…
    assert await heard.durable(db, sid) == []  # …but nothing it wrote survived the rollback
    assert ok(await client.get(f"/api/v1/events/sessions/{sid}"))["status"] == "scheduled"
    audited = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'events.session_status' AND target_id = $1",
        str(sid),
    )
    assert audited == 0


async def test_a_listener_that_fails_fails_the_change(client: Any, services: Any, heard: Heard) -> None:
    made = await published_session(client, services)
    sid = uuid.UUID(made["session_id"])
    events = services.platform.get(EventsService)
    caller = Caller(uuid.UUID(made["organiser"]["organisation"]["id"]), Actor("organisation", "test"))
    failing = {sid}

    async def refuses(conn: Connection, facts: SessionFacts, previous: str) -> None:
        if facts.id in failing:
            raise RuntimeError("refunds unavailable")

    events.on_session_changed(refuses)
    try:
        with pytest.raises(RuntimeError):
            async with services.pool.acquire() as conn, conn.transaction():
                await events.set_status(conn, caller, sid, StatusBody(status="cancelled", reason="测试失败"))
    finally:
        failing.clear()
    assert ok(await client.get(f"/api/v1/events/sessions/{sid}"))["status"] == "scheduled"


async def test_concurrent_identical_cancellations_are_told_once(
    client: Any, services: Any, db: Any, heard: Heard
) -> None:
    made = await published_session(client, services)
    sid = uuid.UUID(made["session_id"])
    heard.sessions.add(sid)
    answers = await asyncio.gather(
        *(
            set_session_status(client, made["organiser"], sid, "cancelled", reason="场馆检修")
            for _ in range(8)
        )
    )
    assert [a.status_code for a in answers] == [200] * 8
    assert await heard.durable(db, sid) == ["scheduled->cancelled"]
