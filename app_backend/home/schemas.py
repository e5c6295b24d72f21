"""What the home answers (docs/api.md, "Home")."""

from __future__ import annotations

import datetime as dt
import uuid

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
