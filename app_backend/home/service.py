"""The resident's home (docs/decisions/0026-one-home.md): tiles for the region and level shared by every resident
of them and cached in the process, checked against a generation in Redis that every tile change bumps; the
resident's own part (region, level, pins, recently used, unread messages) cached in Redis per resident; at most
one PostgreSQL statement per request when cold, none when warm."""

from __future__ import annotations

import time
import uuid

import msgspec
from asyncpg import Pool
from redis.asyncio import Redis
from structlog import get_logger

from app_backend.home.repository import NoticeRepository, PinRepository, ResidentRepository
from app_backend.home.schemas import (
    MOST_PINS,
    RECENT,
    REFRESH_BEFORE,
    CodeSummary,
    Home,
    Notice,
    NoticeBody,
    ResidentPart,
)
from app_backend.kernel.clock import now
from app_backend.kernel.db import Connection, pooled_connection
from app_backend.kernel.errors import DomainError, conflict, invalid_field, not_found
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.regions import CITY, REGIONS, UNKNOWN_REGION
from app_backend.tiles.schemas import CatalogueTile
from app_backend.tiles.service import FOR_RESIDENT_LIMIT, TileService, open_at
from code_service.codes.service import IssuingService

_log = get_logger(__name__)

GENERATION_KEY = "home:tiles:generation"
# A shared list is reloaded at the latest after this, even if no change was heard (the safety net).
TILES_TTL = 30.0
# A resident's part: dropped when the home changes it (pins); what other domains change (an open, a message, a
# region, a level) shows within this.
RESIDENT_TTL = 30
_PART = msgspec.json.Decoder(ResidentPart)
# Operations' current notices (not withdrawn, not ended), rewritten after every change; read with every home.
NOTICES_KEY = "home:notices"
_NOTICES = msgspec.json.Decoder(list[Notice])


def resident_key(resident_id: uuid.UUID) -> str:
    return f"home:resident:{resident_id}"


class _Shared(msgspec.Struct):
    generation: int
    loaded: float
    tiles: list[CatalogueTile]


