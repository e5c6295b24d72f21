"""All SQL of tiles, their versions and the organisations' notices."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_TILE = """id, organisation_id, organisation_name, state, live_version, state_reason, suspended_by, resident_notice,
    health, health_reason, created_at, updated_at"""
_VERSION = """tile_id, number, status, content, review_note, reviewed_by, reviewed_at, submitted_at, published_at,
    created_at, updated_at"""
_NOTICE = "id, tile_id, tile_name, version, event, state, by_whom, reason, created_at, read_at"
# What a catalogue row reads: the tile and its live version, in one statement.
_SHOWN = """t.id, t.organisation_id, t.organisation_name, t.state, t.health, t.health_reason, t.resident_notice,
    t.usage_score, v.number, v.content, v.min_level"""
_HIT = """id, organisation_id, organisation_name, state, health, health_reason, resident_notice, usage_score,
    number, content, min_level, relevance"""
_SHOWN_FROM = """tiles.tiles t JOIN tiles.versions v ON v.tile_id = t.id AND v.number = t.live_version
    WHERE t.state IN ('live', 'suspended')"""


class TileRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    state: str
    live_version: int | None
    state_reason: str | None
    suspended_by: str | None
    resident_notice: str | None
    health: str
    health_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class VersionRow(msgspec.Struct, frozen=True):
    tile_id: uuid.UUID
    number: int
    status: str
    content: dict[str, object]
    review_note: str | None
    reviewed_by: str | None
    reviewed_at: dt.datetime | None
    submitted_at: dt.datetime | None
    published_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SummaryRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    state: str
    live_version: int | None
    latest_version: int
    latest_status: str
    updated_at: dt.datetime


class ShownRow(msgspec.Struct, frozen=True):
    """A tile residents see (live or suspended) with its live version."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    state: str
    health: str
    health_reason: str | None
    resident_notice: str | None
    usage_score: float
    number: int
    content: dict[str, object]
    min_level: int


class HitRow(ShownRow, frozen=True):
    relevance: int


class NoticeRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    tile_id: uuid.UUID
    tile_name: str
    version: int | None
    event: str
    state: str
    by_whom: str
    reason: str | None
    created_at: dt.datetime
    read_at: dt.datetime | None


class SearchForms(msgspec.Struct, frozen=True):
    """The live version's text as search compares it (app_backend/tiles/search.py)."""

    name: str
    description: str
    name_pinyin: list[str]
    name_initials: list[str]
    keywords: list[str]
    keywords_pinyin: list[str]


