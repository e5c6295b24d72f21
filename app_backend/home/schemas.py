"""What the home answers (docs/api.md, "Home")."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from app_backend.tiles.schemas import CatalogueTile
from code_service.codes.schemas import Entitlements

# At most this many pinned tiles, and this many recently used ones shown.
MOST_PINS = 12
RECENT = 8
# A device credential (24 hours) is refreshed once less than this is left of it, or when there is none.
REFRESH_BEFORE = dt.timedelta(hours=2)


class ResidentPart(msgspec.Struct):
    """A resident's part of the home as cached in Redis (no personal data: ids, a region code, counts)."""

    region: str
    level: int
    pins: list[uuid.UUID]
    recent: list[uuid.UUID]
    unread: int
    credential_ends: dt.datetime | None = None


class CodeSummary(msgspec.Struct):
    """What the home says of the resident's code: what it carries (as the code page last loaded it; null until the
    code was shown once, or after a change of status) and whether the phone should fetch a fresh device
    credential (none live, or less than two hours left of it)."""

    entitlements: Entitlements | None
    device_credential_ends_at: dt.datetime | None
    device_credential_needs_refresh: bool


class NoticeBody(msgspec.Struct, forbid_unknown_fields=True):
    """A notice or banner operations put on the home: an event or an outage, for regions, in a time window."""

    kind: Literal["event", "outage"]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    regions: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=12)]],
        msgspec.Meta(
            min_length=1, max_length=7, description="region codes of Taizhou; the city's: every district"
        ),
    ]
    starts_at: dt.datetime
    ends_at: dt.datetime
    link: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None


class Notice(msgspec.Struct):
    id: uuid.UUID
    kind: str
    title: str
    body: str
    link: str | None
    regions: list[str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_by: str
    created_at: dt.datetime
    withdrawn_at: dt.datetime | None


class Notices(msgspec.Struct):
    notices: list[Notice]


class Home(msgspec.Struct):
    """The resident's home: the same answer for the app, H5 and the mini-programs."""

    region: str
    level: str
    # Every live tile serving the region, most used first; above the resident's level with its `step_up`;
    # suspended or failing ones as `temporarily_unavailable`.
    tiles: list[CatalogueTile]
    # The resident's pins in the order they pinned them, and the tiles they opened last (most recent first);
    # a pinned or used tile no longer shown to the region (retired, moved) is left out.
    pinned: list[CatalogueTile]
    recent: list[CatalogueTile]
    unread_messages: int
    code: CodeSummary
    # Operations' notices and banners for the resident's region in their time window, outages first.
    notices: list[Notice]
