"""HTTP for service tiles: the catalogue and its search for residents (no token needed), a department's tiles and
notices (signed machine requests, scope tiles:manage), and review by operations staff (ops_reviewer)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, OPS_REVIEWER, STAFF, Staff, audited, staff_only
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.actors import Actor
from app_backend.kernel.clock import business_day
from app_backend.kernel.db import Connection, pooled_connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import after_commit, client_ip, problems, request_id, settings_of
from app_backend.kernel.regions import REGIONS
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import MachinePrincipal
from app_backend.tiles.schemas import (
    CATEGORIES,
    ApproveBody,
    Catalogue,
    CatalogueTile,
    Category,
    CompletionsBody,
    CompletionsRecorded,
    ImpressionsBody,
    MonthlyReport,
    Notices,
    ReasonBody,
    Region,
    RetirementCandidates,
    Reviews,
    RollbackBody,
    SearchResult,
    SuspendBody,
    Taxonomy,
    Tile,
    TileContent,
    TileHealth,
    TileList,
    TileOpened,
    TileUsage,
)
from app_backend.tiles.service import Caller

if TYPE_CHECKING:
    from app_backend.tiles.service import TileService

AnyRequest = Request[Any, Any, Any]
MANAGE_SCOPE = "tiles:manage"
VersionParam = Annotated[int, Parameter(ge=1, le=2**31 - 1, description="the version's number")]
Limit = Annotated[int, Parameter(ge=1, le=200)]
RegionParam = Annotated[
    str | None,
    Parameter(max_length=12, description="a region code (taxonomy): that district's and city-wide tiles"),
]
CategoryParam = Annotated[str | None, Parameter(max_length=32, description="a category code (taxonomy)")]
MonthParam = Annotated[
    str | None,
    Parameter(
        pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
        max_length=7,
        description="YYYY-MM (Beijing time); absent: this month",
    ),
]
StartParam = Annotated[dt.date | None, Parameter(description="first day (absent: 29 days before end)")]
EndParam = Annotated[dt.date | None, Parameter(description="last day (absent: today, Beijing time)")]
ProbesParam = Annotated[int, Parameter(ge=1, le=500)]
# `state` is a name Litestar reserves: the query parameter is read under it.
StateParam = Annotated[
    str | None, Parameter(query="state", max_length=16, description="unpublished, live, suspended or retired")
]


def _department(request: AnyRequest, machine: MachinePrincipal) -> Caller:
    if MANAGE_SCOPE not in machine.scopes:
        raise forbidden(f"this credential lacks the scope {MANAGE_SCOPE}")
    actor = Actor("organisation", str(machine.organisation_id), request_id(request), client_ip(request))
    return Caller.department(machine.organisation_id, actor)


def _month(month: str | None) -> str:
    return month or f"{business_day():%Y-%m}"


def _days(start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    last = end or business_day()
    return start or last - dt.timedelta(days=29), last


def _announce(request: AnyRequest, tiles: TileService, tile_id: uuid.UUID) -> None:
    """What residents see of the tile changed: listeners (the home's cache) hear it once committed."""
    after_commit(request, lambda: tiles.changed(tile_id))


class CatalogueController(Controller):
    """What residents see: live tiles (suspended or failing ones as temporarily unavailable) and their search."""

    path = "/api/v1/tiles"
    tags = ["tiles"]

    @get("", summary="Live service tiles, most used first; by region and category")
    async def catalogue(
        self,
        tiles: TileService,
        db: Connection,
        region: RegionParam = None,
        category: CategoryParam = None,
        limit: Limit = 200,
    ) -> Catalogue:
        return Catalogue(tiles=await tiles.catalogue(db, region=region, category=category, limit=limit))

    @get(
        "/search",
        summary="Search live tiles as residents type: Chinese, pinyin, initials (gjj finds 公积金)",
        description=(
            "Ranked by relevance (exact name, name prefix, part of the name, pinyin or initials of the name, "
            "keyword, description), then by use. A blank query finds nothing."
        ),
    )
    async def search(
        self,
        tiles: TileService,
        db: Connection,
        q: Annotated[str, Parameter(min_length=1, max_length=32, description="what the resident typed")],
        region: RegionParam = None,
        category: CategoryParam = None,
        limit: Annotated[int, Parameter(ge=1, le=50)] = 20,
    ) -> SearchResult:
        return await tiles.search(db, q, region=region, category=category, limit=limit)

    @get("/taxonomy", summary="The region and category codes tiles use")
    async def taxonomy(self) -> Taxonomy:
        return Taxonomy(
            regions=[Region(code=c, name=n) for c, n in REGIONS.items()],
            categories=[Category(code=c, name=n) for c, n in CATEGORIES.items()],
        )

    @get("/{tile_id:uuid}", summary="One live tile", opt=problems(404))
    async def one(self, tile_id: uuid.UUID, tiles: TileService, db: Connection) -> CatalogueTile:
        return await tiles.live_tile(db, tile_id)


class TileUseController(Controller):
    """A resident opening a tile, and the tiles a client showed (bearer token)."""

    path = "/api/v1/tiles"
    tags = ["tiles"]

    @post(
        "/{tile_id:uuid}/open",
        status_code=HTTP_200_OK,
        summary="Open a tile: recorded as the resident's open; answers its entry points and one-login start",
        description=(
            "404 unless the tile is live; 409 `tile-unavailable` while it is suspended or failing its health "
            "checks (with `unavailable_reason`); 403 `step-up-required` when the resident's level is below the "
            "tile's, naming the step-up (`step_up`). Nothing is recorded when refused."
        ),
        opt=problems(403, 404, 409),
    )
    async def open(
        self, request: AnyRequest, tile_id: uuid.UUID, tiles: TileService, resident: ResidentPrincipal
    ) -> TileOpened:
        # One statement reads the tile and the resident's level and records the open, atomic by itself: no
        # BEGIN and COMMIT around it (two of its three round trips; docs/decisions/0003-own-transactions.md).
        state = request.app.state
        async with pooled_connection(state.pool, settings_of(state).db_acquire_timeout) as db:
            return await tiles.usage.open(db, tile_id, resident.resident_id, resident.level)

    @post(
        "/impressions",
        status_code=HTTP_204_NO_CONTENT,
        summary="The tiles a list showed the resident (one impression each); who saw them is not kept",
    )
    async def impressions(
        self, data: ImpressionsBody, tiles: TileService, resident: ResidentPrincipal
    ) -> None:
        await tiles.count_impressions(data.tile_ids)


class DepartmentTilesController(Controller):
    """A department's own tiles and their versions (signed; tiles:manage). Another organisation's tile is a 404."""

    path = "/api/v1/tiles/manage"
    tags = ["tiles"]
    dependencies = MACHINE
    opt = problems(403, 404, 409)

    @get("", summary="My tiles, most recently changed first (signed; tiles:manage)")
    async def mine(
        self,
        request: AnyRequest,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
        tile_state: StateParam = None,
        limit: Limit = 100,
    ) -> TileList:
        caller = _department(request, machine)
        return TileList(tiles=await tiles.tiles(db, caller, state=tile_state, limit=limit))

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="A new tile, its first version a draft (signed; tiles:manage)",
        description="400 naming the field at fault; 422 naming `oidc_client_id` for a client not of yours.",
        opt=problems(403, 422),
    )
    async def create(
        self,
        request: AnyRequest,
        data: TileContent,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        caller = _department(request, machine)
        return await tiles.create(db, caller, machine.organisation_name, data)

    @get("/{tile_id:uuid}", summary="My tile with every version (signed; tiles:manage)")
    async def one(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        return await tiles.tile(db, _department(request, machine), tile_id)

    @get(
        "/report",
        summary="My monthly report: every published tile's figures for the month, per day (signed; tiles:manage)",
        opt=problems(400),
    )
    async def report(
        self,
        request: AnyRequest,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
        month: MonthParam = None,
    ) -> MonthlyReport:
        _department(request, machine)
        return await tiles.usage.monthly_report(
            db, machine.organisation_id, machine.organisation_name, _month(month)
        )

    @get(
        "/{tile_id:uuid}/usage",
        summary="My tile's figures per day: impressions, opens, unique residents, completions (signed; tiles:manage)",
    )
    async def usage(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
        start: StartParam = None,
        end: EndParam = None,
    ) -> TileUsage:
        first, last = _days(start, end)
        return await tiles.usage.tile_usage(db, _department(request, machine), tile_id, first, last)

    @get(
        "/{tile_id:uuid}/health",
        summary="What the health checks found of my tile, latest probes first (signed; tiles:manage)",
    )
    async def health(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
        limit: ProbesParam = 50,
    ) -> TileHealth:
        return await tiles.health.view(db, _department(request, machine), tile_id, limit)

    @post(
        "/{tile_id:uuid}/completions",
        status_code=HTTP_200_OK,
        summary="Report completions of my tile's service, each once by my reference (signed; tiles:manage)",
        description="A reference already reported for the tile is not counted again (`already_recorded`).",
    )
    async def completions(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: CompletionsBody,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> CompletionsRecorded:
        return await tiles.usage.add_completions(db, _department(request, machine), tile_id, data.completions)

    @post(
        "/{tile_id:uuid}/versions",
        status_code=HTTP_201_CREATED,
        summary="A new version (a draft) of my tile: every change is a new version (signed; tiles:manage)",
        description="409 while another version is a draft or submitted, or the tile is retired.",
        opt=problems(422),
    )
    async def add_version(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: TileContent,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        return await tiles.add_version(db, _department(request, machine), tile_id, data)

    @put(
        "/{tile_id:uuid}/versions/{version:int}",
        summary="Replace a draft version's content (signed; tiles:manage)",
        description="409 naming the version's status once it is no longer a draft.",
        opt=problems(422),
    )
    async def replace_draft(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        version: VersionParam,
        data: TileContent,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        return await tiles.replace_draft(db, _department(request, machine), tile_id, version, data)

    @post(
        "/{tile_id:uuid}/versions/{version:int}/submit",
        status_code=HTTP_200_OK,
        summary="Submit a draft for review: draft -> submitted (signed; tiles:manage)",
        opt=problems(422),
    )
    async def submit(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        version: VersionParam,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        return await tiles.submit(db, _department(request, machine), tile_id, version)

    @post(
        "/{tile_id:uuid}/versions/{version:int}/withdraw",
        status_code=HTTP_200_OK,
        summary="Take a submitted version back before review: submitted -> draft (signed; tiles:manage)",
    )
    async def withdraw(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        version: VersionParam,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        return await tiles.withdraw(db, _department(request, machine), tile_id, version)

    @post(
        "/{tile_id:uuid}/versions/{version:int}/publish",
        status_code=HTTP_200_OK,
        summary="Put an approved version live: approved -> live (signed; tiles:manage)",
    )
    async def publish(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        version: VersionParam,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        tile = await tiles.publish(db, _department(request, machine), tile_id, version)
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/suspend",
        status_code=HTTP_200_OK,
        summary="Suspend my live tile: residents see it as temporarily unavailable (signed; tiles:manage)",
    )
    async def suspend(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: SuspendBody,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        tile = await tiles.suspend(
            db, _department(request, machine), tile_id, data.reason, data.resident_notice
        )
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/resume",
        status_code=HTTP_200_OK,
        summary="Resume my suspended tile (not one operations suspended) (signed; tiles:manage)",
    )
    async def resume(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        tile = await tiles.resume(db, _department(request, machine), tile_id)
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/rollback",
        status_code=HTTP_200_OK,
        summary="Make another approved version the live one (signed; tiles:manage)",
    )
    async def rollback(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: RollbackBody,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        tile = await tiles.rollback(db, _department(request, machine), tile_id, data.version, data.reason)
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/retire",
        status_code=HTTP_200_OK,
        summary="Retire my tile for good (signed; tiles:manage)",
    )
    async def retire(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: ReasonBody,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Tile:
        tile = await tiles.retire(db, _department(request, machine), tile_id, data.reason)
        _announce(request, tiles, tile_id)
        return tile


class TileNoticesController(Controller):
    """What happened to the organisation's tiles: reviews, publications, suspensions, retirements."""

    path = "/api/v1/tiles/notices"
    tags = ["tiles"]
    dependencies = MACHINE
    opt = problems(403)

    @get(
        "",
        summary="Notices of my tiles, newest first (signed; tiles:manage)",
        description="`unread` counts every unread notice; those of my own actions come already read.",
    )
    async def notices(
        self,
        request: AnyRequest,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
        before: dt.datetime | None = None,
        unread_only: bool = False,
        limit: Limit = 50,
    ) -> Notices:
        caller = _department(request, machine)
        assert caller.organisation_id is not None  # a department caller names its organisation
        return await tiles.notices(
            db, caller.organisation_id, before=before, unread_only=unread_only, limit=limit
        )

    @post(
        "/{notice_id:uuid}/read",
        status_code=HTTP_204_NO_CONTENT,
        summary="Mark a notice read (signed; tiles:manage)",
        opt=problems(404),
    )
    async def mark_read(
        self,
        request: AnyRequest,
        notice_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> None:
        _department(request, machine)
        await tiles.mark_notice_read(db, machine.organisation_id, notice_id)

    @post("/read", status_code=HTTP_204_NO_CONTENT, summary="Mark every notice read (signed; tiles:manage)")
    async def mark_all_read(
        self, request: AnyRequest, tiles: TileService, db: Connection, machine: MachinePrincipal
    ) -> None:
        _department(request, machine)
        await tiles.mark_notices_read(db, machine.organisation_id)


# Guards are per handler: a controller's guards run besides a handler's, so a controller-wide ops_reviewer guard
# would refuse the administrators and auditors the reads allow.
_READERS = staff_only(OPS_REVIEWER, OPS_ADMIN, AUDITOR)
_REVIEWERS = staff_only(OPS_REVIEWER)


class TileAdminController(Controller):
    """Review by operations staff (ops_reviewer). Transitions are audited by the service (`tile.<transition>`),
    in the request's transaction, with the states they moved between; reads of departments' tiles by the staff
    dependency. A reviewer never sees drafts."""

    path = "/api/v1/admin/tiles"
    tags = ["admin"]
    dependencies = STAFF
    opt = problems(404, 409)

    @get(
        "",
        summary="Every tile, most recently changed first",
        guards=[_READERS],
        opt=audited("admin.tile_list", detail=("state", "organisation_id")),
    )
    async def list_tiles(
        self,
        tiles: TileService,
        db: Connection,
        staff: Staff,
        tile_state: StateParam = None,
        organisation_id: uuid.UUID | None = None,
        limit: Limit = 100,
    ) -> TileList:
        caller = Caller.operations(staff.actor)
        return TileList(
            tiles=await tiles.tiles(
                db, caller, state=tile_state, organisation_id=organisation_id, limit=limit
            )
        )

    @get(
        "/reviews",
        summary="Submitted versions waiting for review, oldest first, each beside the live version",
        guards=[_READERS],
        opt=audited("admin.tile_reviews"),
    )
    async def reviews(self, tiles: TileService, db: Connection, staff: Staff, limit: Limit = 100) -> Reviews:
        return Reviews(reviews=await tiles.reviews(db, limit))

    @get(
        "/{tile_id:uuid}",
        summary="A tile with its versions (drafts left out)",
        guards=[_READERS],
        opt=audited("admin.tile_view", target_type="tile", target="tile_id"),
    )
    async def one(self, tile_id: uuid.UUID, tiles: TileService, db: Connection, staff: Staff) -> Tile:
        return await tiles.tile(db, Caller.operations(staff.actor), tile_id)

    @get(
        "/report",
        summary="A department's monthly report: every published tile's figures for the month, per day",
        guards=[_READERS],
        opt=audited(
            "admin.tile_report", target_type="organisation", target="organisation_id", detail=("month",)
        ),
    )
    async def report(
        self,
        tiles: TileService,
        db: Connection,
        staff: Staff,
        organisation_id: uuid.UUID,
        month: MonthParam = None,
    ) -> MonthlyReport:
        return await tiles.usage.monthly_report(db, organisation_id, "", _month(month))

    @get(
        "/retirement-candidates",
        summary="Tiles used too little or failing too often over the period, with their figures",
        description=(
            "Live and suspended tiles published before the period (the last TZT_TILE_RETIRE_PERIOD_DAYS days) "
            "opened fewer than TZT_TILE_RETIRE_MIN_OPENS times over it (`low_use`) or degraded by the health "
            "checks at least TZT_TILE_RETIRE_MAX_OUTAGES times (`health_failures`); least used first."
        ),
        guards=[_READERS],
        opt=audited("admin.tile_retirement_candidates"),
    )
    async def retirement_candidates(
        self, tiles: TileService, db: Connection, staff: Staff
    ) -> RetirementCandidates:
        return await tiles.usage.retirement_candidates(db)

    @post(
        "/retirement-candidates/{tile_id:uuid}/retire",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Retire a candidate in one step; the department is told why, with its figures",
        description="409 `not-a-retirement-candidate` when the report does not (or no longer) list it.",
    )
    async def retire_candidate(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: ReasonBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        await tiles.usage.retire_candidate(db, Caller.operations(staff.actor), tile_id, data.reason)
        _announce(request, tiles, tile_id)
        return await tiles.tile(db, Caller.operations(staff.actor), tile_id)

    @get(
        "/{tile_id:uuid}/usage",
        summary="A tile's figures per day",
        guards=[_READERS],
        opt=audited("admin.tile_usage", target_type="tile", target="tile_id"),
    )
    async def usage(
        self,
        tile_id: uuid.UUID,
        tiles: TileService,
        db: Connection,
        staff: Staff,
        start: StartParam = None,
        end: EndParam = None,
    ) -> TileUsage:
        first, last = _days(start, end)
        return await tiles.usage.tile_usage(db, Caller.operations(staff.actor), tile_id, first, last)

    @get(
        "/{tile_id:uuid}/health",
        summary="What the health checks found of a tile, latest probes first",
        guards=[_READERS],
        opt=audited("admin.tile_health", target_type="tile", target="tile_id"),
    )
    async def health(
        self, tile_id: uuid.UUID, tiles: TileService, db: Connection, staff: Staff, limit: ProbesParam = 50
    ) -> TileHealth:
        return await tiles.health.view(db, Caller.operations(staff.actor), tile_id, limit)

    @post(
        "/{tile_id:uuid}/versions/{version:int}/approve",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Approve a submitted version: submitted -> approved (the department then publishes it)",
    )
    async def approve(
        self,
        tile_id: uuid.UUID,
        version: VersionParam,
        data: ApproveBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        return await tiles.approve(db, Caller.operations(staff.actor), tile_id, version, data.note)

    @post(
        "/{tile_id:uuid}/versions/{version:int}/reject",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Reject a submitted version with a reason: submitted -> rejected",
    )
    async def reject(
        self,
        tile_id: uuid.UUID,
        version: VersionParam,
        data: ReasonBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        return await tiles.reject(db, Caller.operations(staff.actor), tile_id, version, data.reason)

    @post(
        "/{tile_id:uuid}/suspend",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Suspend a live tile (only operations may then resume it)",
    )
    async def suspend(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: SuspendBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        tile = await tiles.suspend(
            db, Caller.operations(staff.actor), tile_id, data.reason, data.resident_notice
        )
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/resume",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Resume a suspended tile",
    )
    async def resume(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: ReasonBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        tile = await tiles.resume(db, Caller.operations(staff.actor), tile_id, data.reason)
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/rollback",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Make another approved version of a tile the live one",
    )
    async def rollback(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: RollbackBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        tile = await tiles.rollback(db, Caller.operations(staff.actor), tile_id, data.version, data.reason)
        _announce(request, tiles, tile_id)
        return tile

    @post(
        "/{tile_id:uuid}/retire",
        guards=[_REVIEWERS],
        status_code=HTTP_200_OK,
        summary="Retire a tile; its department is told why",
    )
    async def retire(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        data: ReasonBody,
        tiles: TileService,
        db: Connection,
        staff: Staff,
    ) -> Tile:
        tile = await tiles.retire(db, Caller.operations(staff.actor), tile_id, data.reason)
        _announce(request, tiles, tile_id)
        return tile