class TileRepository:
    async def create(self, conn: Connection, organisation_id: uuid.UUID, organisation_name: str) -> TileRow:
        row = await fetch_row(
            conn,
            TileRow,
            f"""INSERT INTO tiles.tiles (organisation_id, organisation_name) VALUES ($1, $2) RETURNING {_TILE}""",
            organisation_id,
            organisation_name,
        )
        assert row is not None  # an INSERT … RETURNING returns its row
        return row

    async def get(self, conn: Connection, tile_id: uuid.UUID) -> TileRow | None:
        return await fetch_row(conn, TileRow, f"SELECT {_TILE} FROM tiles.tiles WHERE id = $1", tile_id)

    async def lock(self, conn: Connection, tile_id: uuid.UUID) -> TileRow | None:
        """The tile, locked for this transaction: transitions of one tile run one after the other."""
        return await fetch_row(
            conn, TileRow, f"SELECT {_TILE} FROM tiles.tiles WHERE id = $1 FOR UPDATE", tile_id
        )

    async def set_state(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        *,
        state: str,
        live_version: int | None,
        state_reason: str | None,
        suspended_by: str | None,
        resident_notice: str | None,
    ) -> None:
        await conn.execute(
            """UPDATE tiles.tiles SET state = $2, live_version = $3, state_reason = $4, suspended_by = $5,
                   resident_notice = $6, updated_at = now()
               WHERE id = $1""",
            tile_id,
            state,
            live_version,
            state_reason,
            suspended_by,
            resident_notice,
        )

    async def touch(self, conn: Connection, tile_id: uuid.UUID) -> None:
        await conn.execute("UPDATE tiles.tiles SET updated_at = now() WHERE id = $1", tile_id)

    async def set_search_forms(self, conn: Connection, tile_id: uuid.UUID, forms: SearchForms) -> None:
        await conn.execute(
            """UPDATE tiles.tiles SET search_name = $2, search_description = $3, name_pinyin = $4,
                   name_initials = $5, search_keywords = $6, keywords_pinyin = $7
               WHERE id = $1""",
            tile_id,
            forms.name,
            forms.description,
            forms.name_pinyin,
            forms.name_initials,
            forms.keywords,
            forms.keywords_pinyin,
        )

    async def set_health(self, conn: Connection, tile_id: uuid.UUID, health: str, reason: str | None) -> bool:
        changed = await conn.fetchval(
            """UPDATE tiles.tiles SET health = $2, health_reason = $3, updated_at = now()
               WHERE id = $1 AND (health, health_reason) IS DISTINCT FROM ($2, $3) RETURNING id""",
            tile_id,
            health,
            reason,
        )
        return changed is not None

    async def set_usage_scores(self, conn: Connection, scores: Mapping[uuid.UUID, float]) -> int:
        result: str = await conn.execute(
            """UPDATE tiles.tiles t SET usage_score = s.score
               FROM unnest($1::uuid[], $2::float8[]) AS s(id, score) WHERE t.id = s.id""",
            list(scores),
            list(scores.values()),
        )
        return int(result.split()[-1])

    async def summaries(
        self,
        conn: Connection,
        *,
        organisation_id: uuid.UUID | None,
        state: str | None,
        include_drafts: bool,
        limit: int,
    ) -> list[SummaryRow]:
        """Tiles, most recently changed first, each with its latest version (drafts left out unless asked)."""
        return await fetch_rows(
            conn,
            SummaryRow,
            """SELECT t.id, t.organisation_id, t.organisation_name, v.name, t.state, t.live_version,
                      v.number AS latest_version, v.status AS latest_status, t.updated_at
               FROM tiles.tiles t
               JOIN LATERAL (SELECT number, name, status FROM tiles.versions
                             WHERE tile_id = t.id AND ($3 OR status <> 'draft')
                             ORDER BY number DESC LIMIT 1) v ON true
               WHERE ($1::uuid IS NULL OR t.organisation_id = $1) AND ($2::text IS NULL OR t.state = $2)
               ORDER BY t.updated_at DESC, t.id LIMIT $4""",
            organisation_id,
            state,
            include_drafts,
            limit,
        )


