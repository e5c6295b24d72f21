"""The rules of service tiles (docs/decisions/0025-service-tiles.md): what a tile may say, who may move it where,
and what residents see of it.

Every change is a new version. A version is a draft until its department submits it (until then the department
may replace it), then a reviewer approves or rejects it (with a reason); the department publishes an approved
version, which makes it the one residents see. A tile with a live version may be suspended and resumed, rolled
back to another version that was approved, or retired. `MOVES` is the whole state machine: each transition, the
states it starts from, and who may make it; anything else is a 409 naming the current state. Every transition is
recorded in the audit trail and in the owning organisation's notices, in the caller's transaction.

Callers own the transaction. Nothing here knows HTTP."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

import msgspec
import structlog
from redis.asyncio import Redis

from app_backend.audit.service import AuditTrail
from app_backend.kernel.actors import Actor
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.clock import BUSINESS_TZ, now
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, forbidden, invalid_field, not_found
from app_backend.kernel.outbound import is_public
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.regions import CITY, REGIONS
from app_backend.kernel.settings import Settings
from app_backend.oidc.service import OidcService
from app_backend.tiles.health import HealthChecks
from app_backend.tiles.repository import (
    CatalogueRepository,
    NoticeRepository,
    ShownRow,
    TileRepository,
    TileRow,
    VersionRepository,
    VersionRow,
)
from app_backend.tiles.schemas import (
    CATEGORIES,
    DEGRADED_NOTICE,
    LEVELS,
    SUSPENDED_NOTICE,
    CatalogueTile,
    Notice,
    Notices,
    Review,
    SearchHit,
    SearchResult,
    ServiceHours,
    Tile,
    TileContent,
    TileSummary,
    Version,
    step_up,
)
from app_backend.tiles.search import forms, query_forms
from app_backend.tiles.usage import UsageService

_log = structlog.get_logger("tiles")
# Who the health checks act as in the audit trail.
HEALTH_ACTOR = Actor("system", "tile-health")

CallerKind = Literal["department", "operations", "health"]


class Caller(msgspec.Struct, frozen=True):
    """Who moves a tile: its department (a signed request of the owning organisation), operations (a reviewer),
    or the health checks. `organisation_id` is the department's; for a reviewer, the department the staff member
    belongs to, when staff are ever linked to one (none are yet): a reviewer never reviews their own tile."""

    kind: CallerKind
    actor: Actor
    organisation_id: uuid.UUID | None = None

    @classmethod
    def department(cls, organisation_id: uuid.UUID, actor: Actor) -> Caller:
        return cls("department", actor, organisation_id)

    @classmethod
    def operations(cls, actor: Actor, organisation_id: uuid.UUID | None = None) -> Caller:
        return cls("operations", actor, organisation_id)

    @classmethod
    def health(cls, actor: Actor) -> Caller:
        """The health checks: they may suspend a tile after a long outage, and resume it when it recovers."""
        return cls("health", actor)


class Move(NamedTuple):
    of: Literal["version", "tile"]
    sources: frozenset[str]
    target: str | None  # None: the tile keeps its state (a rollback changes the live version only)
    by: frozenset[str]


def _move(of: Literal["version", "tile"], sources: set[str], target: str | None, by: set[str]) -> Move:
    return Move(of, frozenset(sources), target, frozenset(by))


# The state machine: a transition of a version moves that version's status, one of a tile the tile's state.
_ANYONE = {"department", "operations", "health"}
_SHOWN_ROWS = msgspec.json.Decoder(list[ShownRow])
FOR_RESIDENT_LIMIT = 200  # the most tiles a home shows
MOVES: dict[str, Move] = {
    "submit": _move("version", {"draft"}, "submitted", {"department"}),
    "withdraw": _move("version", {"submitted"}, "draft", {"department"}),
    "approve": _move("version", {"submitted"}, "approved", {"operations"}),
    "reject": _move("version", {"submitted"}, "rejected", {"operations"}),
    "publish": _move("version", {"approved"}, "live", {"department"}),
    "suspend": _move("tile", {"live"}, "suspended", _ANYONE),
    "resume": _move("tile", {"suspended"}, "live", _ANYONE),
    "rollback": _move("tile", {"live", "suspended"}, None, {"department", "operations"}),
    "retire": _move("tile", {"unpublished", "live", "suspended"}, "retired", {"department", "operations"}),
}
# Who may lift a suspension, by who imposed it: operations' only by operations, a department's not by the health
# checks (a service that answers again may still be under the department's maintenance).
LIFTED_BY: dict[str, frozenset[str]] = {
    "operations": frozenset({"operations"}),
    "department": frozenset({"department", "operations"}),
    "health": frozenset({"health", "department", "operations"}),
}
# A version may be rolled back to when it was approved: never live yet, or live before.
ROLLBACK_TARGETS = frozenset({"approved", "superseded"})

_WECHAT_APP_ID = re.compile(r"wx[0-9a-f]{16}")
_ALIPAY_APP_ID = re.compile(r"20[0-9]{14}")
_QUERY = r"(\?[A-Za-z0-9_.~%=&+-]*)?"
_MINI_PATH = re.compile(r"/?[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*" + _QUERY)
_APP_ROUTE = re.compile(r"/[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*" + _QUERY)


def refused_state(action: str, subject: str, current: str, sources: frozenset[str]) -> DomainError:
    """The one refusal of a transition the current state does not allow: a 409 naming that state."""
    return DomainError(
        409,
        "tile-state",
        f"{subject} is {current}: {action} needs {' or '.join(sorted(sources))}",
        extra={"state": current, "action": action, "allowed_from": sorted(sources)},
    )


def check_move(action: str, caller: Caller, subject: str, current: str) -> Move:
    move = MOVES[action]
    if caller.kind not in move.by:
        raise forbidden(f"{action} is for {' or '.join(sorted(move.by))}, not a {caller.kind}", "tile-role")
    if current not in move.sources:
        raise refused_state(action, subject, current, move.sources)
    return move


# -- what a version may say ----------------------------------------------------------------------------------------


def _check_url(field: str, url: str, dev: bool) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unbalanced IPv6 bracket, say
        raise invalid_field(field, "not a URL") from None
    if not url.isprintable() or any(c.isspace() for c in url) or not host:
        raise invalid_field(field, "not a URL")
    if not (parts.scheme == "https" or (dev and parts.scheme == "http")):
        raise invalid_field(field, "must be an https URL" + (" (or http, in dev)" if dev else ""))
    if parts.username is not None or parts.password is not None:
        raise invalid_field(field, "must not carry a user name or password")
    if not dev:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a name: the health checks check its addresses each time they probe it
            return
        if not is_public(address):
            raise invalid_field(field, "must not name a private, loopback or link-local address")


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _check_hours(hours: ServiceHours) -> None:
    for index, window in enumerate(hours.windows):
        if len(set(window.days)) != len(window.days):
            raise invalid_field(f"service_hours.windows[{index}].days", "names a day twice")
        if _minutes(window.closes) <= _minutes(window.opens):
            raise invalid_field(f"service_hours.windows[{index}].closes", "must be after opens")


def checked_content(content: TileContent, dev: bool) -> TileContent:
    """The content as stored: trimmed, duplicates dropped; a 400 naming the first field that breaks a rule (the
    one-login client is checked against its organisation separately, `TileService._check_client`)."""
    name, description = " ".join(content.name.split()), content.description.strip()
    if not name:
        raise invalid_field("name", "must not be blank")
    if not description:
        raise invalid_field("description", "must not be blank")
    _check_url("icon", content.icon, dev)
    if content.category not in CATEGORIES:
        raise invalid_field("category", f"unknown category (known: {', '.join(CATEGORIES)})")
    keywords = [" ".join(k.split()) for k in content.keywords]
    for index, keyword in enumerate(keywords):
        if not keyword:
            raise invalid_field(f"keywords[{index}]", "must not be blank")
    for index, region in enumerate(content.regions):
        if region not in REGIONS:
            raise invalid_field(f"regions[{index}]", f"not a region of Taizhou (known: {', '.join(REGIONS)})")
    entry = content.entry
    if not (entry.h5_url or entry.wechat or entry.alipay or entry.app_route):
        raise invalid_field("entry", "needs at least one of h5_url, wechat, alipay, app_route")
    if entry.h5_url is not None:
        _check_url("entry.h5_url", entry.h5_url, dev)
    for channel, app, pattern in (
        ("wechat", entry.wechat, _WECHAT_APP_ID),
        ("alipay", entry.alipay, _ALIPAY_APP_ID),
    ):
        if app is None:
            continue
        if not pattern.fullmatch(app.app_id):
            shape = "wx and 16 hex digits" if channel == "wechat" else "16 digits starting 20"
            raise invalid_field(f"entry.{channel}.app_id", f"not a {channel} mini-program app id ({shape})")
        if not _MINI_PATH.fullmatch(app.path):
            raise invalid_field(f"entry.{channel}.path", "not a mini-program page path (pages/x/y?k=v)")
    if entry.app_route is not None and not _APP_ROUTE.fullmatch(entry.app_route):
        raise invalid_field("entry.app_route", "not an app route (/services/x?k=v)")
    if content.service_hours is not None:
        _check_hours(content.service_hours)
    if content.health_check_url is not None:
        _check_url("health_check_url", content.health_check_url, dev)
    if content.auto_suspend and content.health_check_url is None and entry.h5_url is None:
        raise invalid_field("auto_suspend", "needs a health_check_url or an entry.h5_url to watch")
    return msgspec.structs.replace(
        content,
        name=name,
        description=description,
        keywords=list(dict.fromkeys(keywords)),
        regions=list(dict.fromkeys(content.regions)),
    )


def open_at(hours: ServiceHours | None, at: dt.datetime) -> bool:
    """Whether the service is staffed at `at` (Beijing time); always without service hours."""
    if hours is None:
        return True
    local = at.astimezone(BUSINESS_TZ)
    minute = local.hour * 60 + local.minute
    return any(
        local.isoweekday() in w.days and _minutes(w.opens) <= minute < _minutes(w.closes)
        for w in hours.windows
    )


def regions_served_to(region: str | None) -> list[str] | None:
    """The tile regions a resident of `region` sees: their district's and the city-wide ones (all when None)."""
    if region is None:
        return None
    if region not in REGIONS:
        raise invalid_field("region", f"not a region of Taizhou (known: {', '.join(REGIONS)})")
    return [CITY] if region == CITY else [region, CITY]


