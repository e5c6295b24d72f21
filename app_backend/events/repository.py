"""All SQL of the events zone's schedule: events, competitions, venues, sessions, news and broadcast links."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_EVENT = "id, organiser_id, name, description, starts_on, ends_on"
_COMPETITION = "id, event_id, organiser_id, sport, name"
_VENUE = """id, organiser_id, name, address, district, sections, entrances, transport_notes, accessibility_notes,
    gate_verifiers"""
# A session with what residents read beside it (its competition's sport and name, its venue's name).
_SESSION = """s.id, s.event_id, s.competition_id, c.name AS competition_name, c.sport, s.organiser_id, s.venue_id,
    v.name AS venue_name, s.title, s.starts_at, s.ends_at, s.scheduled_starts_at, s.status, s.status_reason"""
_SESSION_FROM = """events.sessions s JOIN events.competitions c ON c.id = s.competition_id
    JOIN events.venues v ON v.id = s.venue_id"""
_FACTS = """s.id, s.event_id, s.organiser_id, s.venue_id, s.title, c.sport, s.starts_at, s.ends_at, s.status,
    v.sections, v.entrances, v.gate_verifiers"""
_NEWS = "id, organiser_id, event_id, title, body, published_at"
_BROADCAST = "id, session_id, organiser_id, platform, url"


class EventRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    description: str
    starts_on: dt.date
    ends_on: dt.date


class CompetitionRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    organiser_id: uuid.UUID
    sport: str
    name: str


class VenueRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organiser_id: uuid.UUID
    name: str
    address: str
    district: str
    sections: list[str]
    entrances: list[str]
    transport_notes: str
    accessibility_notes: str
    gate_verifiers: list[uuid.UUID]


class SessionRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    competition_id: uuid.UUID
    competition_name: str
    sport: str
    organiser_id: uuid.UUID
    venue_id: uuid.UUID
    venue_name: str
    title: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    scheduled_starts_at: dt.datetime
    status: str
    status_reason: str | None


class FactsRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    organiser_id: uuid.UUID
    venue_id: uuid.UUID
    title: str
    sport: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str
    sections: list[str]
    entrances: list[str]
    gate_verifiers: list[uuid.UUID]


class NewsRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organiser_id: uuid.UUID
    event_id: uuid.UUID | None
    title: str
    body: str
    published_at: dt.datetime


class BroadcastRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    session_id: uuid.UUID
    organiser_id: uuid.UUID
    platform: str
    url: str


class EventRepository:
    async def create(
        self,
        conn: Connection,
        organiser_id: uuid.UUID,
        name: str,
        description: str,
        starts_on: dt.date,
        ends_on: dt.date,
    ) -> EventRow:
        row = await fetch_row(
            conn,
            EventRow,
            f"""INSERT INTO events.events (organiser_id, name, description, starts_on, ends_on)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_EVENT}""",
            organiser_id,
            name,
            description,
            starts_on,
            ends_on,
        )
        assert row is not None
        return row

    async def update(
        self,
        conn: Connection,
        event_id: uuid.UUID,
        name: str,
        description: str,
        starts_on: dt.date,
        ends_on: dt.date,
    ) -> EventRow:
        row = await fetch_row(
            conn,
            EventRow,
            f"""UPDATE events.events SET name = $2, description = $3, starts_on = $4, ends_on = $5,
                    updated_at = now()
                WHERE id = $1 RETURNING {_EVENT}""",
            event_id,
            name,
            description,
            starts_on,
            ends_on,
        )
        assert row is not None
        return row

    async def get(self, conn: Connection, event_id: uuid.UUID) -> EventRow | None:
        return await fetch_row(conn, EventRow, f"SELECT {_EVENT} FROM events.events WHERE id = $1", event_id)

    async def listed(self, conn: Connection, limit: int) -> list[EventRow]:
        return await fetch_rows(
            conn, EventRow, f"SELECT {_EVENT} FROM events.events ORDER BY starts_on DESC, id LIMIT $1", limit
        )


class CompetitionRepository:
    async def create(
        self, conn: Connection, event_id: uuid.UUID, organiser_id: uuid.UUID, sport: str, name: str
    ) -> CompetitionRow:
        row = await fetch_row(
            conn,
            CompetitionRow,
            f"""INSERT INTO events.competitions (event_id, organiser_id, sport, name) VALUES ($1, $2, $3, $4)
                RETURNING {_COMPETITION}""",
            event_id,
            organiser_id,
            sport,
            name,
        )
        assert row is not None
        return row

    async def update(
        self, conn: Connection, competition_id: uuid.UUID, sport: str, name: str
    ) -> CompetitionRow:
        row = await fetch_row(
            conn,
            CompetitionRow,
            f"""UPDATE events.competitions SET sport = $2, name = $3, updated_at = now() WHERE id = $1
                RETURNING {_COMPETITION}""",
            competition_id,
            sport,
            name,
        )
        assert row is not None
        return row

    async def get(self, conn: Connection, competition_id: uuid.UUID) -> CompetitionRow | None:
        return await fetch_row(
            conn,
            CompetitionRow,
            f"SELECT {_COMPETITION} FROM events.competitions WHERE id = $1",
            competition_id,
        )

    async def of_event(self, conn: Connection, event_id: uuid.UUID) -> list[CompetitionRow]:
        return await fetch_rows(
            conn,
            CompetitionRow,
            f"SELECT {_COMPETITION} FROM events.competitions WHERE event_id = $1 ORDER BY sport, name, id",
            event_id,
        )


class VenueRepository:
    async def create(self, conn: Connection, organiser_id: uuid.UUID, v: dict[str, object]) -> VenueRow:
        row = await fetch_row(
            conn,
            VenueRow,
            f"""INSERT INTO events.venues (organiser_id, name, address, district, sections, entrances,
                    transport_notes, accessibility_notes, gate_verifiers)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_VENUE}""",
            organiser_id,
            v["name"],
            v["address"],
            v["district"],
            v["sections"],
            v["entrances"],
            v["transport_notes"],
            v["accessibility_notes"],
            v["gate_verifiers"],
        )
        assert row is not None
        return row

    async def update(self, conn: Connection, venue_id: uuid.UUID, v: dict[str, object]) -> VenueRow:
        row = await fetch_row(
            conn,
            VenueRow,
            f"""UPDATE events.venues SET name = $2, address = $3, district = $4, sections = $5, entrances = $6,
                    transport_notes = $7, accessibility_notes = $8, gate_verifiers = $9, updated_at = now()
                WHERE id = $1 RETURNING {_VENUE}""",
            venue_id,
            v["name"],
            v["address"],
            v["district"],
            v["sections"],
            v["entrances"],
            v["transport_notes"],
            v["accessibility_notes"],
            v["gate_verifiers"],
        )
        assert row is not None
        return row

    async def get(self, conn: Connection, venue_id: uuid.UUID) -> VenueRow | None:
        return await fetch_row(conn, VenueRow, f"SELECT {_VENUE} FROM events.venues WHERE id = $1", venue_id)

    async def listed(self, conn: Connection, limit: int) -> list[VenueRow]:
        return await fetch_rows(
            conn, VenueRow, f"SELECT {_VENUE} FROM events.venues ORDER BY name, id LIMIT $1", limit
        )


class SessionRepository:
    async def create(
        self,
        conn: Connection,
        competition: CompetitionRow,
        venue_id: uuid.UUID,
        title: str,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
    ) -> uuid.UUID:
        session_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO events.sessions (competition_id, event_id, organiser_id, venue_id, title, starts_at,
                    ends_at, scheduled_starts_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $6) RETURNING id""",
            competition.id,
            competition.event_id,
            competition.organiser_id,
            venue_id,
            title,
            starts_at,
            ends_at,
        )
        return session_id

    async def get(self, conn: Connection, session_id: uuid.UUID, *, lock: bool = False) -> SessionRow | None:
        """One session; `lock` holds its row until the transaction ends (a change reads it first)."""
        locking = " FOR UPDATE OF s" if lock else ""
        return await fetch_row(
            conn, SessionRow, f"SELECT {_SESSION} FROM {_SESSION_FROM} WHERE s.id = $1{locking}", session_id
        )

    async def update(
        self,
        conn: Connection,
        session_id: uuid.UUID,
        competition_id: uuid.UUID,
        venue_id: uuid.UUID,
        title: str,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
    ) -> None:
        await conn.execute(
            """UPDATE events.sessions SET competition_id = $2, venue_id = $3, title = $4, starts_at = $5,
                    ends_at = $6, updated_at = now()
                WHERE id = $1""",
            session_id,
            competition_id,
            venue_id,
            title,
            starts_at,
            ends_at,
        )

    async def set_status(
        self,
        conn: Connection,
        session_id: uuid.UUID,
        status: str,
        reason: str | None,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
    ) -> None:
        await conn.execute(
            """UPDATE events.sessions SET status = $2, status_reason = $3, starts_at = $4, ends_at = $5,
                    updated_at = now()
                WHERE id = $1""",
            session_id,
            status,
            reason,
            starts_at,
            ends_at,
        )

    async def facts(self, conn: Connection, session_id: uuid.UUID) -> FactsRow | None:
        return await fetch_row(
            conn,
            FactsRow,
            f"SELECT {_FACTS} FROM {_SESSION_FROM} WHERE s.id = $1",
            session_id,
        )

    async def listed(
        self,
        conn: Connection,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        sport: str | None,
        venue_id: uuid.UUID | None,
        event_id: uuid.UUID | None,
        limit: int,
        offset: int,
    ) -> list[SessionRow]:
        """Sessions by start, those starting in [start, end) when given, of a sport, venue, event when given."""
        return await fetch_rows(
            conn,
            SessionRow,
            f"""SELECT {_SESSION} FROM {_SESSION_FROM}
                WHERE ($1::timestamptz IS NULL OR s.starts_at >= $1)
                  AND ($2::timestamptz IS NULL OR s.starts_at < $2)
                  AND ($3::text IS NULL OR c.sport = $3)
                  AND ($4::uuid IS NULL OR s.venue_id = $4)
                  AND ($5::uuid IS NULL OR s.event_id = $5)
                ORDER BY s.starts_at, s.id LIMIT $6 OFFSET $7""",
            start,
            end,
            sport,
            venue_id,
            event_id,
            limit,
            offset,
        )