class VersionRepository:
    async def versions(self, conn: Connection, tile_id: uuid.UUID) -> list[VersionRow]:
        return await fetch_rows(
            conn,
            VersionRow,
            f"SELECT {_VERSION} FROM tiles.versions WHERE tile_id = $1 ORDER BY number",
            tile_id,
        )

    async def get(self, conn: Connection, tile_id: uuid.UUID, number: int) -> VersionRow | None:
        return await fetch_row(
            conn,
            VersionRow,
            f"SELECT {_VERSION} FROM tiles.versions WHERE tile_id = $1 AND number = $2",
            tile_id,
            number,
        )

    async def open_version(self, conn: Connection, tile_id: uuid.UUID) -> VersionRow | None:
        return await fetch_row(
            conn,
            VersionRow,
            f"""SELECT {_VERSION} FROM tiles.versions WHERE tile_id = $1 AND status IN ('draft', 'submitted')""",
            tile_id,
        )

    async def add(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        content: Mapping[str, object],
        name: str,
        category: str,
        regions: Sequence[str],
        min_level: int,
    ) -> VersionRow:
        row = await fetch_row(
            conn,
            VersionRow,
            f"""INSERT INTO tiles.versions (tile_id, number, status, content, name, category, regions, min_level)
                SELECT $1, coalesce(max(number), 0) + 1, 'draft', $2, $3, $4, $5, $6
                FROM tiles.versions WHERE tile_id = $1
                RETURNING {_VERSION}""",
            tile_id,
            content,
            name,
            category,
            list(regions),
            min_level,
        )
        assert row is not None  # an INSERT … RETURNING returns its row
        return row

    async def replace_draft(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        number: int,
        content: Mapping[str, object],
        name: str,
        category: str,
        regions: Sequence[str],
        min_level: int,
    ) -> None:
        await conn.execute(
            """UPDATE tiles.versions SET content = $3, name = $4, category = $5, regions = $6, min_level = $7,
                   updated_at = now()
               WHERE tile_id = $1 AND number = $2 AND status = 'draft'""",
            tile_id,
            number,
            content,
            name,
            category,
            list(regions),
            min_level,
        )

    async def set_status(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        number: int,
        status: str,
        *,
        submitted: bool = False,
        published: bool = False,
        review: tuple[str | None, str] | None = None,
    ) -> None:
        """Moves a version to `status`; `submitted` / `published` stamp those moments, `review` records the
        reviewer's note (or reason) and who they are."""
        await conn.execute(
            """UPDATE tiles.versions SET status = $3, updated_at = now(),
                   submitted_at = CASE WHEN $4 THEN now() ELSE submitted_at END,
                   published_at = CASE WHEN $5 THEN now() ELSE published_at END,
                   review_note = CASE WHEN $6 THEN $7 ELSE review_note END,
                   reviewed_by = CASE WHEN $6 THEN $8 ELSE reviewed_by END,
                   reviewed_at = CASE WHEN $6 THEN now() ELSE reviewed_at END
               WHERE tile_id = $1 AND number = $2""",
            tile_id,
            number,
            status,
            submitted,
            published,
            review is not None,
            review[0] if review else None,
            review[1] if review else None,
        )

    async def close_all(self, conn: Connection, tile_id: uuid.UUID) -> None:
        """On retirement: open versions are withdrawn, the live one is retired."""
        await conn.execute(
            """UPDATE tiles.versions SET updated_at = now(),
                   status = CASE status WHEN 'live' THEN 'retired' ELSE 'withdrawn' END
               WHERE tile_id = $1 AND status IN ('draft', 'submitted', 'live')""",
            tile_id,
        )

    async def review_queue(self, conn: Connection, limit: int) -> list[VersionRow]:
        """Submitted versions, oldest first."""
        return await fetch_rows(
            conn,
            VersionRow,
            f"""SELECT {_VERSION} FROM tiles.versions WHERE status = 'submitted'
                ORDER BY submitted_at, tile_id LIMIT $1""",
            limit,
        )


