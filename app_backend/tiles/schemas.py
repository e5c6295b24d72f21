"""Service tiles on the wire: what a department submits, what it and reviewers see of a tile and its versions, and
what residents see in the catalogue. The categories a tile may name are decided here, once; its regions are the
kernel's (app_backend/kernel/regions.py: the city's code serves every district)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from app_backend.kernel.regions import REGIONS

# The catalogue's categories: code -> the name residents see.
CATEGORIES: dict[str, str] = {
    "social_security": "社保",
    "housing_fund": "公积金",
    "medical": "医疗健康",
    "transport": "交通出行",
    "property": "不动产",
    "household": "户籍证照",
    "education": "教育",
    "employment": "就业创业",
    "tax": "税务",
    "utilities": "生活缴费",
    "enterprise": "企业服务",
    "culture_tourism": "文化旅游",
    "elderly_care": "养老助残",
    "other": "其他",
}

Level = Literal["L1", "L2", "L3"]
# Tile states: unpublished (no version has gone live yet), live, suspended (residents see it as temporarily
# unavailable), retired (gone from the catalogue for good).
TileState = Literal["unpublished", "live", "suspended", "retired"]
# Version statuses: draft (the department may still replace it), submitted (frozen, waiting for review), approved,
# rejected (with the reviewer's reason), live (the version residents see), superseded (was live, replaced by a
# later version or rolled back from; may be rolled back to), withdrawn (taken back by the department, or left open
# when the tile retired), retired (was live when the tile retired).
VersionStatus = Literal[
    "draft", "submitted", "approved", "rejected", "live", "superseded", "withdrawn", "retired"
]

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Reason = Annotated[
    str, msgspec.Meta(min_length=2, max_length=500, description="why; the department reads it in its notices")
]
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=1024, description="https (http only in dev)")]
VersionNumber = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class MiniProgramEntry(msgspec.Struct, forbid_unknown_fields=True):
    """A WeChat or Alipay mini-program the tile opens (navigateToMiniProgram): its app id and the page."""

    app_id: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = "pages/index/index"


class EntryPoints(msgspec.Struct, forbid_unknown_fields=True):
    """Where a tap goes, per client: an H5 page (the app and both mini-programs can open it in a web view), a
    WeChat or Alipay mini-program, a route inside the Taizhou Tong app. At least one."""

    h5_url: Url | None = None
    wechat: MiniProgramEntry | None = None
    alipay: MiniProgramEntry | None = None
    app_route: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


class ServiceWindow(msgspec.Struct, forbid_unknown_fields=True):
    """Open on these weekdays (1 Monday … 7 Sunday) from `opens` to `closes`, Beijing time."""

    days: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=7)]], msgspec.Meta(min_length=1, max_length=7)]
    opens: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM")]
    closes: Annotated[
        str, msgspec.Meta(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", description="HH:MM")
    ]


class ServiceHours(msgspec.Struct, forbid_unknown_fields=True):
    """When the service is staffed; absent on a tile: around the clock."""

    windows: Annotated[list[ServiceWindow], msgspec.Meta(min_length=1, max_length=14)]
    note: Annotated[str, msgspec.Meta(max_length=100)] = ""


class TileContent(msgspec.Struct, forbid_unknown_fields=True):
    """Everything a version of a tile says. Checked when written and again when submitted; frozen once submitted."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    icon: Url
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="one of CATEGORIES")]
    description: Text
    entry: EntryPoints
    regions: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=12)]],
        msgspec.Meta(min_length=1, max_length=len(REGIONS), description="region codes of Taizhou (REGIONS)"),
    ]
    keywords: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=20)]], msgspec.Meta(max_length=20)
    ] = []
    min_level: Level = "L1"
    # The one-login client (docs/api.md, "One login") a tap logs the resident into: one of the same organisation.
    oidc_client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    service_hours: ServiceHours | None = None
    health_check_url: Url | None = None
    # Suspend the tile by itself after a long outage of its health URL (the health job); otherwise only degraded.
    auto_suspend: bool = False


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class SuspendBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason
    # What residents read while the tile is unavailable; absent: a plain "temporarily unavailable".
    resident_notice: Annotated[str, msgspec.Meta(min_length=1, max_length=60)] | None = None


class ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class RollbackBody(msgspec.Struct, forbid_unknown_fields=True):
    version: VersionNumber
    reason: Reason


class Version(msgspec.Struct):
    number: int
    status: str
    content: TileContent
    review_note: str | None
    reviewed_at: dt.datetime | None
    submitted_at: dt.datetime | None
    published_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class Tile(msgspec.Struct):
    """A tile as its department (every version) or a reviewer (every version but drafts) sees it."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    state: str
    live_version: int | None
    # Why the tile is suspended or retired, and who suspended it (department, operations, health).
    state_reason: str | None
    suspended_by: str | None
    resident_notice: str | None
    health: str
    created_at: dt.datetime
    updated_at: dt.datetime
    versions: list[Version]


class TileSummary(msgspec.Struct):
    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    state: str
    live_version: int | None
    latest_version: int
    latest_status: str
    updated_at: dt.datetime


class TileList(msgspec.Struct):
    tiles: list[TileSummary]


class Review(msgspec.Struct):
    """A submitted version waiting for a reviewer, with the version live now (to compare) when there is one."""

    tile_id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    version: Version
    live: Version | None


class Reviews(msgspec.Struct):
    reviews: list[Review]


class StepUp(msgspec.Struct):
    """What a resident below a tile's level does first: real-name (L2) or face verification (L3)."""

    level: str
    action: Literal["real_name", "face_verification"]
    path: str


LEVELS = {"L1": 1, "L2": 2, "L3": 3}
# What a resident below a tile's level does first, by the tile's level.
STEP_UPS: dict[int, tuple[Literal["real_name", "face_verification"], str]] = {
    2: ("real_name", "/api/v1/me/real-name"),
    3: ("face_verification", "/api/v1/me/face-verification/sessions"),
}
# What residents read of a tile that is temporarily unavailable (a suspension without the department's own notice,
# or a service failing its health checks).
SUSPENDED_NOTICE = "服务暂停，请稍后再试"
DEGRADED_NOTICE = "服务暂时无法访问，请稍后再试"


def step_up(min_level: int, level: int) -> StepUp | None:
    """What a resident at `level` does first to open a tile of `min_level` (None: nothing)."""
    if level >= min_level:
        return None
    action, path = STEP_UPS[min_level]
    return StepUp(level=f"L{min_level}", action=action, path=path)


class CatalogueTile(msgspec.Struct):
    """A live tile as residents see it. `status` is `temporarily_unavailable` while it is suspended or its service
    is failing its health checks, with `unavailable_reason` to show instead of a broken page."""

    id: uuid.UUID
    version: int
    name: str
    icon: str
    category: str
    category_name: str
    description: str
    keywords: list[str]
    organisation_id: uuid.UUID
    organisation_name: str
    entry: EntryPoints
    regions: list[str]
    min_level: str
    oidc_client_id: str | None
    service_hours: ServiceHours | None
    open_now: bool
    status: Literal["available", "temporarily_unavailable"]
    unavailable_reason: str | None
    # For a resident below `min_level` (the home's reads; the anonymous catalogue leaves it out).
    step_up: StepUp | None = None


class Catalogue(msgspec.Struct):
    tiles: list[CatalogueTile]


class SearchHit(msgspec.Struct):
    tile: CatalogueTile
    # What the query matched, best first: name, name_prefix, name_part, pinyin, pinyin_part, keyword, description.
    matched: str


class SearchResult(msgspec.Struct):
    query: str
    hits: list[SearchHit]


class Region(msgspec.Struct):
    code: str
    name: str


class Category(msgspec.Struct):
    code: str
    name: str


class Taxonomy(msgspec.Struct):
    regions: list[Region]
    categories: list[Category]


class Notice(msgspec.Struct):
    """What happened to one of the organisation's tiles: every transition, by whom, and why. Those the
    organisation made itself come already read."""

    id: uuid.UUID
    tile_id: uuid.UUID
    tile_name: str
    version: int | None
    event: str
    state: str
    by: str
    reason: str | None
    created_at: dt.datetime
    read_at: dt.datetime | None


class Notices(msgspec.Struct):
    notices: list[Notice]
    unread: int
    next_before: dt.datetime | None = None


# -- opening tiles and their usage ---------------------------------------------------------------------------------

