"""The schedule's public facts other domains build on: a published session's and venue's facts, and a status change
told to `on_session_changed` listeners."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from app_backend.events.schemas import SessionFacts
from app_backend.events.service import EventsService
from app_backend.kernel.db import Connection
from tests.app_backend.events.helpers import organiser, published_session, set_session_status


async def test_a_published_sessions_facts_and_a_cancellation_told_to_listeners(
    client: Any, services: Any
) -> None:
    gate = await organiser(client, services)
    made = await published_session(client, services, gate_verifiers=[gate["organisation"]["id"]])
    session_id = uuid.UUID(made["session_id"])
    events = services.platform.get(EventsService)
    heard: list[tuple[SessionFacts, str]] = []

    async def listener(conn: Connection, facts: SessionFacts, previous: str) -> None:
        if facts.id == session_id:
            heard.append((facts, previous))

    events.on_session_changed(listener)
    async with services.pool.acquire() as conn:
        facts = await events.session_facts(conn, session_id)
        venue = await events.venue_facts(conn, uuid.UUID(made["venue_id"]))
        assert await events.session_facts(conn, uuid.uuid4()) is None
    assert facts is not None and venue is not None
    assert facts.status == "scheduled" and facts.sport == "游泳"
    assert facts.organiser_id == uuid.UUID(made["organiser"]["organisation"]["id"])
    assert facts.sections == ("A区", "B区") and facts.entrances == ("东门", "西门")
    assert facts.gate_verifiers == (uuid.UUID(gate["organisation"]["id"]),) == venue.gate_verifiers
    assert facts.ends_at - facts.starts_at == dt.timedelta(hours=2)

    answer = await set_session_status(client, made["organiser"], session_id, "cancelled", reason="场馆检修")
    assert answer.status_code == 200, answer.text
    assert [(f.status, previous) for f, previous in heard] == [("cancelled", "scheduled")]