class CatalogueRepository:
    """What residents see: live and suspended tiles with their live versions, each read in one statement."""

    async def shown(
        self,
        conn: Connection,
        *,
        regions: Sequence[str] | None,
        category: str | None,
        limit: int,
    ) -> list[ShownRow]:
        """Tiles serving any of `regions` (all when None), of `category` (any when None), most used first."""
        return await fetch_rows(
            conn,
            ShownRow,
            f"""SELECT {_SHOWN} FROM {_SHOWN_FROM}
                  AND ($1::text[] IS NULL OR v.regions && $1)
                  AND ($2::text IS NULL OR v.category = $2)
                ORDER BY t.usage_score DESC, v.name, t.id LIMIT $3""",
            None if regions is None else list(regions),
            category,
            limit,
        )

    async def live(self, conn: Connection, tile_id: uuid.UUID) -> ShownRow | None:
        return await fetch_row(conn, ShownRow, f"SELECT {_SHOWN} FROM {_SHOWN_FROM} AND t.id = $1", tile_id)

    async def search(
        self,
        conn: Connection,
        text: str,
        pinyin: str,
        *,
        regions: Sequence[str] | None,
        category: str | None,
        limit: int,
    ) -> list[HitRow]:
        """Tiles matching `text` (the query as typed, normalised) or `pinyin` (its latin form; empty when the
        query is all Chinese), by relevance (docs/decisions/0025-service-tiles.md), then use, then name."""
        return await fetch_rows(
            conn,
            HitRow,
            f"""SELECT {_HIT} FROM (
                  SELECT {_SHOWN}, v.name AS sort_name,
                    CASE
                      WHEN t.search_name = $1 THEN 7
                      WHEN starts_with(t.search_name, $1) THEN 6
                      WHEN strpos(t.search_name, $1) > 0 THEN 5
                      WHEN $2 <> '' AND (starts_with(t.name_initials[1], $2) OR starts_with(t.name_pinyin[1], $2))
                        THEN 4
                      WHEN $2 <> '' AND EXISTS (SELECT 1 FROM unnest(t.name_initials || t.name_pinyin) AS f(form)
                                                WHERE starts_with(f.form, $2)) THEN 3
                      WHEN EXISTS (SELECT 1 FROM unnest(t.search_keywords) AS k(word) WHERE strpos(k.word, $1) > 0)
                        OR ($2 <> '' AND EXISTS (SELECT 1 FROM unnest(t.keywords_pinyin) AS k(form)
                                                 WHERE starts_with(k.form, $2))) THEN 2
                      WHEN strpos(t.search_description, $1) > 0 THEN 1
                      ELSE 0
                    END AS relevance
                  FROM {_SHOWN_FROM}
                    AND ($3::text[] IS NULL OR v.regions && $3)
                    AND ($4::text IS NULL OR v.category = $4)
                ) hits
                WHERE relevance > 0
                ORDER BY relevance DESC, usage_score DESC, sort_name, id LIMIT $5""",
            text,
            pinyin,
            None if regions is None else list(regions),
            category,
            limit,
        )


class NoticeRepository:
    async def add(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        tile_name: str,
        version: int | None,
        event: str,
        state: str,
        by_whom: str,
        reason: str | None,
        read: bool,
    ) -> None:
        await conn.execute(
            """INSERT INTO tiles.notices (organisation_id, tile_id, tile_name, version, event, state, by_whom,
                   reason, read_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN clock_timestamp() END)""",
            organisation_id,
            tile_id,
            tile_name,
            version,
            event,
            state,
            by_whom,
            reason,
            read,
        )

    async def page(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        *,
        before: dt.datetime | None,
        unread_only: bool,
        limit: int,
    ) -> list[NoticeRow]:
        return await fetch_rows(
            conn,
            NoticeRow,
            f"""SELECT {_NOTICE} FROM tiles.notices
                WHERE organisation_id = $1 AND ($2::timestamptz IS NULL OR created_at < $2)
                  AND (NOT $3 OR read_at IS NULL)
                ORDER BY created_at DESC, id DESC LIMIT $4""",
            organisation_id,
            before,
            unread_only,
            limit,
        )

    async def unread(self, conn: Connection, organisation_id: uuid.UUID) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM tiles.notices WHERE organisation_id = $1 AND read_at IS NULL",
            organisation_id,
        )
        return count

    async def mark_read(self, conn: Connection, organisation_id: uuid.UUID, notice_id: uuid.UUID) -> bool:
        found = await conn.fetchval(
            """UPDATE tiles.notices SET read_at = coalesce(read_at, now())
               WHERE id = $1 AND organisation_id = $2 RETURNING id""",
            notice_id,
            organisation_id,
        )
        return found is not None

    async def mark_all_read(self, conn: Connection, organisation_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE tiles.notices SET read_at = now() WHERE organisation_id = $1 AND read_at IS NULL",
            organisation_id,
        )
