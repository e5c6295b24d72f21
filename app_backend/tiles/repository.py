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

    async def get_many(self, conn: Connection, tile_ids: Sequence[uuid.UUID]) -> list[TileRow]:
        return await fetch_rows(
            conn, TileRow, f"SELECT {_TILE} FROM tiles.tiles WHERE id = ANY($1::uuid[])", list(tile_ids)
        )

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

    async def live_of(self, conn: Connection, tile_ids: Sequence[uuid.UUID]) -> list[VersionRow]:
        """The live version of each of these tiles that has one."""
        columns = ", ".join(f"v.{c.strip()}" for c in _VERSION.split(","))
        return await fetch_rows(
            conn,
            VersionRow,
            f"""SELECT {columns} FROM tiles.tiles t
                JOIN tiles.versions v ON v.tile_id = t.id AND v.number = t.live_version
                WHERE t.id = ANY($1::uuid[])""",
            list(tile_ids),
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
            "SELECT * FROM tiles.shown($1, $2, $3)",
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


# -- health checks --------------------------------------------------------------------------------------------------


class ProbeTargetRow(msgspec.Struct, frozen=True):
    """A tile the health checks probe this round: its URLs (either may be absent) and whether its department asked
    for suspension after a long outage."""

    id: uuid.UUID
    health_url: str | None
    h5_url: str | None
    auto_suspend: bool


class RoundRow(msgspec.Struct, frozen=True):
    """A tile's run of failures once a round is recorded."""

    consecutive_failures: int
    failing_since: dt.datetime | None
    suspended_in_run: bool


class HealthStateRow(msgspec.Struct, frozen=True):
    next_probe_at: dt.datetime
    consecutive_failures: int
    failing_since: dt.datetime | None
    last_probed_at: dt.datetime | None
    last_ok_at: dt.datetime | None
    last_error: str | None


class ProbeRow(msgspec.Struct, frozen=True):
    probed_at: dt.datetime
    target: str
    ok: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None


_PROBED_FROM = """tiles.tiles t JOIN tiles.versions v ON v.tile_id = t.id AND v.number = t.live_version
    WHERE t.state IN ('live', 'suspended')
      AND (v.content->>'health_check_url' IS NOT NULL OR v.content->'entry'->>'h5_url' IS NOT NULL)"""


class HealthRepository:
    async def claim_due(
        self, conn: Connection, at: dt.datetime, interval: int, only: Sequence[uuid.UUID] | None
    ) -> list[ProbeTargetRow]:
        """The live and suspended tiles with a URL to probe whose probe is due at `at` (a tile never probed is
        due), each claimed until `at + interval`: a second run at the same time finds them taken."""
        return await fetch_rows(
            conn,
            ProbeTargetRow,
            f"""WITH probed AS (
                  SELECT t.id, v.content->>'health_check_url' AS health_url,
                         v.content->'entry'->>'h5_url' AS h5_url,
                         coalesce((v.content->>'auto_suspend')::boolean, false) AS auto_suspend
                  FROM {_PROBED_FROM} AND ($3::uuid[] IS NULL OR t.id = ANY($3))
                ), claimed AS (
                  INSERT INTO tiles.health_state AS h (tile_id, next_probe_at)
                  SELECT id, $1::timestamptz + make_interval(secs => $2::float8) FROM probed
                  ON CONFLICT (tile_id) DO UPDATE SET next_probe_at = excluded.next_probe_at
                    WHERE h.next_probe_at <= $1
                  RETURNING tile_id
                )
                SELECT p.id, p.health_url, p.h5_url, p.auto_suspend
                FROM probed p JOIN claimed c ON c.tile_id = p.id ORDER BY p.id""",
            at,
            float(interval),
            None if only is None else list(only),
        )

    async def record_round(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        at: dt.datetime,
        day: dt.date,
        probes: Sequence[tuple[str, bool, int | None, int | None, str | None]],
        error: str | None,
    ) -> RoundRow:
        """One round of a tile's probes (target, ok, status, latency ms, error): kept in the history, counted in
        the day's figures, and the run of failures moved on (a round fails when `error` is set)."""
        row = await fetch_row(
            conn,
            RoundRow,
            """WITH kept AS (
                 INSERT INTO tiles.health_probes (tile_id, probed_at, target, ok, status_code, latency_ms, error)
                 SELECT $1, $2, p.target, p.ok, p.status_code, p.latency_ms, p.error
                 FROM unnest($4::text[], $5::bool[], $6::int[], $7::int[], $8::text[])
                   AS p(target, ok, status_code, latency_ms, error)
               ), counted AS (
                 INSERT INTO tiles.usage_daily AS u (tile_id, day, probes, probe_failures)
                 VALUES ($1, $3, 1, CASE WHEN $9::text IS NULL THEN 0 ELSE 1 END)
                 ON CONFLICT (tile_id, day) DO UPDATE
                   SET probes = u.probes + 1, probe_failures = u.probe_failures + excluded.probe_failures
               )
               INSERT INTO tiles.health_state AS h (tile_id, next_probe_at, consecutive_failures, failing_since,
                   last_probed_at, last_ok_at, last_error)
               VALUES ($1, $2, CASE WHEN $9::text IS NULL THEN 0 ELSE 1 END,
                       CASE WHEN $9::text IS NULL THEN NULL ELSE $2 END, $2,
                       CASE WHEN $9::text IS NULL THEN $2 END, $9)
               ON CONFLICT (tile_id) DO UPDATE SET
                 consecutive_failures = CASE WHEN $9::text IS NULL THEN 0 ELSE h.consecutive_failures + 1 END,
                 failing_since = CASE WHEN $9::text IS NULL THEN NULL ELSE coalesce(h.failing_since, $2) END,
                 last_probed_at = $2,
                 last_ok_at = CASE WHEN $9::text IS NULL THEN $2 ELSE h.last_ok_at END,
                 last_error = $9,
                 suspended_in_run = h.suspended_in_run AND $9::text IS NOT NULL
               RETURNING consecutive_failures, failing_since, suspended_in_run""",
            tile_id,
            at,
            day,
            [p[0] for p in probes],
            [p[1] for p in probes],
            [p[2] for p in probes],
            [p[3] for p in probes],
            [p[4] for p in probes],
            error,
        )
        assert row is not None  # an upsert … RETURNING returns its row
        return row

    async def mark_suspended_in_run(self, conn: Connection, tile_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE tiles.health_state SET suspended_in_run = true WHERE tile_id = $1", tile_id
        )

    async def count_outage(self, conn: Connection, tile_id: uuid.UUID, day: dt.date) -> None:
        """The tile was degraded on `day` (one more outage in its figures)."""
        await conn.execute(
            """INSERT INTO tiles.usage_daily AS u (tile_id, day, outages) VALUES ($1, $2, 1)
               ON CONFLICT (tile_id, day) DO UPDATE SET outages = u.outages + 1""",
            tile_id,
            day,
        )

    async def state(self, conn: Connection, tile_id: uuid.UUID) -> HealthStateRow | None:
        return await fetch_row(
            conn,
            HealthStateRow,
            """SELECT next_probe_at, consecutive_failures, failing_since, last_probed_at, last_ok_at, last_error
               FROM tiles.health_state WHERE tile_id = $1""",
            tile_id,
        )

    async def history(self, conn: Connection, tile_id: uuid.UUID, limit: int) -> list[ProbeRow]:
        return await fetch_rows(
            conn,
            ProbeRow,
            """SELECT probed_at, target, ok, status_code, latency_ms, error FROM tiles.health_probes
               WHERE tile_id = $1 ORDER BY probed_at DESC, target LIMIT $2""",
            tile_id,
            limit,
        )

    async def purge(self, conn: Connection, before: dt.datetime) -> int:
        result: str = await conn.execute("DELETE FROM tiles.health_probes WHERE probed_at < $1", before)
        return int(result.split()[-1])


# -- usage ------------------------------------------------------------------------------------------------------


class OpenRow(msgspec.Struct, frozen=True):
    """A tile a resident asked to open, the resident's level now, and whether the open was recorded (None: not
    recorded, the tile being unavailable or above the level). `client_id`: its one-login client while active."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    state: str
    health: str
    resident_notice: str | None
    number: int
    content: dict[str, object]
    min_level: int
    level: int
    client_id: str | None
    opens: int | None


class DailyRow(msgspec.Struct, frozen=True):
    tile_id: uuid.UUID
    day: dt.date
    impressions: int
    opens: int
    residents: int
    completions: int
    probes: int
    probe_failures: int
    outages: int


class PeriodRow(msgspec.Struct, frozen=True):
    """A tile's figures over a period; `residents` is unique residents over the whole period (None where some of
    its days' opens were purged and only their daily counts are left)."""

    tile_id: uuid.UUID
    impressions: int
    opens: int
    residents: int | None
    completions: int
    probes: int
    probe_failures: int
    outages: int


class ReportTileRow(msgspec.Struct, frozen=True):
    """A tile of a department's report (or a retirement candidate): who owns it, its name and state."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    state: str
    first_published_at: dt.datetime | None


# The figures of tiles $1 over days $2..$3: impressions, probes and outages from usage_daily; opens and residents
# from tiles.opens, or usage_daily where the day's rows were purged (`closed`); completions from tiles.completions.
_DAILY = """
    o AS (SELECT tile_id, day, sum(opens)::bigint AS opens, count(*)::bigint AS residents FROM tiles.opens
          WHERE tile_id = ANY($1) AND day BETWEEN $2 AND $3 GROUP BY tile_id, day),
    c AS (SELECT tile_id, day, count(*)::bigint AS completions FROM tiles.completions
          WHERE tile_id = ANY($1) AND day BETWEEN $2 AND $3 GROUP BY tile_id, day),
    u AS (SELECT * FROM tiles.usage_daily WHERE tile_id = ANY($1) AND day BETWEEN $2 AND $3),
    daily AS (
      SELECT k.tile_id, k.day, coalesce(u.impressions, 0) AS impressions,
             CASE WHEN u.closed THEN u.opens ELSE coalesce(o.opens, 0) END AS opens,
             CASE WHEN u.closed THEN u.residents ELSE coalesce(o.residents, 0) END AS residents,
             coalesce(c.completions, 0) AS completions, coalesce(u.probes, 0) AS probes,
             coalesce(u.probe_failures, 0) AS probe_failures, coalesce(u.outages, 0) AS outages,
             coalesce(u.closed, false) AS closed
      FROM (SELECT tile_id, day FROM u UNION SELECT tile_id, day FROM o UNION SELECT tile_id, day FROM c) k
      LEFT JOIN u USING (tile_id, day) LEFT JOIN o USING (tile_id, day) LEFT JOIN c USING (tile_id, day)
    )"""


class UsageRepository:
    async def users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """One statement: a page, in id order after `after`, of the residents who opened the organisation's tile on
        a day from `since` on, first that day by `until`; nobody when the tile is not the organisation's."""
        rows = await conn.fetch(
            """SELECT DISTINCT o.resident_id FROM tiles.opens o
               JOIN tiles.tiles t ON t.id = o.tile_id AND t.organisation_id = $1
               WHERE o.tile_id = $2 AND o.day >= $3 AND o.first_at <= $4
                 AND ($5::uuid IS NULL OR o.resident_id > $5)
               ORDER BY o.resident_id LIMIT $6""",
            organisation_id,
            tile_id,
            since,
            until,
            after,
            limit,
        )
        return [r["resident_id"] for r in rows]

    async def count_users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
    ) -> int:
        """How many residents `users_of` pages through."""
        count: int = await conn.fetchval(
            """SELECT count(DISTINCT o.resident_id) FROM tiles.opens o
               JOIN tiles.tiles t ON t.id = o.tile_id AND t.organisation_id = $1
               WHERE o.tile_id = $2 AND o.day >= $3 AND o.first_at <= $4""",
            organisation_id,
            tile_id,
            since,
            until,
        )
        return count

    async def is_tile_of(self, conn: Connection, organisation_id: uuid.UUID, tile_id: uuid.UUID) -> bool:
        found = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tiles.tiles WHERE id = $1 AND organisation_id = $2)",
            tile_id,
            organisation_id,
        )
        return bool(found)

    async def open(
        self, conn: Connection, tile_id: uuid.UUID, resident_id: uuid.UUID, token_level: int
    ) -> OpenRow | None:
        """One statement: the live tile, the resident's level now (the account's; the token's when the account is
        not found), its active one-login client, and the open recorded when the tile is available and the level
        is enough. None: no live or suspended tile with this id."""
        return await fetch_row(
            conn,
            OpenRow,
            """WITH tile AS (
                 SELECT t.id, t.organisation_id, t.state, t.health, t.resident_notice, v.number, v.content,
                        v.min_level
                 FROM tiles.tiles t JOIN tiles.versions v ON v.tile_id = t.id AND v.number = t.live_version
                 WHERE t.id = $1 AND t.state IN ('live', 'suspended')
               ), who AS (
                 SELECT coalesce((SELECT level FROM identity.residents WHERE id = $2), $3::smallint) AS level
               ), opened AS (
                 INSERT INTO tiles.opens AS o (tile_id, day, resident_id, opens, first_at, last_at)
                 SELECT tile.id, (now() AT TIME ZONE 'Asia/Shanghai')::date, $2, 1, now(), now()
                 FROM tile, who
                 WHERE tile.state = 'live' AND tile.health = 'ok' AND who.level >= tile.min_level
                 ON CONFLICT (tile_id, day, resident_id) DO UPDATE SET opens = o.opens + 1, last_at = now()
                 RETURNING o.opens
               )
               SELECT tile.id, tile.organisation_id, tile.state, tile.health, tile.resident_notice, tile.number,
                      tile.content, tile.min_level, who.level, c.client_id, (SELECT opens FROM opened) AS opens
               FROM tile CROSS JOIN who
               LEFT JOIN oidc.clients c ON c.client_id = tile.content->>'oidc_client_id' AND c.revoked_at IS NULL""",
            tile_id,
            resident_id,
            token_level,
        )

    async def add_impressions(
        self, conn: Connection, batch_id: uuid.UUID, day: dt.date, counts: Mapping[uuid.UUID, int]
    ) -> bool:
        """Adds a batch of the day's impressions once: False when the batch was applied before (a retry, or a
        second flush of the same batch). Counts of tiles that do not exist are dropped."""
        applied = await conn.fetchval(
            """WITH claimed AS (
                 INSERT INTO tiles.impression_batches (batch_id, day) VALUES ($1, $2)
                 ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id
               ), added AS (
                 INSERT INTO tiles.usage_daily AS u (tile_id, day, impressions)
                 SELECT s.tile_id, $2, s.n
                 FROM unnest($3::uuid[], $4::bigint[]) AS s(tile_id, n) JOIN tiles.tiles t ON t.id = s.tile_id
                 WHERE EXISTS (SELECT 1 FROM claimed)
                 ON CONFLICT (tile_id, day) DO UPDATE SET impressions = u.impressions + excluded.impressions
               )
               SELECT count(*) FROM claimed""",
            batch_id,
            day,
            list(counts),
            list(counts.values()),
        )
        return bool(applied)

    async def add_completions(
        self,
        conn: Connection,
        tile_id: uuid.UUID,
        completions: Sequence[tuple[str, dt.datetime]],
    ) -> int:
        """Records each (reference, completed at) not recorded before for the tile; returns how many were new."""
        result: str = await conn.execute(
            """INSERT INTO tiles.completions (tile_id, reference, day, completed_at)
               SELECT $1, c.reference, (c.at AT TIME ZONE 'Asia/Shanghai')::date, c.at
               FROM unnest($2::text[], $3::timestamptz[]) AS c(reference, at)
               ON CONFLICT (tile_id, reference) DO NOTHING""",
            tile_id,
            [c[0] for c in completions],
            [c[1] for c in completions],
        )
        return int(result.split()[-1])

    async def daily(
        self, conn: Connection, tile_ids: Sequence[uuid.UUID], start: dt.date, end: dt.date
    ) -> list[DailyRow]:
        """Each tile's figures per day from `start` to `end` (days with nothing at all are left out)."""
        return await fetch_rows(
            conn,
            DailyRow,
            f"""WITH {_DAILY}
                SELECT tile_id, day, impressions, opens, residents, completions, probes, probe_failures, outages
                FROM daily ORDER BY tile_id, day""",
            list(tile_ids),
            start,
            end,
        )

    async def period(
        self, conn: Connection, tile_ids: Sequence[uuid.UUID], start: dt.date, end: dt.date
    ) -> list[PeriodRow]:
        """Each tile's totals from `start` to `end`, unique residents counted over the whole period."""
        return await fetch_rows(
            conn,
            PeriodRow,
            f"""WITH {_DAILY},
                  totals AS (
                    SELECT tile_id, sum(impressions)::bigint AS impressions, sum(opens)::bigint AS opens,
                           sum(completions)::bigint AS completions, sum(probes)::bigint AS probes,
                           sum(probe_failures)::bigint AS probe_failures, sum(outages)::bigint AS outages,
                           bool_or(closed) AS some_closed
                    FROM daily GROUP BY tile_id
                  ),
                  distinct_residents AS (
                    SELECT tile_id, count(DISTINCT resident_id)::bigint AS residents FROM tiles.opens
                    WHERE tile_id = ANY($1) AND day BETWEEN $2 AND $3 GROUP BY tile_id
                  )
                SELECT x.id AS tile_id, coalesce(t.impressions, 0) AS impressions, coalesce(t.opens, 0) AS opens,
                       CASE WHEN coalesce(t.some_closed, false) THEN NULL ELSE coalesce(r.residents, 0) END
                         AS residents,
                       coalesce(t.completions, 0) AS completions, coalesce(t.probes, 0) AS probes,
                       coalesce(t.probe_failures, 0) AS probe_failures, coalesce(t.outages, 0) AS outages
                FROM unnest($1::uuid[]) AS x(id)
                LEFT JOIN totals t ON t.tile_id = x.id LEFT JOIN distinct_residents r ON r.tile_id = x.id
                ORDER BY x.id""",
            list(tile_ids),
            start,
            end,
        )

    async def report_tiles(
        self,
        conn: Connection,
        *,
        organisation_id: uuid.UUID | None,
        shown_before: dt.datetime | None,
        limit: int,
        tile_id: uuid.UUID | None = None,
    ) -> list[ReportTileRow]:
        """Tiles that were ever published (of one organisation, or all), with their name (the live version's, or
        the latest one's) and when they first went live; `shown_before`: only those live or suspended now and
        first published before it (the retirement candidates' pool)."""
        return await fetch_rows(
            conn,
            ReportTileRow,
            """SELECT t.id, t.organisation_id, t.organisation_name,
                      coalesce(live.name, latest.name) AS name, t.state, first.at AS first_published_at
               FROM tiles.tiles t
               JOIN LATERAL (SELECT min(published_at) AS at FROM tiles.versions WHERE tile_id = t.id) first ON true
               LEFT JOIN tiles.versions live ON live.tile_id = t.id AND live.number = t.live_version
               JOIN LATERAL (SELECT name FROM tiles.versions WHERE tile_id = t.id
                             ORDER BY number DESC LIMIT 1) latest ON true
               WHERE first.at IS NOT NULL
                 AND ($1::uuid IS NULL OR t.organisation_id = $1)
                 AND ($2::timestamptz IS NULL OR (t.state IN ('live', 'suspended') AND first.at < $2))
                 AND ($4::uuid IS NULL OR t.id = $4)
               ORDER BY t.organisation_name, name, t.id LIMIT $3""",
            organisation_id,
            shown_before,
            limit,
            tile_id,
        )

    async def recent_residents(
        self, conn: Connection, since: dt.date, today: dt.date
    ) -> dict[uuid.UUID, float]:
        """Every live or suspended tile's unique residents per day since `since`, each day weighted by 0.9 per day
        of age (0 for a tile nobody opened): what ranks tiles by use."""
        rows = await conn.fetch(
            """SELECT t.id, coalesce(sum(power(0.9, $2::date - o.day)), 0)::float8 AS score
               FROM tiles.tiles t LEFT JOIN tiles.opens o ON o.tile_id = t.id AND o.day >= $1
               WHERE t.state IN ('live', 'suspended') GROUP BY t.id""",
            since,
            today,
        )
        return {r["id"]: round(float(r["score"]), 3) for r in rows}

    async def close_and_purge(
        self, conn: Connection, before: dt.date, only: Sequence[uuid.UUID] | None = None
    ) -> int:
        """Days before `before`: their opens and unique residents move into usage_daily (closed), then their rows
        of who opened what are deleted. Returns the rows deleted."""
        await conn.execute(
            """INSERT INTO tiles.usage_daily AS u (tile_id, day, opens, residents, closed)
               SELECT tile_id, day, sum(opens), count(*), true FROM tiles.opens
               WHERE day < $1 AND ($2::uuid[] IS NULL OR tile_id = ANY($2))
               GROUP BY tile_id, day
               ON CONFLICT (tile_id, day) DO UPDATE
                 SET opens = CASE WHEN u.closed THEN u.opens ELSE 0 END + excluded.opens,
                     residents = CASE WHEN u.closed THEN u.residents ELSE 0 END + excluded.residents,
                     closed = true""",
            before,
            None if only is None else list(only),
        )
        result: str = await conn.execute(
            "DELETE FROM tiles.opens WHERE day < $1 AND ($2::uuid[] IS NULL OR tile_id = ANY($2))",
            before,
            None if only is None else list(only),
        )
        return int(result.split()[-1])

    async def purge_batches(self, conn: Connection, before: dt.datetime) -> int:
        result: str = await conn.execute("DELETE FROM tiles.impression_batches WHERE applied_at < $1", before)
        return int(result.split()[-1])
