"""What the home answers (docs/api.md, "Home")."""

from __future__ import annotations

import uuid

import msgspec

from app_backend.tiles.schemas import CatalogueTile

# At most this many pinned tiles, and this many recently used ones shown.
MOST_PINS = 12
RECENT = 8


class ResidentPart(msgspec.Struct):
    """A resident's part of the home as cached in Redis (no personal data: ids, a region code, counts)."""

    region: str
    level: int
    pins: list[uuid.UUID]
    recent: list[uuid.UUID]
    unread: int


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