class HomeService:
    def __init__(
        self,
        tiles: TileService,
        codes: IssuingService,
        pool: Pool,
        redis: Redis,
        batches: BatchRunner,
        acquire_timeout: float,
    ) -> None:
        self._codes = codes
        self._acquire_timeout = acquire_timeout
        self._tiles = tiles
        self._pool = pool
        self._redis = redis
        self._batches = batches
        self._pins = PinRepository()
        self._residents = ResidentRepository()
        self._notices = NoticeRepository()
        self._shared: dict[tuple[str, int], _Shared] = {}
        self.stop_listening = tiles.on_change(self._tile_changed)

    async def _tile_changed(self, tile_id: uuid.UUID) -> None:
        """A change residents see: every node's lists are stale from the next request on (they read the
        generation with the resident's part); this node's at once."""
        self._shared.clear()
        await self._redis.incr(GENERATION_KEY)

    # -- the home -------------------------------------------------------------------------------------------------

    async def home(self, resident_id: uuid.UUID) -> Home:
        batch = self._batches.batch()
        batch.get(GENERATION_KEY)
        batch.get(resident_key(resident_id))
        batch.get(NOTICES_KEY)
        # The code's cached entitlements ride along (or the resident's code subject, until this process knows it).
        code_key, is_facts = self._codes.entitlements_key(resident_id)
        batch.get(code_key)
        raw_generation, raw_part, raw_notices, raw_code = await batch.execute()
        generation = int(raw_generation or 0)
        part = _PART.decode(raw_part) if isinstance(raw_part, bytes | str) and raw_part else None
        shared = None if part is None else self._fresh(part, generation)
        if part is None or shared is None:
            # One statement when cold: the resident's part (with their tiles when this node's list of them is
            # stale), or the shared list alone.
            async with pooled_connection(self._pool, self._acquire_timeout) as conn:
                if part is None:
                    part, shared = await self._read_part(conn, resident_id, generation)
                if shared is None:
                    shared = await self._load(conn, part.region, part.level, generation)
        if raw_notices is None:  # only when Redis lost the key: operations' writes keep it
            notices = await self.publish_notices()
        else:
            notices = _NOTICES.decode(raw_notices)
        tiles = [self._now(t) for t in shared]
        by_id = {t.id: t for t in tiles}
        home = Home(
            region=part.region,
            level=f"L{part.level}",
            tiles=tiles,
            pinned=[by_id[i] for i in part.pins if i in by_id],
            recent=[by_id[i] for i in part.recent if i in by_id],
            unread_messages=part.unread,
            notices=shown_notices(notices, part.region),
            code=CodeSummary(
                entitlements=await self._codes.entitlements_from(resident_id, raw_code, is_facts),
                device_credential_ends_at=part.credential_ends,
                device_credential_needs_refresh=part.credential_ends is None
                or part.credential_ends - now() < REFRESH_BEFORE,
            ),
        )
        if tiles:
            await self._tiles.count_impressions([t.id for t in tiles])
        return home

    def _fresh(self, part: ResidentPart, generation: int) -> list[CatalogueTile] | None:
        shared = self._shared.get((part.region, part.level))
        if shared is None or shared.generation != generation or time.monotonic() - shared.loaded > TILES_TTL:
            return None
        return shared.tiles

    async def _load(self, conn: Connection, region: str, level: int, generation: int) -> list[CatalogueTile]:
        return self._keep(
            region, level, generation, await self._tiles.for_resident(conn, region=region, level=level)
        )

    def _keep(
        self, region: str, level: int, generation: int, tiles: list[CatalogueTile]
    ) -> list[CatalogueTile]:
        self._shared[(region, level)] = _Shared(generation=generation, loaded=time.monotonic(), tiles=tiles)
        return tiles

    def _fresh_keys(self, generation: int) -> list[str]:
        at = time.monotonic()
        return [
            f"{region}:{level}"
            for (region, level), shared in self._shared.items()
            if shared.generation == generation and at - shared.loaded <= TILES_TTL
        ]

    async def _read_part(
        self, conn: Connection, resident_id: uuid.UUID, generation: int
    ) -> tuple[ResidentPart, list[CatalogueTile] | None]:
        """The resident's part and, unless this node holds a fresh list for their region and level, that list:
        one statement."""
        row = await self._residents.read(
            conn, resident_id, RECENT, city=CITY, fresh=self._fresh_keys(generation), tiles=FOR_RESIDENT_LIMIT
        )
        if row is None:
            raise not_found("resident not found")
        part = ResidentPart(
            region=row.region or CITY,
            level=row.level,
            pins=row.pins,
            recent=row.recent,
            unread=row.unread,
            credential_ends=row.credential_ends,
        )
        await self._redis.set(resident_key(resident_id), msgspec.json.encode(part), ex=RESIDENT_TTL)
        if row.tiles is None:
            return part, self._fresh(part, generation)
        shown = self._tiles.for_resident_from(row.tiles, part.level)
        return part, self._keep(part.region, part.level, generation, shown)

    @staticmethod
    def _now(tile: CatalogueTile) -> CatalogueTile:
        open_now = open_at(tile.service_hours, now())
        return tile if open_now == tile.open_now else msgspec.structs.replace(tile, open_now=open_now)

    # -- notices and banners (operations) ---------------------------------------------------------------------

    async def create_notice(self, conn: Connection, notice: NoticeBody, created_by: str) -> Notice:
        """Checked and written in the caller's transaction (audited by the staff route); the caller publishes
        once committed (`publish_notices`)."""
        for region in notice.regions:
            if region not in REGIONS:
                raise invalid_field("regions", UNKNOWN_REGION)
        if notice.ends_at <= notice.starts_at:
            raise invalid_field("ends_at", "must be after starts_at")
        if notice.ends_at <= now():
            raise invalid_field("ends_at", "must be in the future")
        return await self._notices.create(conn, notice, created_by)

    async def withdraw_notice(self, conn: Connection, notice_id: uuid.UUID) -> Notice:
        withdrawn = await self._notices.withdraw(conn, notice_id)
        if withdrawn is None:
            raise not_found("notice_id: no notice with this id that is not withdrawn")
        return withdrawn

    async def notices(self, conn: Connection, *, current_only: bool, limit: int) -> list[Notice]:
        return await self._notices.listed(conn, current_only, limit)

    async def notices_changed(self) -> None:
        """After a change of the notices commits: every home shows it from its next request."""
        await self.publish_notices()

    async def publish_notices(self) -> list[Notice]:
        """Writes the current notices to Redis, where every home reads them (after a change commits, or when the
        key is lost). One statement on a connection of its own."""
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            current = await self._notices.listed(conn, True, 200)
        await self._redis.set(NOTICES_KEY, msgspec.json.encode(current))
        return current

    # -- pins -----------------------------------------------------------------------------------------------------

    async def pin(self, conn: Connection, resident_id: uuid.UUID, tile_id: uuid.UUID) -> None:
        """Pins a live tile at the end of the resident's pins (again: kept where it was). The caller drops the
        cached part once committed (`forget`)."""
        await self._tiles.live_tile(conn, tile_id)  # 404 unless live
        outcome = await self._pins.pin(conn, resident_id, tile_id, MOST_PINS)
        if outcome == "full":
            raise pins_full()

    async def unpin(self, conn: Connection, resident_id: uuid.UUID, tile_id: uuid.UUID) -> None:
        if not await self._pins.unpin(conn, resident_id, tile_id):
            raise not_found("tile_id: not pinned")

    async def forget(self, resident_id: uuid.UUID) -> None:
        """Drops the resident's cached part (after a commit that changed it)."""
        await self._redis.delete(resident_key(resident_id))


def shown_notices(notices: list[Notice], region: str) -> list[Notice]:
    """The notices a resident of `region` sees now: theirs and the city-wide ones, in their window, outages
    first, then the latest started."""
    at = now()
    shown = [
        n for n in notices if n.starts_at <= at < n.ends_at and (region in n.regions or CITY in n.regions)
    ]
    return sorted(shown, key=lambda n: (n.kind != "outage", -n.starts_at.timestamp()))


def pins_full() -> DomainError:
    return conflict(f"at most {MOST_PINS} tiles can be pinned; unpin one first", type="home-pins-full")