def _content(row: VersionRow | ShownRow) -> TileContent:
    return msgspec.convert(row.content, TileContent)


def _version(row: VersionRow) -> Version:
    return Version(
        number=row.number,
        status=row.status,
        content=_content(row),
        review_note=row.review_note,
        reviewed_at=row.reviewed_at,
        submitted_at=row.submitted_at,
        published_at=row.published_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def catalogue_tile(row: ShownRow, at: dt.datetime, level: int | None = None) -> CatalogueTile:
    content = _content(row)
    unavailable = None
    if row.state == "suspended":
        unavailable = row.resident_notice or SUSPENDED_NOTICE
    elif row.health == "degraded":
        unavailable = DEGRADED_NOTICE
    return CatalogueTile(
        id=row.id,
        version=row.number,
        name=content.name,
        icon=content.icon,
        category=content.category,
        category_name=CATEGORIES.get(content.category, content.category),
        description=content.description,
        keywords=content.keywords,
        organisation_id=row.organisation_id,
        organisation_name=row.organisation_name,
        entry=content.entry,
        regions=content.regions,
        min_level=content.min_level,
        oidc_client_id=content.oidc_client_id,
        service_hours=content.service_hours,
        open_now=open_at(content.service_hours, at),
        status="available" if unavailable is None else "temporarily_unavailable",
        unavailable_reason=unavailable,
        step_up=None if level is None else step_up(row.min_level, level),
    )


_MATCHED = {
    7: "name",
    6: "name_prefix",
    5: "name_part",
    4: "pinyin",
    3: "pinyin_part",
    2: "keyword",
    1: "description",
}
Listener = Callable[[uuid.UUID], Awaitable[None]]


class TileService:
    """Tiles for departments and reviewers, the catalogue for residents, and the reads the home needs."""

    def __init__(
        self,
        audit: AuditTrail,
        oidc: OidcService,
        settings: Settings,
        redis: Redis,
        batches: BatchRunner,
        breaker: RedisBreaker,
    ) -> None:
        self._audit = audit
        self._oidc = oidc
        self._dev = settings.is_dev
        self._tiles = TileRepository()
        self._versions = VersionRepository()
        self._catalogue = CatalogueRepository()
        self._notices = NoticeRepository()
        self._listeners: list[Listener] = []
        # Opens, impressions, completions, figures, retirement candidates (usage.py); the health checks (health.py).
        self.usage = UsageService(self, redis, batches, breaker, settings.tiles, oidc.issuer)
        self.health = HealthChecks(
            self, settings.tiles, allow_private=settings.is_dev, caller=Caller.health(HEALTH_ACTOR)
        )

    # -- what changes the catalogue (the home's cache listens) ----------------------------------------------------

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Calls `listener(tile_id)` whenever what residents see of a tile changed (published, suspended,
        resumed, rolled back, retired, its health), once the change has committed (`changed`). Returns what
        stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def changed(self, tile_id: uuid.UUID) -> None:
        """Called by the boundary that committed a change of what residents see."""
        for listener in self._listeners:
            try:
                await listener(tile_id)
            except Exception:  # a listener's failure must not fail a change already committed
                _log.exception("tile change listener failed", tile_id=str(tile_id))

    # -- departments write --------------------------------------------------------------------------------------

    async def _check_client(self, conn: Connection, organisation_id: uuid.UUID, content: TileContent) -> None:
        if content.oidc_client_id is None:
            return
        client = await self._oidc.active_client(conn, content.oidc_client_id)
        if client is None or client.organisation_id != organisation_id:
            raise invalid_field(
                "oidc_client_id",
                "no active one-login client of the tile's organisation has this id",
                status=422,
            )

    async def _checked(
        self, conn: Connection, organisation_id: uuid.UUID, content: TileContent
    ) -> TileContent:
        clean = checked_content(content, self._dev)
        await self._check_client(conn, organisation_id, clean)
        return clean

    async def create(
        self, conn: Connection, caller: Caller, organisation_name: str, content: TileContent
    ) -> Tile:
        """A new tile of the caller's organisation, with its first version as a draft."""
        if caller.kind != "department" or caller.organisation_id is None:
            raise forbidden("tiles are created by their department", "tile-role")
        clean = await self._checked(conn, caller.organisation_id, content)
        tile = await self._tiles.create(conn, caller.organisation_id, organisation_name)
        await self._add_version(conn, tile.id, clean)
        await self._audit.record(
            conn,
            caller.actor,
            "tile.create",
            target_type="tile",
            target_id=str(tile.id),
            detail={"organisation": str(caller.organisation_id), "version": 1, "name": clean.name},
        )
        return await self.tile(conn, caller, tile.id)

    async def _add_version(self, conn: Connection, tile_id: uuid.UUID, content: TileContent) -> VersionRow:
        return await self._versions.add(
            conn,
            tile_id,
            msgspec.to_builtins(content),
            content.name,
            content.category,
            content.regions,
            LEVELS[content.min_level],
        )

    async def add_version(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, content: TileContent
    ) -> Tile:
        """A new draft version: refused (409) while another is open (draft or submitted) or the tile is retired."""
        tile = await self._owned(conn, caller, tile_id)
        if caller.kind != "department":
            raise forbidden("versions are written by the tile's department", "tile-role")
        if tile.state == "retired":
            raise refused_state("a new version", "the tile", "retired", frozenset(MOVES["retire"].sources))
        open_version = await self._versions.open_version(conn, tile_id)
        if open_version is not None:
            raise DomainError(
                409,
                "tile-state",
                f"version {open_version.number} is {open_version.status}: "
                + (
                    "replace it (PUT) or submit it"
                    if open_version.status == "draft"
                    else "withdraw it or wait for its review"
                ),
                extra={"state": open_version.status, "action": "add_version", "version": open_version.number},
            )
        clean = await self._checked(conn, tile.organisation_id, content)
        version = await self._add_version(conn, tile_id, clean)
        await self._tiles.touch(conn, tile_id)
        await self._audit.record(
            conn,
            caller.actor,
            "tile.version_create",
            target_type="tile",
            target_id=str(tile_id),
            detail={"version": version.number, "name": clean.name},
        )
        return await self.tile(conn, caller, tile_id)

    async def replace_draft(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int, content: TileContent
    ) -> Tile:
        tile = await self._owned(conn, caller, tile_id)
        if caller.kind != "department":
            raise forbidden("versions are written by the tile's department", "tile-role")
        version = await self._existing_version(conn, tile_id, number)
        if version.status != "draft":
            raise refused_state("replace", f"version {number}", version.status, frozenset({"draft"}))
        clean = await self._checked(conn, tile.organisation_id, content)
        await self._versions.replace_draft(
            conn,
            tile_id,
            number,
            msgspec.to_builtins(clean),
            clean.name,
            clean.category,
            clean.regions,
            LEVELS[clean.min_level],
        )
        await self._tiles.touch(conn, tile_id)
        await self._audit.record(
            conn,
            caller.actor,
            "tile.version_update",
            target_type="tile",
            target_id=str(tile_id),
            detail={"version": number, "name": clean.name},
        )
        return await self.tile(conn, caller, tile_id)

    # -- transitions of a version ----------------------------------------------------------------------------------

    async def submit(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int) -> Tile:
        """draft -> submitted; the content is checked again (its one-login client may have been revoked)."""
        tile, version = await self._version_for(conn, caller, tile_id, number, "submit")
        await self._check_client(conn, tile.organisation_id, _content(version))
        await self._versions.set_status(conn, tile_id, number, "submitted", submitted=True)
        await self._record(conn, caller, tile, "submit", version, "submitted", None)
        return await self.tile(conn, caller, tile_id)

    async def withdraw(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int) -> Tile:
        """submitted -> draft: the department takes a version back before it is reviewed."""
        tile, version = await self._version_for(conn, caller, tile_id, number, "withdraw")
        await self._versions.set_status(conn, tile_id, number, "draft")
        await self._record(conn, caller, tile, "withdraw", version, "draft", None)
        return await self.tile(conn, caller, tile_id)

    async def approve(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int, note: str = ""
    ) -> Tile:
        tile, version = await self._version_for(conn, caller, tile_id, number, "approve")
        await self._versions.set_status(
            conn, tile_id, number, "approved", review=(note or None, caller.actor.id)
        )
        await self._record(conn, caller, tile, "approve", version, "approved", note or None)
        return await self.tile(conn, caller, tile_id)

    async def reject(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int, reason: str
    ) -> Tile:
        tile, version = await self._version_for(conn, caller, tile_id, number, "reject")
        await self._versions.set_status(conn, tile_id, number, "rejected", review=(reason, caller.actor.id))
        await self._record(conn, caller, tile, "reject", version, "rejected", reason)
        return await self.tile(conn, caller, tile_id)

    async def publish(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int) -> Tile:
        """approved -> live: residents see this version from now on (a suspended tile stays suspended)."""
        tile, version = await self._version_for(conn, caller, tile_id, number, "publish")
        await self._go_live(conn, tile, version)
        await self._record(conn, caller, tile, "publish", version, "live", None)
        return await self.tile(conn, caller, tile_id)

    # -- transitions of a tile -------------------------------------------------------------------------------------

    async def suspend(
        self,
        conn: Connection,
        caller: Caller,
        tile_id: uuid.UUID,
        reason: str,
        resident_notice: str | None = None,
    ) -> Tile:
        """live -> suspended: residents see it as temporarily unavailable, with `resident_notice` when given."""
        tile = await self._tile_for(conn, caller, tile_id, "suspend")
        await self._tiles.set_state(
            conn,
            tile_id,
            state="suspended",
            live_version=tile.live_version,
            state_reason=reason,
            suspended_by=caller.kind,
            resident_notice=resident_notice,
        )
        await self._record(conn, caller, tile, "suspend", None, "suspended", reason)
        return await self.tile(conn, caller, tile_id)

    async def resume(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, reason: str | None = None
    ) -> Tile:
        """suspended -> live, by whom `LIFTED_BY` allows for who suspended it."""
        tile = await self._tile_for(conn, caller, tile_id, "resume")
        by = tile.suspended_by or "department"
        if caller.kind not in LIFTED_BY[by]:
            raise forbidden(
                f"suspended by {by}: resumed only by {' or '.join(sorted(LIFTED_BY[by]))}",
                f"tile-suspended-by-{by}",
            )
        await self._tiles.set_state(
            conn,
            tile_id,
            state="live",
            live_version=tile.live_version,
            state_reason=None,
            suspended_by=None,
            resident_notice=None,
        )
        await self._record(conn, caller, tile, "resume", None, "live", reason)
        return await self.tile(conn, caller, tile_id)

    async def rollback(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int, reason: str
    ) -> Tile:
        """The live version becomes `number`, another version that was approved (approved or superseded)."""
        tile = await self._tile_for(conn, caller, tile_id, "rollback")
        target = await self._existing_version(conn, tile_id, number)
        if target.status not in ROLLBACK_TARGETS:
            raise refused_state("rollback", f"version {number}", target.status, ROLLBACK_TARGETS)
        await self._go_live(conn, tile, target)
        await self._record(conn, caller, tile, "rollback", target, tile.state, reason)
        return await self.tile(conn, caller, tile_id)

    async def retire(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, reason: str) -> Tile:
        """Gone from the catalogue for good: open versions are withdrawn, no version can be added or published."""
        tile = await self._tile_for(conn, caller, tile_id, "retire")
        await self._versions.close_all(conn, tile_id)
        await self._tiles.set_state(
            conn,
            tile_id,
            state="retired",
            live_version=tile.live_version,
            state_reason=reason,
            suspended_by=None,
            resident_notice=None,
        )
        await self._record(conn, caller, tile, "retire", None, "retired", reason)
        return await self.tile(conn, caller, tile_id)

    async def _go_live(self, conn: Connection, tile: TileRow, version: VersionRow) -> None:
        """`version` becomes the live one (the one before it superseded), and the search forms are computed."""
        if tile.live_version is not None:
            await self._versions.set_status(conn, tile.id, tile.live_version, "superseded")
        await self._versions.set_status(conn, tile.id, version.number, "live", published=True)
        await self._tiles.set_state(
            conn,
            tile.id,
            state="suspended" if tile.state == "suspended" else "live",
            live_version=version.number,
            state_reason=tile.state_reason,
            suspended_by=tile.suspended_by,
            resident_notice=tile.resident_notice,
        )
        await self._tiles.set_search_forms(conn, tile.id, forms(_content(version)))

    # -- who may touch which tile ----------------------------------------------------------------------------------

    async def _owned(self, conn: Connection, caller: Caller, tile_id: uuid.UUID) -> TileRow:
        """The tile, locked; a department finds only its own tiles (another's is a 404, as if it did not exist)."""
        tile = await self._tiles.lock(conn, tile_id)
        if tile is None or (caller.kind == "department" and tile.organisation_id != caller.organisation_id):
            raise not_found(
                "tile_id: no tile of yours with this id"
                if caller.kind == "department"
                else "tile_id: no such tile"
            )
        if caller.kind == "operations" and caller.organisation_id == tile.organisation_id:
            raise forbidden("a reviewer may not act on a tile of their own department", "tile-own-department")
        return tile

    async def _existing_version(self, conn: Connection, tile_id: uuid.UUID, number: int) -> VersionRow:
        version = await self._versions.get(conn, tile_id, number)
        if version is None:
            raise not_found(f"version: the tile has no version {number}")
        return version

    async def _version_for(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, number: int, action: str
    ) -> tuple[TileRow, VersionRow]:
        tile = await self._owned(conn, caller, tile_id)
        version = await self._existing_version(conn, tile_id, number)
        if tile.state == "retired":
            raise refused_state(
                action, "the tile", "retired", frozenset({"unpublished", "live", "suspended"})
            )
        check_move(action, caller, f"version {number}", version.status)
        return tile, version

    async def _tile_for(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, action: str) -> TileRow:
        tile = await self._owned(conn, caller, tile_id)
        check_move(action, caller, "the tile", tile.state)
        return tile

    async def _record(
        self,
        conn: Connection,
        caller: Caller,
        tile: TileRow,
        event: str,
        version: VersionRow | None,
        to_state: str,
        reason: str | None,
    ) -> None:
        """The audit record and the department's notice of one transition, in the caller's transaction."""
        move = MOVES[event]
        from_state = version.status if version is not None and move.of == "version" else tile.state
        number = version.number if version is not None else tile.live_version
        detail: dict[str, object] = {
            "organisation": str(tile.organisation_id),
            "by": caller.kind,
            "version": number,
            "from": from_state,
            "to": to_state,
        }
        if event == "rollback":
            detail["from_version"] = tile.live_version
        if reason:
            detail["reason"] = reason
        await self._audit.record(
            conn, caller.actor, f"tile.{event}", target_type="tile", target_id=str(tile.id), detail=detail
        )
        name = await self._name_of(conn, tile, version)
        await self._notices.add(
            conn,
            tile.organisation_id,
            tile.id,
            name,
            number,
            event,
            to_state,
            caller.kind,
            reason,
            read=caller.kind == "department",
        )

    async def _name_of(self, conn: Connection, tile: TileRow, version: VersionRow | None) -> str:
        if version is not None:
            return str(version.content.get("name", ""))
        if tile.live_version is not None:
            live = await self._versions.get(conn, tile.id, tile.live_version)
            if live is not None:
                return str(live.content.get("name", ""))
        return ""

    # -- views for departments and reviewers -----------------------------------------------------------------------

    async def tile(self, conn: Connection, caller: Caller, tile_id: uuid.UUID) -> Tile:
        """The tile with its versions: all of them for its department, all but drafts for operations."""
        tile = await self._tiles.get(conn, tile_id)
        if tile is None or (caller.kind == "department" and tile.organisation_id != caller.organisation_id):
            raise not_found(
                "tile_id: no tile of yours with this id"
                if caller.kind == "department"
                else "tile_id: no such tile"
            )
        versions = await self._versions.versions(conn, tile_id)
        shown = [v for v in versions if caller.kind == "department" or v.status != "draft"]
        return Tile(
            id=tile.id,
            organisation_id=tile.organisation_id,
            organisation_name=tile.organisation_name,
            state=tile.state,
            live_version=tile.live_version,
            state_reason=tile.state_reason,
            suspended_by=tile.suspended_by,
            resident_notice=tile.resident_notice,
            health=tile.health,
            created_at=tile.created_at,
            updated_at=tile.updated_at,
            versions=[_version(v) for v in shown],
        )

    async def tiles(
        self,
        conn: Connection,
        caller: Caller,
        *,
        state: str | None = None,
        organisation_id: uuid.UUID | None = None,
        limit: int = 100,
    ) -> list[TileSummary]:
        """A department's own tiles, or (operations) every tile, most recently changed first."""
        if caller.kind == "department":
            organisation_id = caller.organisation_id
        rows = await self._tiles.summaries(
            conn,
            organisation_id=organisation_id,
            state=state,
            include_drafts=caller.kind == "department",
            limit=limit,
        )
        return [TileSummary(**msgspec.structs.asdict(r)) for r in rows]

    async def reviews(self, conn: Connection, limit: int = 100) -> list[Review]:
        """Submitted versions waiting for a reviewer, oldest first, each with the tile's live version (three
        statements whatever the queue's length)."""
        queue = await self._versions.review_queue(conn, limit)
        tile_ids = list({row.tile_id for row in queue})
        tiles = {tile.id: tile for tile in await self._tiles.get_many(conn, tile_ids)}
        lives = {row.tile_id: _version(row) for row in await self._versions.live_of(conn, tile_ids)}
        found: list[Review] = []
        for row in queue:
            tile = tiles[row.tile_id]  # a version's tile exists (foreign key)
            live = lives.get(tile.id)
            found.append(
                Review(
                    tile_id=tile.id,
                    organisation_id=tile.organisation_id,
                    organisation_name=tile.organisation_name,
                    version=_version(row),
                    live=live,
                )
            )
        return found

    # -- notices -----------------------------------------------------------------------------------------------

    async def notices(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        *,
        before: dt.datetime | None = None,
        unread_only: bool = False,
        limit: int = 50,
    ) -> Notices:
        rows = await self._notices.page(
            conn, organisation_id, before=before, unread_only=unread_only, limit=limit + 1
        )
        page = rows[:limit]
        return Notices(
            notices=[
                Notice(
                    id=r.id,
                    tile_id=r.tile_id,
                    tile_name=r.tile_name,
                    version=r.version,
                    event=r.event,
                    state=r.state,
                    by=r.by_whom,
                    reason=r.reason,
                    created_at=r.created_at,
                    read_at=r.read_at,
                )
                for r in page
            ],
            unread=await self._notices.unread(conn, organisation_id),
            next_before=page[-1].created_at if len(rows) > limit else None,
        )

    async def mark_notice_read(
        self, conn: Connection, organisation_id: uuid.UUID, notice_id: uuid.UUID
    ) -> None:
        if not await self._notices.mark_read(conn, organisation_id, notice_id):
            raise not_found("notice_id: no notice of yours with this id")

    async def mark_notices_read(self, conn: Connection, organisation_id: uuid.UUID) -> None:
        await self._notices.mark_all_read(conn, organisation_id)

    # -- residents -------------------------------------------------------------------------------------------------

    async def catalogue(
        self,
        conn: Connection,
        *,
        region: str | None = None,
        category: str | None = None,
        limit: int = 200,
    ) -> list[CatalogueTile]:
        """Live tiles (suspended and degraded ones shown as temporarily unavailable), most used first."""
        if category is not None and category not in CATEGORIES:
            raise invalid_field("category", f"unknown category (known: {', '.join(CATEGORIES)})")
        rows = await self._catalogue.shown(
            conn, regions=regions_served_to(region), category=category, limit=limit
        )
        at = now()
        return [catalogue_tile(r, at) for r in rows]

    async def for_resident(
        self, conn: Connection, *, region: str | None, level: int, limit: int = FOR_RESIDENT_LIMIT
    ) -> list[CatalogueTile]:
        """What the home shows a resident of `region` at `level`: every live tile serving them, most used first,
        each above their level with the step-up it needs. One statement."""
        rows = await self._catalogue.shown(
            conn, regions=regions_served_to(region), category=None, limit=limit
        )
        at = now()
        return [catalogue_tile(r, at, level) for r in rows]

    def for_resident_from(self, shown: str, level: int) -> list[CatalogueTile]:
        """`for_resident` from the JSON of `tiles.shown` (an array of its rows) another statement returned: the
        home reads it with the resident's part, in one round trip."""
        at = now()
        return [catalogue_tile(r, at, level) for r in _SHOWN_ROWS.decode(shown)]

    async def live_tile(self, conn: Connection, tile_id: uuid.UUID) -> CatalogueTile:
        row = await self._catalogue.live(conn, tile_id)
        if row is None:
            raise not_found("tile_id: no live tile with this id")
        return catalogue_tile(row, now())

    async def search(
        self,
        conn: Connection,
        query: str,
        *,
        region: str | None = None,
        category: str | None = None,
        limit: int = 20,
    ) -> SearchResult:
        """Ranked: exact name, name prefix, name part, pinyin or initials of the name (from its start, then from a
        later syllable), keyword, description; then by use, then by name."""
        if category is not None and category not in CATEGORIES:
            raise invalid_field("category", f"unknown category (known: {', '.join(CATEGORIES)})")
        text, pinyin = query_forms(query)
        if not text:
            return SearchResult(query=query, hits=[])
        rows = await self._catalogue.search(
            conn, text, pinyin, regions=regions_served_to(region), category=category, limit=limit
        )
        at = now()
        hits = [
            SearchHit(
                tile=catalogue_tile(r, at),
                matched=_MATCHED[r.relevance],
            )
            for r in rows
        ]
        return SearchResult(query=query, hits=hits)

    # -- the health and usage work's hooks ----------------------------------------------------------------------

    async def record_health(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        health: Literal["ok", "degraded"],
        reason: str | None = None,
    ) -> bool:
        """The health checks' verdict on a tile (`reason`: what failed, for operations; residents see a plain
        "temporarily unavailable"). Returns whether it changed. No transition: a long outage suspends the tile
        through `suspend` with a health caller."""
        return await self._tiles.set_health(conn, tile_id, health, reason)

    async def report_health(
        self,
        conn: Connection,
        caller: Caller,
        tile_id: uuid.UUID,
        health: Literal["ok", "degraded"],
        reason: str,
    ) -> bool:
        """The health checks' verdict changed (`record_health`), told: audited (`tile.degraded`,
        `tile.recovered`) and a notice to the department, in the caller's transaction. Returns whether it
        changed (nothing is told when it did not)."""
        tile = await self._tiles.lock(conn, tile_id)
        if tile is None or not await self.record_health(
            conn, tile_id, health, reason if health != "ok" else None
        ):
            return False
        event = "degraded" if health == "degraded" else "recovered"
        await self._audit.record(
            conn,
            caller.actor,
            f"tile.{event}",
            target_type="tile",
            target_id=str(tile_id),
            detail={
                "organisation": str(tile.organisation_id),
                "by": caller.kind,
                "state": tile.state,
                "reason": reason,
            },
        )
        await self._notices.add(
            conn,
            tile.organisation_id,
            tile.id,
            await self._name_of(conn, tile, None),
            tile.live_version,
            event,
            tile.state,
            caller.kind,
            reason,
            read=False,
        )
        return True

    async def count_impressions(self, tile_ids: Sequence[uuid.UUID]) -> bool:
        """One impression of each tile shown in a list (the home calls this): counted in Redis without who saw
        them, added to the daily figures by the flush job (`UsageService.count_impressions`)."""
        return await self.usage.count_impressions(tile_ids)

    async def set_usage_scores(self, conn: Connection, scores: Mapping[uuid.UUID, float]) -> int:
        """Sets the scores that rank tiles of equal relevance (search) and the home's order; the usage work
        computes them. Returns how many tiles it found."""
        return await self._tiles.set_usage_scores(conn, scores)