TileIds = Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=100)]
Reference = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$",
        description="the department's own reference of the completed case (letters, digits, _ . : / -)",
    ),
]


class ImpressionsBody(msgspec.Struct, forbid_unknown_fields=True):
    """The tiles a client showed the resident in a list (once each per showing); who saw them is not kept."""

    tile_ids: TileIds


class OneLogin(msgspec.Struct):
    """How the department's service opens signed in: the app's web-view opens `login_url` carrying the
    resident's bearer token. It is the tile's H5 entry as the department's login-initiation endpoint (OpenID
    Connect Core 1.0, section 4: `iss` our issuer, `target_link_uri` the entry): the department starts the
    authorization request there (its own state, nonce and PKCE verifier, `acr_values` at least the tile's level),
    and our authorization endpoint recognises the resident by the web-view's token without a log-in page."""

    client_id: str
    issuer: str
    authorization_endpoint: str
    acr_values: str
    login_url: str | None


class TileOpened(msgspec.Struct):
    """What a client needs to open the tile it was asked to: the live version's entry points, and, for a tile
    with a one-login client, how its service opens signed in."""

    tile_id: uuid.UUID
    version: int
    name: str
    entry: EntryPoints
    one_login: OneLogin | None


class Completion(msgspec.Struct, forbid_unknown_fields=True):
    reference: Reference
    # When the resident's case was completed; absent: now. At most 31 days ago, not in the future.
    completed_at: dt.datetime | None = None


class CompletionsBody(msgspec.Struct, forbid_unknown_fields=True):
    completions: Annotated[list[Completion], msgspec.Meta(min_length=1, max_length=500)]


class CompletionsRecorded(msgspec.Struct):
    """How many of the completions sent were new; those whose reference the tile had already are not counted
    again."""

    recorded: int
    already_recorded: int


class DailyFigures(msgspec.Struct):
    """One tile's day (Beijing time): times shown in lists, times opened, unique residents who opened it,
    completions reported by the department, health probes and how many failed, times it was degraded."""

    day: dt.date
    impressions: int
    opens: int
    residents: int
    completions: int
    probes: int
    probe_failures: int
    outages: int


class PeriodFigures(msgspec.Struct):
    """A tile's totals over a period. `residents` is unique residents over the whole period (null where some of
    its days' opens are past their retention and only their daily counts are left); `availability` the share of
    health probes that passed (null without probes)."""

    impressions: int
    opens: int
    residents: int | None
    completions: int
    probes: int
    probe_failures: int
    outages: int
    availability: float | None


class TileUsage(msgspec.Struct):
    tile_id: uuid.UUID
    start: dt.date
    end: dt.date
    totals: PeriodFigures
    days: list[DailyFigures]


class ReportTile(msgspec.Struct):
    tile_id: uuid.UUID
    name: str
    state: str
    totals: PeriodFigures
    days: list[DailyFigures]


class MonthlyReport(msgspec.Struct):
    """A department's month: each of its published tiles with its totals and its days."""

    organisation_id: uuid.UUID
    organisation_name: str
    month: str
    start: dt.date
    end: dt.date
    tiles: list[ReportTile]


class Probe(msgspec.Struct):
    probed_at: dt.datetime
    target: str
    ok: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None


class TileHealth(msgspec.Struct):
    """What the health checks know of a tile: its verdict, the run of failures it is in, and its latest probes."""

    tile_id: uuid.UUID
    state: str
    suspended_by: str | None
    health: str
    health_reason: str | None
    consecutive_failures: int
    failing_since: dt.datetime | None
    last_probed_at: dt.datetime | None
    last_ok_at: dt.datetime | None
    next_probe_at: dt.datetime | None
    probes: list[Probe]


class RetirementCandidate(msgspec.Struct):
    """A live tile that was used too little or failed too often over the period, with its figures and why it is
    listed: `low_use` (opens under the threshold), `health_failures` (degraded too many times), `bad_ratings`
    (from the ratings, once they exist)."""

    tile_id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    state: str
    first_published_at: dt.datetime
    figures: PeriodFigures
    reasons: list[str]
    ratings: str | None = None


class RetirementCandidates(msgspec.Struct):
    start: dt.date
    end: dt.date
    period_days: int
    min_opens: int
    max_outages: int
    candidates: list[RetirementCandidate]
