"""The rules of the events zone's schedule (docs/decisions/0027-events-schedule.md): what the organising department
may publish, who may change what, how a session's status moves, and what residents read of it.

Everything is published by one organisation (its organiser) through signed requests; only that organisation
changes it, and to any other one it does not exist (404). A session's status follows `MOVES` (schemas.py):
`finished` and `cancelled` are final, a refused move is a 409 naming it. Each change of a session's status or of
its start is told to the listeners of `on_session_changed` in the publishing transaction, once (tickets notify
their holders and refund a cancelled session's tickets through it, atomically with the change). Every publish is
recorded in the audit trail in the same transaction.

Residents' reads are cheap (`ScheduleCache`): each answer is kept whole in Redis, tagged with a generation that
every committed publish bumps, so a change shows on every node from the next read on.

Callers own the transaction. Nothing here knows HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import msgspec
import structlog
from redis.asyncio import Redis

from app_backend.audit.service import AuditTrail
from app_backend.events.repository import (
    BroadcastRepository,
    BroadcastRow,
    CompetitionRepository,
    CompetitionRow,
    EventRepository,
    EventRow,
    NewsRepository,
    NewsRow,
    SessionRepository,
    SessionRow,
    VenueRepository,
    VenueRow,
)
from app_backend.events.schemas import (
    MOVES,
    STATUS_NAMES,
    Broadcast,
    BroadcastBody,
    Broadcasts,
    Competition,
    CompetitionBody,
    Event,
    EventBody,
    EventDetail,
    Events,
    News,
    NewsBody,
    NewsList,
    Session,
    SessionBody,
    SessionFacts,
    Sessions,
    StatusBody,
    Venue,
    VenueBody,
    VenueFacts,
    Venues,
)
from app_backend.kernel.actors import Actor
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.clock import BUSINESS_TZ, now
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, conflict, invalid_field, not_found
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.regions import REGIONS, UNKNOWN_REGION
from app_backend.organisations.service import OrganisationService

_log = structlog.get_logger("events")

SessionListener = Callable[[Connection, SessionFacts, str], Awaitable[None]]
# How long an event may last, and a session.
LONGEST_EVENT = dt.timedelta(days=366)
LONGEST_SESSION = dt.timedelta(days=2)


class Caller(msgspec.Struct, frozen=True):
    """The organisation publishing (a signed request with events:publish) and who it is in the audit trail."""

    organisation_id: uuid.UUID
    actor: Actor


# -- residents' cached reads ------------------------------------------------------------------------------------------

GENERATION_KEY = "events:schedule:generation"
COPY_PREFIX = "events:schedule:copy:"
# A kept answer is dropped after this even if no publish was heard (the safety net), and news scheduled for later
# shows within it.
COPY_TTL = 30


class ScheduleCache:
    """Residents' answers kept whole in Redis: `read(key, load)` answers the kept bytes when they were kept at the
    current generation, else loads, keeps and answers them; `forget()` (after a publish commits) bumps the
    generation, so every node's next read loads again. One Redis round trip per warm read, none of PostgreSQL.
    Concurrent reads of one key that find no current copy share one load per process (a rush right after a
    publish loads each query once per process, not once per request). While Redis is unavailable every read
    loads."""

    def __init__(self, batches: BatchRunner, redis: Redis, breaker: RedisBreaker) -> None:
        self._batches = batches
        self._redis = redis
        self._breaker = breaker
        self._loading: dict[tuple[str, bytes | None], asyncio.Task[bytes]] = {}

    async def read(self, key: str, load: Callable[[], Awaitable[msgspec.Struct]]) -> bytes:
        generation: bytes | None = None
        if self._breaker.allow():
            batch = self._batches.batch()
            batch.get(GENERATION_KEY)
            batch.get(COPY_PREFIX + key)
            try:
                raw_generation, kept = await batch.execute()
            except self._breaker.unavailable as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.succeeded()
                generation = _as_bytes(raw_generation) or b"0"
                copy = _as_bytes(kept)
                if copy is not None:
                    tag, _, body = copy.partition(b"\n")
                    if tag == generation:
                        return body
        flight = (key, generation)
        loading = self._loading.get(flight)
        if loading is None:
            # A task of its own: a reader that goes away (a client that hangs up) does not cancel the others' load.
            loading = asyncio.ensure_future(self._load_and_keep(key, generation, load))
            self._loading[flight] = loading
            loading.add_done_callback(lambda _: self._loading.pop(flight, None))
        return await asyncio.shield(loading)

    async def _load_and_keep(
        self, key: str, generation: bytes | None, load: Callable[[], Awaitable[msgspec.Struct]]
    ) -> bytes:
        body = msgspec.json.encode(await load())
        if generation is not None:
            batch = self._batches.batch()
            batch.set(COPY_PREFIX + key, generation + b"\n" + body, ex=COPY_TTL)
            try:
                await batch.execute()
            except self._breaker.unavailable as exc:
                self._breaker.failed(exc)
        return body

    async def forget(self) -> None:
        """What residents read changed (committed): every kept answer is stale from now on."""
        try:
            await self._redis.incr(GENERATION_KEY)
        except self._breaker.unavailable as exc:  # the copies then live at most COPY_TTL
            self._breaker.failed(exc)
            _log.warning("schedule generation not bumped", error=type(exc).__name__)


def _as_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# -- conversions ------------------------------------------------------------------------------------------------------


def _event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        organiser_id=row.organiser_id,
        name=row.name,
        description=row.description,
        starts_on=row.starts_on,
        ends_on=row.ends_on,
    )


def _competition(row: CompetitionRow) -> Competition:
    return Competition(id=row.id, event_id=row.event_id, sport=row.sport, name=row.name)


def _venue(row: VenueRow) -> Venue:
    return Venue(
        id=row.id,
        organiser_id=row.organiser_id,
        name=row.name,
        address=row.address,
        district=row.district,
        district_name=REGIONS.get(row.district, ""),
        sections=list(row.sections),
        entrances=list(row.entrances),
        transport_notes=row.transport_notes,
        accessibility_notes=row.accessibility_notes,
        gate_verifiers=list(row.gate_verifiers),
    )


def _broadcast(row: BroadcastRow) -> Broadcast:
    return Broadcast(id=row.id, session_id=row.session_id, platform=row.platform, url=row.url)


def _session(row: SessionRow, broadcasts: list[Broadcast]) -> Session:
    return Session(
        id=row.id,
        event_id=row.event_id,
        competition_id=row.competition_id,
        competition_name=row.competition_name,
        sport=row.sport,
        venue_id=row.venue_id,
        venue_name=row.venue_name,
        title=row.title,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        scheduled_starts_at=row.scheduled_starts_at,
        status=row.status,  # type: ignore[arg-type]
        status_name=STATUS_NAMES[row.status],
        status_reason=row.status_reason,
        broadcasts=broadcasts,
    )


def _news(row: NewsRow) -> News:
    return News(
        id=row.id,
        organiser_id=row.organiser_id,
        event_id=row.event_id,
        title=row.title,
        body=row.body,
        published_at=row.published_at,
    )


def _blank(field: str, value: str) -> str:
    """A text field stripped; blank is refused naming it."""
    clean = value.strip()
    if not clean:
        raise invalid_field(field, "must not be blank")
    return clean


def _places(field: str, values: list[str]) -> list[str]:
    clean = [_blank(field, v) for v in values]
    if len(set(clean)) != len(clean):
        raise invalid_field(field, "names each place once")
    return clean


# The years the schedule's times and days may name: far enough for any games, near enough that arithmetic on
# them (a delay's end, a day's midnight in UTC) never leaves what Python and PostgreSQL can hold.
FIRST_YEAR, LAST_YEAR = 2000, 2099


def in_range(field: str, at: dt.datetime) -> dt.datetime:
    """`at` when its year is within FIRST_YEAR..LAST_YEAR; else a 400 naming the field."""
    if not FIRST_YEAR <= at.year <= LAST_YEAR:
        raise invalid_field(field, f"must fall within {FIRST_YEAR}–{LAST_YEAR}")
    return at


def _is_https_link(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "https" and bool(host) and not any(c.isspace() for c in url)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants a business day (Asia/Shanghai) runs between: [midnight, next midnight)."""
    start = dt.datetime.combine(day, dt.time(), BUSINESS_TZ)
    return start, start + dt.timedelta(days=1)