class NewsRepository:
    async def create(
        self,
        conn: Connection,
        organiser_id: uuid.UUID,
        event_id: uuid.UUID | None,
        title: str,
        body: str,
        published_at: dt.datetime,
    ) -> NewsRow:
        row = await fetch_row(
            conn,
            NewsRow,
            f"""INSERT INTO events.news (organiser_id, event_id, title, body, published_at)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_NEWS}""",
            organiser_id,
            event_id,
            title,
            body,
            published_at,
        )
        assert row is not None
        return row

    async def update(
        self,
        conn: Connection,
        news_id: uuid.UUID,
        event_id: uuid.UUID | None,
        title: str,
        body: str,
        published_at: dt.datetime,
    ) -> NewsRow:
        row = await fetch_row(
            conn,
            NewsRow,
            f"""UPDATE events.news SET event_id = $2, title = $3, body = $4, published_at = $5, updated_at = now()
                WHERE id = $1 RETURNING {_NEWS}""",
            news_id,
            event_id,
            title,
            body,
            published_at,
        )
        assert row is not None
        return row

    async def get(self, conn: Connection, news_id: uuid.UUID) -> NewsRow | None:
        return await fetch_row(conn, NewsRow, f"SELECT {_NEWS} FROM events.news WHERE id = $1", news_id)

    async def delete(self, conn: Connection, news_id: uuid.UUID) -> None:
        await conn.execute("DELETE FROM events.news WHERE id = $1", news_id)

    async def published(
        self, conn: Connection, at: dt.datetime, event_id: uuid.UUID | None, limit: int, offset: int
    ) -> list[NewsRow]:
        return await fetch_rows(
            conn,
            NewsRow,
            f"""SELECT {_NEWS} FROM events.news
                WHERE published_at <= $1 AND ($2::uuid IS NULL OR event_id = $2)
                ORDER BY published_at DESC, id LIMIT $3 OFFSET $4""",
            at,
            event_id,
            limit,
            offset,
        )

    async def next_publication(self, conn: Connection, after: dt.datetime) -> dt.datetime | None:
        """When the next item published later than `after` goes out (a cached list must not outlive it)."""
        at: dt.datetime | None = await conn.fetchval(
            "SELECT min(published_at) FROM events.news WHERE published_at > $1", after
        )
        return at


