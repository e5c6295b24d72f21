"""HTTP for the events zone's schedule: what the organising department publishes (signed machine requests, scope
events:publish; another organisation's rows are 404) and what residents read without logging in (kept whole in
Redis until the next publish: service.ScheduleCache)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.enums import MediaType
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.events.schemas import (
    Broadcast,
    BroadcastBody,
    Broadcasts,
    Competition,
    CompetitionBody,
    EventBody,
    EventDetail,
    Events,
    News,
    NewsBody,
    NewsList,
    Session,
    SessionBody,
    Sessions,
    StatusBody,
    Venue,
    VenueBody,
    Venues,
)
from app_backend.events.service import FIRST_YEAR, LAST_YEAR, Caller
from app_backend.kernel.actors import Actor
from app_backend.kernel.clock import business_day
from app_backend.kernel.db import Connection, pooled_connection
from app_backend.kernel.errors import forbidden, invalid_field
from app_backend.kernel.http import after_commit, client_ip, problems, request_id, settings_of
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import MachinePrincipal

if TYPE_CHECKING:
    from app_backend.events.service import EventsService

AnyRequest = Request[Any, Any, Any]
PUBLISH_SCOPE = "events:publish"
# Seconds a client or CDN may keep a resident's read of the schedule.
PUBLIC_MAX_AGE = 5
Page = Annotated[int, Parameter(ge=1, le=1000, description="1 is the first page")]
PageSize = Annotated[int, Parameter(ge=1, le=100)]
DateParam = Annotated[
    str | None,
    Parameter(
        pattern=r"^([0-9]{4}-[0-9]{2}-[0-9]{2}|today)$",
        max_length=10,
        description="YYYY-MM-DD or `today`, Beijing time: the sessions starting that day; absent: every day",
    ),
]
SportParam = Annotated[
    str | None, Parameter(min_length=1, max_length=32, description="a sport, as published (游泳)")
]
VenueParam = Annotated[uuid.UUID | None, Parameter(description="a venue's id")]
EventParam = Annotated[uuid.UUID | None, Parameter(description="an event's id")]


def _organiser(request: AnyRequest, events: EventsService, machine: MachinePrincipal) -> Caller:
    """The signed organisation as the publisher; once the request's transaction commits, residents' kept answers
    are forgotten on every node."""
    if PUBLISH_SCOPE not in machine.scopes:
        raise forbidden(f"this credential lacks the scope {PUBLISH_SCOPE}")
    after_commit(request, events.cache.forget)
    return Caller(
        machine.organisation_id,
        Actor("organisation", str(machine.organisation_id), request_id(request), client_ip(request)),
    )


class ScheduleManageController(Controller):
    """What the organising department publishes (signed; events:publish). Another organisation's rows are 404."""

    path = "/api/v1/events/manage"
    tags = ["events"]
    dependencies = MACHINE
    opt = problems(403, 404)

    @post("/events", status_code=HTTP_201_CREATED, summary="A new event (the games) (signed; events:publish)")
    async def create_event(
        self,
        request: AnyRequest,
        data: EventBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> EventDetail:
        return await events.create_event(db, _organiser(request, events, machine), data)

    @put("/events/{event_id:uuid}", summary="Change my event (signed; events:publish)")
    async def update_event(
        self,
        request: AnyRequest,
        event_id: uuid.UUID,
        data: EventBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> EventDetail:
        return await events.update_event(db, _organiser(request, events, machine), event_id, data)

    @post(
        "/events/{event_id:uuid}/competitions",
        status_code=HTTP_201_CREATED,
        summary="A new competition (a sport) within my event (signed; events:publish)",
    )
    async def create_competition(
        self,
        request: AnyRequest,
        event_id: uuid.UUID,
        data: CompetitionBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Competition:
        return await events.create_competition(db, _organiser(request, events, machine), event_id, data)

    @put("/competitions/{competition_id:uuid}", summary="Change my competition (signed; events:publish)")
    async def update_competition(
        self,
        request: AnyRequest,
        competition_id: uuid.UUID,
        data: CompetitionBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Competition:
        return await events.update_competition(db, _organiser(request, events, machine), competition_id, data)

    @post(
        "/venues",
        status_code=HTTP_201_CREATED,
        summary="A new venue and its guide (signed; events:publish)",
        description="400 naming the field at fault; 422 naming `gate_verifiers` for an unknown organisation.",
        opt=problems(422),
    )
    async def create_venue(
        self,
        request: AnyRequest,
        data: VenueBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Venue:
        return await events.create_venue(db, _organiser(request, events, machine), data)

    @put(
        "/venues/{venue_id:uuid}",
        summary="Change my venue and its guide (signed; events:publish)",
        opt=problems(422),
    )
    async def update_venue(
        self,
        request: AnyRequest,
        venue_id: uuid.UUID,
        data: VenueBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Venue:
        return await events.update_venue(db, _organiser(request, events, machine), venue_id, data)

    @post(
        "/sessions",
        status_code=HTTP_201_CREATED,
        summary="A new session of my competition at my venue, scheduled (signed; events:publish)",
        description="422 naming `competition_id` or `venue_id` when it is not one of yours.",
        opt=problems(422),
    )
    async def create_session(
        self,
        request: AnyRequest,
        data: SessionBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Session:
        return await events.create_session(db, _organiser(request, events, machine), data)

    @put(
        "/sessions/{session_id:uuid}",
        summary="Change my session: title, competition, venue, times (signed; events:publish)",
        description="409 `session-status` once it is finished or cancelled. A new start is told to ticket holders.",
        opt=problems(409, 422),
    )
    async def update_session(
        self,
        request: AnyRequest,
        session_id: uuid.UUID,
        data: SessionBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Session:
        return await events.update_session(db, _organiser(request, events, machine), session_id, data)

    @post(
        "/sessions/{session_id:uuid}/status",
        status_code=HTTP_200_OK,
        summary="Move my session's status: scheduled, delayed (new start), live, finished, cancelled (signed)",
        description=(
            "finished and cancelled are final; a refused move is 409 `session-status` naming the current status "
            "and the moves allowed. delayed and cancelled need a `reason`; delayed needs the new `starts_at`. "
            "Repeating the current status changes nothing."
        ),
        opt=problems(409),
    )
    async def set_status(
        self,
        request: AnyRequest,
        session_id: uuid.UUID,
        data: StatusBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Session:
        return await events.set_status(db, _organiser(request, events, machine), session_id, data)

    @post(
        "/sessions/{session_id:uuid}/broadcasts",
        status_code=HTTP_201_CREATED,
        summary="A live-broadcast link of my session (signed; events:publish)",
    )
    async def add_broadcast(
        self,
        request: AnyRequest,
        session_id: uuid.UUID,
        data: BroadcastBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Broadcast:
        return await events.add_broadcast(db, _organiser(request, events, machine), session_id, data)

    @delete(
        "/broadcasts/{broadcast_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a broadcast link of mine (signed; events:publish)",
    )
    async def remove_broadcast(
        self,
        request: AnyRequest,
        broadcast_id: uuid.UUID,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> None:
        await events.remove_broadcast(db, _organiser(request, events, machine), broadcast_id)

    @post(
        "/news",
        status_code=HTTP_201_CREATED,
        summary="A news item, now or at `published_at` (signed; events:publish)",
        opt=problems(422),
    )
    async def create_news(
        self,
        request: AnyRequest,
        data: NewsBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> News:
        return await events.create_news(db, _organiser(request, events, machine), data)

    @put("/news/{news_id:uuid}", summary="Change my news item (signed; events:publish)", opt=problems(422))
    async def update_news(
        self,
        request: AnyRequest,
        news_id: uuid.UUID,
        data: NewsBody,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> News:
        return await events.update_news(db, _organiser(request, events, machine), news_id, data)

    @delete("/news/{news_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Withdraw my news item (signed)")
    async def delete_news(
        self,
        request: AnyRequest,
        news_id: uuid.UUID,
        events: EventsService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> None:
        await events.delete_news(db, _organiser(request, events, machine), news_id)


async def _kept(
    request: AnyRequest,
    events: EventsService,
    key: str,
    read: Callable[[Connection], Awaitable[msgspec.Struct]],
) -> Response[Any]:
    """The answer kept for `key`, or read (one pooled connection, no transaction) and kept."""

    async def load() -> msgspec.Struct:
        state = request.app.state
        async with pooled_connection(state.pool, settings_of(state).db_acquire_timeout) as conn:
            return await read(conn)

    # The one public answer a client or CDN may keep, briefly: a change still shows within seconds (0015, 0027).
    return Response(
        content=await events.cache.read(key, load),
        media_type=MediaType.JSON,
        headers={"Cache-Control": f"public, max-age={PUBLIC_MAX_AGE}"},
    )


class ScheduleController(Controller):
    """What residents read, without logging in: events, sessions by day, sport and venue, venues' guides, news and
    broadcast links. Answers are kept until the next publish."""

    path = "/api/v1/events"
    tags = ["events"]

    @get("", summary="Events (the games), latest first")
    async def events_list(self, request: AnyRequest, events: EventsService) -> Response[Events]:
        return await _kept(request, events, "events", events.events)

    @get("/{event_id:uuid}", summary="An event with its competitions", opt=problems(404))
    async def event(
        self, request: AnyRequest, event_id: uuid.UUID, events: EventsService
    ) -> Response[EventDetail]:
        return await _kept(request, events, f"event:{event_id}", lambda conn: events.event(conn, event_id))

    @get(
        "/sessions",
        summary="Sessions by start: of a day (Beijing time), a sport, a venue, an event; paged",
        description="`date` is a business day (Asia/Shanghai) or `today`; absent, every day.",
    )
    async def sessions(
        self,
        request: AnyRequest,
        events: EventsService,
        date: DateParam = None,
        sport: SportParam = None,
        venue_id: VenueParam = None,
        event_id: EventParam = None,
        page: Page = 1,
        page_size: PageSize = 20,
    ) -> Response[Sessions]:
        chosen = _day(date)
        # JSON, so that no sport a resident types can make another query's key
        key = msgspec.json.encode(["sessions", chosen, sport, venue_id, event_id, page, page_size]).decode()
        return await _kept(
            request,
            events,
            key,
            lambda conn: events.sessions(
                conn,
                day=chosen,
                sport=sport,
                venue_id=venue_id,
                event_id=event_id,
                page=page,
                page_size=page_size,
            ),
        )

    @get("/sessions/{session_id:uuid}", summary="A session with its broadcast links", opt=problems(404))
    async def session(
        self, request: AnyRequest, session_id: uuid.UUID, events: EventsService
    ) -> Response[Session]:
        return await _kept(
            request, events, f"session:{session_id}", lambda conn: events.session(conn, session_id)
        )

    @get(
        "/sessions/{session_id:uuid}/broadcasts",
        summary="A session's live-broadcast links",
        opt=problems(404),
    )
    async def broadcasts(
        self, request: AnyRequest, session_id: uuid.UUID, events: EventsService
    ) -> Response[Broadcasts]:
        return await _kept(
            request, events, f"broadcasts:{session_id}", lambda conn: events.broadcasts(conn, session_id)
        )

    @get("/venues", summary="Venues")
    async def venues(self, request: AnyRequest, events: EventsService) -> Response[Venues]:
        return await _kept(request, events, "venues", events.venues)

    @get(
        "/venues/{venue_id:uuid}",
        summary="A venue's guide: sections, entrances, transport, accessibility",
        opt=problems(404),
    )
    async def venue(self, request: AnyRequest, venue_id: uuid.UUID, events: EventsService) -> Response[Venue]:
        return await _kept(request, events, f"venue:{venue_id}", lambda conn: events.venue(conn, venue_id))

    @get("/news", summary="News, newest first; of an event when given; paged")
    async def news(
        self,
        request: AnyRequest,
        events: EventsService,
        event_id: EventParam = None,
        page: Page = 1,
        page_size: PageSize = 20,
    ) -> Response[NewsList]:
        return await _kept(
            request,
            events,
            f"news:{event_id}:{page}:{page_size}",
            lambda conn: events.news(conn, event_id=event_id, page=page, page_size=page_size),
        )

    @get("/news/{news_id:uuid}", summary="A news item", opt=problems(404))
    async def news_item(
        self, request: AnyRequest, news_id: uuid.UUID, events: EventsService
    ) -> Response[News]:
        return await _kept(
            request, events, f"news-item:{news_id}", lambda conn: events.news_item(conn, news_id)
        )


def _day(day: str | None) -> dt.date | None:
    if day is None:
        return None
    if day == "today":
        return business_day()
    try:
        chosen = dt.date.fromisoformat(day)
    except ValueError:
        raise invalid_field("date", "not a date (YYYY-MM-DD)") from None
    if not FIRST_YEAR <= chosen.year <= LAST_YEAR:
        raise invalid_field("date", f"must fall within {FIRST_YEAR}–{LAST_YEAR}")
    return chosen
