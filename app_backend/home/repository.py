"""All SQL of the home: the resident's pins, and the one statement that reads a resident's part of the home."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.home.schemas import Notice, NoticeBody
from app_backend.kernel.db import Connection, fetch_row, fetch_rows


class ResidentRow(msgspec.Struct):
    region: str | None
    level: int
    pins: list[uuid.UUID]
    recent: list[uuid.UUID]
    unread: int
    credential_ends: dt.datetime | None
    tiles: str | None = None  # JSON: tiles.shown for the resident's region, when asked for


class PinRepository:
    async def pin(self, conn: Connection, resident_id: uuid.UUID, tile_id: uuid.UUID, most: int) -> str:
        """Adds the tile at the end of the resident's pins: `pinned`, `already` (kept where it was) or `full`.
        The caller's transaction holds the resident's lock, so two pins at once cannot pass the limit."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('home.pins:' || $1::uuid::text, 0))", resident_id
        )
        outcome: str = await conn.fetchval(
            """WITH mine AS (SELECT tile_id, position FROM home.pins WHERE resident_id = $1),
                    added AS (
                      INSERT INTO home.pins (resident_id, tile_id, position)
                      SELECT $1, $2, coalesce((SELECT max(position) FROM mine), 0) + 1
                      WHERE NOT EXISTS (SELECT 1 FROM mine WHERE tile_id = $2)
                        AND (SELECT count(*) FROM mine) < $3
                      RETURNING 1)
               SELECT CASE WHEN EXISTS (SELECT 1 FROM added) THEN 'pinned'
                           WHEN EXISTS (SELECT 1 FROM mine WHERE tile_id = $2) THEN 'already'
                           ELSE 'full' END""",
            resident_id,
            tile_id,
            most,
        )
        return outcome

    async def unpin(self, conn: Connection, resident_id: uuid.UUID, tile_id: uuid.UUID) -> bool:
        result: str = await conn.execute(
            "DELETE FROM home.pins WHERE resident_id = $1 AND tile_id = $2", resident_id, tile_id
        )
        return result != "DELETE 0"


class ResidentRepository:
    async def read(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        recent: int,
        *,
        city: str,
        fresh: list[str],
        tiles: int,
    ) -> ResidentRow | None:
        """A resident's part of the home in one statement (docs/decisions/0026-one-home.md): their region and level
        (identity), their pins (home), the tiles they opened last (tiles.opens), their unread messages
        (notifications) and when their last device credential ends (codes). It only reads the other domains'
        tables, as code_service's display function reads payments' transit tables: the home's promise is one
        round trip when cold. Unless the resident's "region:level" is in `fresh` (the lists the caller holds), it
        also returns the tiles shown to their region (tiles.shown, the catalogue's own definition) as JSON: a
        cold part and a stale list still take one round trip."""
        return await fetch_row(
            conn,
            ResidentRow,
            """SELECT r.region, r.level,
                      ARRAY(SELECT p.tile_id FROM home.pins p WHERE p.resident_id = r.id ORDER BY p.position)
                        AS pins,
                      ARRAY(SELECT o.tile_id FROM tiles.opens o WHERE o.resident_id = r.id
                            GROUP BY o.tile_id ORDER BY max(o.last_at) DESC LIMIT $2) AS recent,
                      (SELECT count(*) FROM notifications.messages m
                        WHERE m.resident_id = r.id AND m.read_at IS NULL AND m.deleted_at IS NULL)::int AS unread,
                      (SELECT max(c.not_after) FROM codes.device_credentials c
                        WHERE c.resident_id = r.id AND c.revoked_at IS NULL) AS credential_ends,
                      CASE WHEN coalesce(r.region, $3) || ':' || r.level = ANY($4::text[]) THEN NULL
                           ELSE (SELECT coalesce(json_agg(s), '[]')::text
                                 FROM tiles.shown(ARRAY[coalesce(r.region, $3), $3], NULL, $5) s)
                      END AS tiles
               FROM identity.residents r WHERE r.id = $1""",
            resident_id,
            recent,
            city,
            fresh,
            tiles,
        )


_NOTICE = "id, kind, title, body, link, regions, starts_at, ends_at, created_by, created_at, withdrawn_at"


class NoticeRepository:
    async def create(self, conn: Connection, notice: NoticeBody, created_by: str) -> Notice:
        row = await fetch_row(
            conn,
            Notice,
            f"""INSERT INTO home.notices (kind, title, body, link, regions, starts_at, ends_at, created_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_NOTICE}""",
            notice.kind,
            notice.title,
            notice.body,
            notice.link,
            notice.regions,
            notice.starts_at,
            notice.ends_at,
            created_by,
        )
        assert row is not None
        return row

    async def withdraw(self, conn: Connection, notice_id: uuid.UUID) -> Notice | None:
        return await fetch_row(
            conn,
            Notice,
            f"""UPDATE home.notices SET withdrawn_at = now() WHERE id = $1 AND withdrawn_at IS NULL
                RETURNING {_NOTICE}""",
            notice_id,
        )

    async def listed(self, conn: Connection, current_only: bool, limit: int) -> list[Notice]:
        return await fetch_rows(
            conn,
            Notice,
            f"""SELECT {_NOTICE} FROM home.notices
                WHERE NOT $1 OR (withdrawn_at IS NULL AND ends_at > now())
                ORDER BY starts_at DESC LIMIT $2""",
            current_only,
            limit,
        )