class BroadcastRepository:
    async def create(
        self, conn: Connection, session_id: uuid.UUID, organiser_id: uuid.UUID, platform: str, url: str
    ) -> BroadcastRow:
        row = await fetch_row(
            conn,
            BroadcastRow,
            f"""INSERT INTO events.broadcasts (session_id, organiser_id, platform, url) VALUES ($1, $2, $3, $4)
                RETURNING {_BROADCAST}""",
            session_id,
            organiser_id,
            platform,
            url,
        )
        assert row is not None
        return row

    async def get(self, conn: Connection, broadcast_id: uuid.UUID) -> BroadcastRow | None:
        return await fetch_row(
            conn, BroadcastRow, f"SELECT {_BROADCAST} FROM events.broadcasts WHERE id = $1", broadcast_id
        )

    async def delete(self, conn: Connection, broadcast_id: uuid.UUID) -> None:
        await conn.execute("DELETE FROM events.broadcasts WHERE id = $1", broadcast_id)

    async def of_sessions(self, conn: Connection, session_ids: list[uuid.UUID]) -> list[BroadcastRow]:
        return await fetch_rows(
            conn,
            BroadcastRow,
            f"""SELECT {_BROADCAST} FROM events.broadcasts WHERE session_id = ANY($1::uuid[])
                ORDER BY created_at, id""",
            session_ids,
        )