class EventsService:
    """The schedule for the organising department and for residents, and the facts other domains build on."""

    def __init__(
        self,
        audit: AuditTrail,
        organisations: OrganisationService,
        redis: Redis,
        batches: BatchRunner,
        breaker: RedisBreaker,
    ) -> None:
        self._audit = audit
        self._organisations = organisations
        self._events = EventRepository()
        self._competitions = CompetitionRepository()
        self._venues = VenueRepository()
        self._sessions = SessionRepository()
        self._news = NewsRepository()
        self._broadcasts = BroadcastRepository()
        self._session_listeners: list[SessionListener] = []
        self.cache = ScheduleCache(batches, redis, breaker)

    # -- what other domains build on -------------------------------------------------------------------------------

    def on_session_changed(self, listener: SessionListener) -> None:
        """Calls `listener(conn, the session after, its previous status)` in the publishing transaction, once per
        change of a session's status or of its start. A listener that raises fails the publish (its effects and
        the change commit together or not at all)."""
        self._session_listeners.append(listener)

    async def session_facts(self, conn: Connection, session_id: uuid.UUID) -> SessionFacts | None:
        row = await self._sessions.facts(conn, session_id)
        if row is None:
            return None
        return SessionFacts(
            id=row.id,
            event_id=row.event_id,
            organiser_id=row.organiser_id,
            venue_id=row.venue_id,
            title=row.title,
            sport=row.sport,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            status=row.status,
            sections=tuple(row.sections),
            entrances=tuple(row.entrances),
            gate_verifiers=tuple(row.gate_verifiers),
        )

    async def venue_facts(self, conn: Connection, venue_id: uuid.UUID) -> VenueFacts | None:
        row = await self._venues.get(conn, venue_id)
        if row is None:
            return None
        return VenueFacts(
            id=row.id,
            organiser_id=row.organiser_id,
            name=row.name,
            sections=tuple(row.sections),
            entrances=tuple(row.entrances),
            gate_verifiers=tuple(row.gate_verifiers),
        )

    async def _tell(self, conn: Connection, session_id: uuid.UUID, previous: str) -> None:
        facts = await self.session_facts(conn, session_id)
        assert facts is not None
        for listener in self._session_listeners:
            await listener(conn, facts, previous)

    async def _record(
        self,
        conn: Connection,
        caller: Caller,
        action: str,
        target_type: str,
        target_id: uuid.UUID,
        **detail: object,
    ) -> None:
        await self._audit.record(
            conn,
            caller.actor,
            f"events.{action}",
            target_type=target_type,
            target_id=str(target_id),
            detail={"organiser": str(caller.organisation_id), **detail},
        )

    # -- events and competitions -------------------------------------------------------------------------------------

    @staticmethod
    def _checked_event(body: EventBody) -> EventBody:
        name = _blank("name", body.name)
        for field, day in (("starts_on", body.starts_on), ("ends_on", body.ends_on)):
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise invalid_field(field, f"must fall within {FIRST_YEAR}–{LAST_YEAR}")
        if body.ends_on < body.starts_on:
            raise invalid_field("ends_on", "must not be before starts_on")
        if body.ends_on - body.starts_on > LONGEST_EVENT:
            raise invalid_field("ends_on", "an event lasts at most a year")
        return EventBody(
            name=name, starts_on=body.starts_on, ends_on=body.ends_on, description=body.description
        )

    async def _own_event(self, conn: Connection, caller: Caller, event_id: uuid.UUID) -> EventRow:
        row = await self._events.get(conn, event_id)
        if row is None or row.organiser_id != caller.organisation_id:
            raise not_found("no event of yours has this id")
        return row

    async def create_event(self, conn: Connection, caller: Caller, body: EventBody) -> EventDetail:
        clean = self._checked_event(body)
        row = await self._events.create(
            conn, caller.organisation_id, clean.name, clean.description, clean.starts_on, clean.ends_on
        )
        await self._record(conn, caller, "event_create", "event", row.id, name=clean.name)
        return EventDetail(**msgspec.structs.asdict(_event(row)), competitions=[])

    async def update_event(
        self, conn: Connection, caller: Caller, event_id: uuid.UUID, body: EventBody
    ) -> EventDetail:
        await self._own_event(conn, caller, event_id)
        clean = self._checked_event(body)
        await self._events.update(
            conn, event_id, clean.name, clean.description, clean.starts_on, clean.ends_on
        )
        await self._record(conn, caller, "event_update", "event", event_id, name=clean.name)
        return await self.event(conn, event_id)

    async def event(self, conn: Connection, event_id: uuid.UUID) -> EventDetail:
        row = await self._events.get(conn, event_id)
        if row is None:
            raise not_found("no event has this id")
        competitions = await self._competitions.of_event(conn, event_id)
        return EventDetail(
            **msgspec.structs.asdict(_event(row)), competitions=[_competition(c) for c in competitions]
        )

    async def events(self, conn: Connection, limit: int = 100) -> Events:
        return Events(events=[_event(r) for r in await self._events.listed(conn, limit)])

    async def create_competition(
        self, conn: Connection, caller: Caller, event_id: uuid.UUID, body: CompetitionBody
    ) -> Competition:
        await self._own_event(conn, caller, event_id)
        sport, name = _blank("sport", body.sport), _blank("name", body.name)
        row = await self._competitions.create(conn, event_id, caller.organisation_id, sport, name)
        await self._record(conn, caller, "competition_create", "competition", row.id, sport=sport, name=name)
        return _competition(row)

    async def _own_competition(
        self, conn: Connection, caller: Caller, competition_id: uuid.UUID, field: str | None = None
    ) -> CompetitionRow:
        row = await self._competitions.get(conn, competition_id)
        if row is None or row.organiser_id != caller.organisation_id:
            if field is not None:
                raise invalid_field(field, "no competition of yours has this id", status=422)
            raise not_found("no competition of yours has this id")
        return row

    async def update_competition(
        self, conn: Connection, caller: Caller, competition_id: uuid.UUID, body: CompetitionBody
    ) -> Competition:
        await self._own_competition(conn, caller, competition_id)
        sport, name = _blank("sport", body.sport), _blank("name", body.name)
        row = await self._competitions.update(conn, competition_id, sport, name)
        await self._record(conn, caller, "competition_update", "competition", row.id, sport=sport, name=name)
        return _competition(row)

    # -- venues ------------------------------------------------------------------------------------------------------

    async def _checked_venue(self, conn: Connection, body: VenueBody) -> dict[str, object]:
        if body.district not in REGIONS:
            raise invalid_field("district", UNKNOWN_REGION)
        if len(set(body.gate_verifiers)) != len(body.gate_verifiers):
            raise invalid_field("gate_verifiers", "names each organisation once")
        for organisation_id in body.gate_verifiers:
            organisation = await self._organisations.organisation(conn, organisation_id)
            if organisation is None or organisation.status != "active":
                raise invalid_field(
                    "gate_verifiers", f"no active organisation has the id {organisation_id}", status=422
                )
        return {
            "name": _blank("name", body.name),
            "address": _blank("address", body.address),
            "district": body.district,
            "sections": _places("sections", body.sections),
            "entrances": _places("entrances", body.entrances),
            "transport_notes": body.transport_notes.strip(),
            "accessibility_notes": body.accessibility_notes.strip(),
            "gate_verifiers": list(body.gate_verifiers),
        }

    async def _own_venue(
        self, conn: Connection, caller: Caller, venue_id: uuid.UUID, field: str | None = None
    ) -> VenueRow:
        row = await self._venues.get(conn, venue_id)
        if row is None or row.organiser_id != caller.organisation_id:
            if field is not None:
                raise invalid_field(field, "no venue of yours has this id", status=422)
            raise not_found("no venue of yours has this id")
        return row

    async def create_venue(self, conn: Connection, caller: Caller, body: VenueBody) -> Venue:
        clean = await self._checked_venue(conn, body)
        row = await self._venues.create(conn, caller.organisation_id, clean)
        await self._record(conn, caller, "venue_create", "venue", row.id, name=row.name)
        return _venue(row)

    async def update_venue(
        self, conn: Connection, caller: Caller, venue_id: uuid.UUID, body: VenueBody
    ) -> Venue:
        await self._own_venue(conn, caller, venue_id)
        clean = await self._checked_venue(conn, body)
        row = await self._venues.update(conn, venue_id, clean)
        await self._record(conn, caller, "venue_update", "venue", row.id, name=row.name)
        return _venue(row)

    async def venue(self, conn: Connection, venue_id: uuid.UUID) -> Venue:
        row = await self._venues.get(conn, venue_id)
        if row is None:
            raise not_found("no venue has this id")
        return _venue(row)

    async def venues(self, conn: Connection, limit: int = 200) -> Venues:
        return Venues(venues=[_venue(r) for r in await self._venues.listed(conn, limit)])

    # -- sessions ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _checked_times(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
        in_range("starts_at", starts_at)
        in_range("ends_at", ends_at)
        if ends_at <= starts_at:
            raise invalid_field("ends_at", "must be after starts_at")
        if ends_at - starts_at > LONGEST_SESSION:
            raise invalid_field("ends_at", "a session lasts at most two days")

    async def _own_session(self, conn: Connection, caller: Caller, session_id: uuid.UUID) -> SessionRow:
        row = await self._sessions.get(conn, session_id, lock=True)
        if row is None or row.organiser_id != caller.organisation_id:
            raise not_found("no session of yours has this id")
        return row

    async def create_session(self, conn: Connection, caller: Caller, body: SessionBody) -> Session:
        competition = await self._own_competition(conn, caller, body.competition_id, "competition_id")
        await self._own_venue(conn, caller, body.venue_id, "venue_id")
        title = _blank("title", body.title)
        self._checked_times(body.starts_at, body.ends_at)
        session_id = await self._sessions.create(
            conn, competition, body.venue_id, title, body.starts_at, body.ends_at
        )
        await self._record(
            conn,
            caller,
            "session_create",
            "session",
            session_id,
            title=title,
            starts_at=body.starts_at.isoformat(),
        )
        return await self.session(conn, session_id)

    async def update_session(
        self, conn: Connection, caller: Caller, session_id: uuid.UUID, body: SessionBody
    ) -> Session:
        """Changes what a session is (title, competition, venue, times). A change of its start is told to the
        listeners like a delay's; a finished or cancelled session no longer changes (409)."""
        row = await self._own_session(conn, caller, session_id)
        if not MOVES[row.status]:
            raise conflict(
                f"the session is {row.status}, which is final: it no longer changes", "session-status"
            )
        competition = await self._own_competition(conn, caller, body.competition_id, "competition_id")
        if competition.event_id != row.event_id:
            raise invalid_field("competition_id", "a session stays within its event", status=422)
        await self._own_venue(conn, caller, body.venue_id, "venue_id")
        title = _blank("title", body.title)
        self._checked_times(body.starts_at, body.ends_at)
        await self._sessions.update(
            conn, session_id, competition.id, body.venue_id, title, body.starts_at, body.ends_at
        )
        await self._record(
            conn,
            caller,
            "session_update",
            "session",
            session_id,
            title=title,
            starts_at=body.starts_at.isoformat(),
        )
        if body.starts_at != row.starts_at:
            await self._tell(conn, session_id, row.status)
        return await self.session(conn, session_id)

    async def set_status(
        self, conn: Connection, caller: Caller, session_id: uuid.UUID, body: StatusBody
    ) -> Session:
        """Moves a session's status along `MOVES`. Repeating the current status (and, when delayed, the same new
        start) changes nothing and tells nobody."""
        row = await self._own_session(conn, caller, session_id)
        target = body.status
        if target != "delayed" and (body.starts_at is not None or body.ends_at is not None):
            field = "starts_at" if body.starts_at is not None else "ends_at"
            raise invalid_field(field, "only a delay moves the session's times")
        if target == row.status and (
            target != "delayed"
            or (body.starts_at in (None, row.starts_at) and body.ends_at in (None, row.ends_at))
        ):
            return await self.session(conn, session_id)
        if target not in MOVES[row.status]:
            raise refused_move(row.status, target)
        starts_at, ends_at = row.starts_at, row.ends_at
        reason = body.reason.strip() if body.reason else None
        if target in ("delayed", "cancelled") and not reason:
            raise invalid_field("reason", f"a session {target} says why")
        if target == "delayed":
            if body.starts_at is None:
                raise invalid_field("starts_at", "a delay gives the new start")
            if body.starts_at <= row.scheduled_starts_at:
                raise invalid_field("starts_at", "a delay starts later than the start first published")
            starts_at = in_range("starts_at", body.starts_at)
            ends_at = body.ends_at or starts_at + (row.ends_at - row.starts_at)
            self._checked_times(starts_at, ends_at)
        await self._sessions.set_status(conn, session_id, target, reason, starts_at, ends_at)
        await self._record(
            conn,
            caller,
            "session_status",
            "session",
            session_id,
            status=target,
            previous=row.status,
            reason=reason,
            starts_at=starts_at.isoformat(),
        )
        if target != row.status or starts_at != row.starts_at:  # a new end alone tells nobody
            await self._tell(conn, session_id, row.status)
        return await self.session(conn, session_id)

    async def session(self, conn: Connection, session_id: uuid.UUID) -> Session:
        row = await self._sessions.get(conn, session_id)
        if row is None:
            raise not_found("no session has this id")
        broadcasts = await self._broadcasts.of_sessions(conn, [session_id])
        return _session(row, [_broadcast(b) for b in broadcasts])

    async def sessions(
        self,
        conn: Connection,
        *,
        day: dt.date | None = None,
        sport: str | None = None,
        venue_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> Sessions:
        """Sessions by start: of a business day (Asia/Shanghai), a sport, a venue, an event when given."""
        start, end = day_bounds(day) if day is not None else (None, None)
        rows = await self._sessions.listed(
            conn,
            start=start,
            end=end,
            sport=sport,
            venue_id=venue_id,
            event_id=event_id,
            limit=page_size + 1,
            offset=(page - 1) * page_size,
        )
        shown = rows[:page_size]
        by_session: dict[uuid.UUID, list[Broadcast]] = {r.id: [] for r in shown}
        if shown:
            for b in await self._broadcasts.of_sessions(conn, list(by_session)):
                by_session[b.session_id].append(_broadcast(b))
        return Sessions(
            sessions=[_session(r, by_session[r.id]) for r in shown],
            page=page,
            next_page=page + 1 if len(rows) > page_size else None,
        )

    # -- news and broadcasts ---------------------------------------------------------------------------------------

    async def _checked_news(self, conn: Connection, caller: Caller, body: NewsBody) -> NewsBody:
        if body.event_id is not None:
            event = await self._events.get(conn, body.event_id)
            if event is None or event.organiser_id != caller.organisation_id:
                raise invalid_field("event_id", "no event of yours has this id", status=422)
        return NewsBody(
            title=_blank("title", body.title),
            body=_blank("body", body.body),
            event_id=body.event_id,
            published_at=now() if body.published_at is None else in_range("published_at", body.published_at),
        )

    async def _own_news(self, conn: Connection, caller: Caller, news_id: uuid.UUID) -> NewsRow:
        row = await self._news.get(conn, news_id)
        if row is None or row.organiser_id != caller.organisation_id:
            raise not_found("no news item of yours has this id")
        return row

    async def create_news(self, conn: Connection, caller: Caller, body: NewsBody) -> News:
        clean = await self._checked_news(conn, caller, body)
        assert clean.published_at is not None
        row = await self._news.create(
            conn, caller.organisation_id, clean.event_id, clean.title, clean.body, clean.published_at
        )
        await self._record(conn, caller, "news_create", "news", row.id, title=row.title)
        return _news(row)

    async def update_news(self, conn: Connection, caller: Caller, news_id: uuid.UUID, body: NewsBody) -> News:
        await self._own_news(conn, caller, news_id)
        clean = await self._checked_news(conn, caller, body)
        assert clean.published_at is not None
        row = await self._news.update(
            conn, news_id, clean.event_id, clean.title, clean.body, clean.published_at
        )
        await self._record(conn, caller, "news_update", "news", row.id, title=row.title)
        return _news(row)

    async def delete_news(self, conn: Connection, caller: Caller, news_id: uuid.UUID) -> None:
        row = await self._own_news(conn, caller, news_id)
        await self._news.delete(conn, news_id)
        await self._record(conn, caller, "news_delete", "news", news_id, title=row.title)

    async def news(
        self, conn: Connection, *, event_id: uuid.UUID | None = None, page: int = 1, page_size: int = 20
    ) -> NewsList:
        """Published news (published_at reached), newest first."""
        rows = await self._news.published(conn, now(), event_id, page_size + 1, (page - 1) * page_size)
        return NewsList(
            news=[_news(r) for r in rows[:page_size]],
            page=page,
            next_page=page + 1 if len(rows) > page_size else None,
        )

    async def news_item(self, conn: Connection, news_id: uuid.UUID) -> News:
        row = await self._news.get(conn, news_id)
        if row is None or row.published_at > now():
            raise not_found("no news item has this id")
        return _news(row)

    async def add_broadcast(
        self, conn: Connection, caller: Caller, session_id: uuid.UUID, body: BroadcastBody
    ) -> Broadcast:
        await self._own_session(conn, caller, session_id)
        platform = _blank("platform", body.platform)
        url = body.url.strip()
        if not _is_https_link(url):
            raise invalid_field("url", "must be an https link with a host")
        row = await self._broadcasts.create(conn, session_id, caller.organisation_id, platform, url)
        await self._record(
            conn, caller, "broadcast_create", "session", session_id, platform=platform, url=url
        )
        return _broadcast(row)

    async def remove_broadcast(self, conn: Connection, caller: Caller, broadcast_id: uuid.UUID) -> None:
        row = await self._broadcasts.get(conn, broadcast_id)
        if row is None or row.organiser_id != caller.organisation_id:
            raise not_found("no broadcast link of yours has this id")
        await self._broadcasts.delete(conn, broadcast_id)
        await self._record(conn, caller, "broadcast_delete", "session", row.session_id, platform=row.platform)

    async def broadcasts(self, conn: Connection, session_id: uuid.UUID) -> Broadcasts:
        if await self._sessions.get(conn, session_id) is None:
            raise not_found("no session has this id")
        return Broadcasts(
            broadcasts=[_broadcast(b) for b in await self._broadcasts.of_sessions(conn, [session_id])]
        )


def refused_move(current: str, target: str) -> DomainError:
    allowed = sorted(MOVES[current])
    why = "it is final" if not allowed else f"from {current} it may become {', '.join(allowed)}"
    return DomainError(
        409,
        "session-status",
        f"a {current} session cannot become {target}: {why}",
        extra={"state": current, "refused": target, "allowed": allowed},
    )
