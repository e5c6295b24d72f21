"""How tiles are used (docs/decisions/0025-service-tiles.md): opens, impressions, completions, the daily and
monthly figures, the scores that rank the catalogue by use, and the retirement candidates.

- **Opens** are residents opening a tile (`open`): one statement reads the live tile and the resident's level now,
  and records the open (tile, business day, resident, count) when the tile is available and the level enough.
  Unique residents per tile and day are exact: they are the rows.
- **Impressions** are tiles shown in a list (the home, the catalogue): counted without who saw them, in Redis
  (`count_impressions`: one HINCRBY per tile into the day's hash, in one batch on the process's shared Redis
  connection (app_backend/kernel/redis_batch.py), one hash slot per day), added to
  PostgreSQL by `flush_impressions`, exactly once: the day's hash is renamed to its `flushing` twin with a batch
  id (one script, so atomically), the batch is added in a transaction that first claims its id, and the twin is
  deleted only if it still holds that batch. A crash before the PostgreSQL commit leaves the twin for the next
  flush; a crash after it leaves a twin whose batch is already claimed, added never again; two flushes at once
  claim the same batch id and one of them adds it.
- **Completions** are reported by the department, one per its own reference (a reference sent again is not
  counted again).

Callers own the transaction, except the jobs (`flush_impressions`, `refresh_scores`, `purge`), which take the pool."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode

import msgspec
import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.clock import BUSINESS_TZ, business_day, now
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.settings import TileSettings
from app_backend.tiles.repository import DailyRow, PeriodRow, ReportTileRow, TileRepository, UsageRepository
from app_backend.tiles.schemas import (
    DEGRADED_NOTICE,
    SUSPENDED_NOTICE,
    Completion,
    CompletionsRecorded,
    DailyFigures,
    EntryPoints,
    MonthlyReport,
    OneLogin,
    PeriodFigures,
    ReportTile,
    RetirementCandidate,
    RetirementCandidates,
    TileOpened,
    TileUsage,
    step_up,
)

if TYPE_CHECKING:
    from app_backend.tiles.service import Caller, TileService

_log = structlog.get_logger("tiles.usage")
IMPRESSIONS_DROPPED = Counter(
    "tzt_tile_impressions_dropped_total", "Tile impressions not counted because Redis was unavailable"
)
# The day's live hash and the twin it is renamed to while it is flushed: one hash tag, one slot.
_LIVE = "tiles:imp:{{{day}}}"
_FLUSHING = "tiles:imp:{{{day}}}:flushing"
_BATCH_FIELD = "_batch"
# A day's counts wait this long for a flush before Redis forgets them (the flush runs every minute).
_KEEP_SECONDS = 8 * 24 * 3600
# Days a flush looks back for counts not flushed yet.
_FLUSH_DAYS = 7
# Takes the day's batch: the twin left by a flush that did not finish, or the live hash renamed to the twin
# with a new batch id; nil when there is nothing to flush.
_TAKE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
end
return redis.call('HGETALL', KEYS[2])
"""
# Deletes the twin only while it holds the batch just added (a later flush may have taken a newer one).
_DONE = """
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
COMPLETION_MAX_AGE = dt.timedelta(days=31)
_LEVEL_NAMES = {1: "L1", 2: "L2", 3: "L3"}


# (the open's connection, the tile's organisation, the resident, how it was used): notifications'
# `record_service_use`, handed over by the tiles module at start.
ServiceUsed = Callable[[Connection, uuid.UUID, uuid.UUID, str], Awaitable[None]]


class Ratings(Protocol):
    """What the ratings (their own issue) will tell the retirement report: the tiles rated badly over a period,
    each with a short description for the reviewer (e.g. "差评 12 / 40"). Registered with `use_ratings`."""

    async def poorly_rated(
        self, conn: Connection, tile_ids: Sequence[uuid.UUID], start: dt.date, end: dt.date
    ) -> Mapping[uuid.UUID, str]: ...


def _day_key(day: dt.date) -> str:
    return f"{day:%Y%m%d}"


def month_range(month: str) -> tuple[dt.date, dt.date]:
    """The first and last day of `YYYY-MM`."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = dt.date(year, number, 1)
    except ValueError:
        raise invalid_field("month", "must be YYYY-MM") from None
    following = dt.date(year + number // 12, number % 12 + 1, 1)
    return start, following - dt.timedelta(days=1)


def figures(row: DailyRow) -> DailyFigures:
    return DailyFigures(
        day=row.day,
        impressions=row.impressions,
        opens=row.opens,
        residents=row.residents,
        completions=row.completions,
        probes=row.probes,
        probe_failures=row.probe_failures,
        outages=row.outages,
    )


def totals(row: PeriodRow | None) -> PeriodFigures:
    if row is None:
        return PeriodFigures(0, 0, 0, 0, 0, 0, 0, None)
    return PeriodFigures(
        impressions=row.impressions,
        opens=row.opens,
        residents=row.residents,
        completions=row.completions,
        probes=row.probes,
        probe_failures=row.probe_failures,
        outages=row.outages,
        availability=None if not row.probes else round(1 - row.probe_failures / row.probes, 4),
    )


class UsageService:
    """Opens, impressions, completions, figures, scores and retirement candidates (module docstring)."""

    def __init__(
        self,
        tiles: TileService,
        redis: Redis,
        batches: BatchRunner,
        breaker: RedisBreaker,
        settings: TileSettings,
        issuer: str,
    ) -> None:
        self._tiles = tiles
        self._redis = redis
        self._batches = batches
        self._breaker = breaker
        self.settings = settings
        self._issuer = issuer.rstrip("/")
        self._usage = UsageRepository()
        self._tile_rows = TileRepository()
        self._take = redis.register_script(_TAKE)
        self._done = redis.register_script(_DONE)
        self._ratings: Ratings | None = None
        self._service_used: ServiceUsed | None = None

    def use_service_users(self, service_used: ServiceUsed) -> None:
        """Who opens a tile has used its department's service (notifications then lets the department message
        them): told once per resident, tile and day, on the day's first open."""
        self._service_used = service_used

    def use_ratings(self, ratings: Ratings) -> None:
        """The ratings (their own domain, once it exists) tell the retirement report which tiles are rated badly."""
        self._ratings = ratings

    # -- residents -----------------------------------------------------------------------------------------------

    async def open(
        self, conn: Connection, tile_id: uuid.UUID, resident_id: uuid.UUID, token_level: int
    ) -> TileOpened:
        """Records that the resident opened the tile and answers how to open it. 404: no live tile; 409
        `tile-unavailable`: suspended or failing its health checks (nothing recorded); 403 `step-up-required`: the
        resident's level (the account's now) is below the tile's, naming the step-up (nothing recorded)."""
        row = await self._usage.open(conn, tile_id, resident_id, token_level)
        if row is None:
            raise not_found("tile_id: no live tile with this id")
        if row.state != "live" or row.health != "ok":
            reason = (row.resident_notice or SUSPENDED_NOTICE) if row.state != "live" else DEGRADED_NOTICE
            raise DomainError(
                409,
                "tile-unavailable",
                f"the service is temporarily unavailable: {reason}",
                extra={"status": "temporarily_unavailable", "unavailable_reason": reason},
            )
        needed = step_up(row.min_level, row.level)
        if needed is not None:
            raise DomainError(
                403,
                "step-up-required",
                f"this service needs {needed.level}: complete {needed.action} first ({needed.path})",
                extra={"step_up": msgspec.to_builtins(needed), "level": _LEVEL_NAMES.get(row.level, "L1")},
            )
        if row.opens == 1 and self._service_used is not None:
            await self._service_used(conn, row.organisation_id, resident_id, "tile")
        entry = msgspec.convert(row.content["entry"], EntryPoints)
        one_login = None
        if row.client_id is not None:
            one_login = self._one_login(row.client_id, entry, row.min_level)
        return TileOpened(
            tile_id=row.id,
            version=row.number,
            name=str(row.content["name"]),
            entry=entry,
            one_login=one_login,
        )

    def _one_login(self, client_id: str, entry: EntryPoints, min_level: int) -> OneLogin:
        login_url = None
        if entry.h5_url is not None:
            glue = "&" if "?" in entry.h5_url else "?"
            login_url = (
                entry.h5_url + glue + urlencode({"iss": self._issuer, "target_link_uri": entry.h5_url})
            )
        return OneLogin(
            client_id=client_id,
            issuer=self._issuer,
            authorization_endpoint=f"{self._issuer}/oidc/authorize",
            acr_values=_LEVEL_NAMES[min_level],
            login_url=login_url,
        )

    async def count_impressions(self, tile_ids: Sequence[uuid.UUID]) -> bool:
        """Counts one impression of each tile shown (who saw it is not kept): one batch into today's hash.
        Cheap enough for a hot page; while Redis is unavailable the impressions are dropped (and counted as
        dropped), never the page. Returns whether they were counted."""
        if not tile_ids:
            return True
        if not self._breaker.allow():
            IMPRESSIONS_DROPPED.inc(len(tile_ids))
            return False
        key = _LIVE.format(day=_day_key(business_day()))
        batch = self._batches.batch()
        for tile_id in tile_ids:
            batch.hincrby(key, str(tile_id), 1)
        batch.expire(key, _KEEP_SECONDS)
        try:
            await batch.execute()
        except self._breaker.unavailable as exc:
            self._breaker.failed(exc)
            IMPRESSIONS_DROPPED.inc(len(tile_ids))
            return False
        self._breaker.succeeded()
        return True

    # -- departments -----------------------------------------------------------------------------------------

    async def add_completions(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, completions: Sequence[Completion]
    ) -> CompletionsRecorded:
        """The department's completions of its tile, each once per reference (a reference sent again, in this
        request or an earlier one, is not counted again)."""
        await self._reachable(conn, caller, tile_id)
        at = now()
        found: dict[str, dt.datetime] = {}
        for index, item in enumerate(completions):
            when = item.completed_at or at
            if when.tzinfo is None:
                raise invalid_field(f"completions[{index}].completed_at", "needs a time zone (e.g. +08:00)")
            if when > at + dt.timedelta(minutes=5):
                raise invalid_field(f"completions[{index}].completed_at", "is in the future")
            if when < at - COMPLETION_MAX_AGE:
                raise invalid_field(f"completions[{index}].completed_at", "is more than 31 days ago")
            found.setdefault(item.reference, when)
        recorded = await self._usage.add_completions(conn, tile_id, list(found.items()))
        return CompletionsRecorded(recorded=recorded, already_recorded=len(completions) - recorded)

    async def _reachable(self, conn: Connection, caller: Caller, tile_id: uuid.UUID) -> None:
        tile = await self._tile_rows.get(conn, tile_id)
        if tile is None or (caller.kind == "department" and tile.organisation_id != caller.organisation_id):
            raise not_found(
                "tile_id: no tile of yours with this id"
                if caller.kind == "department"
                else "tile_id: no such tile"
            )

    async def tile_usage(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, start: dt.date, end: dt.date
    ) -> TileUsage:
        """A tile's figures per day from `start` to `end` (at most 366 days), with their totals."""
        if end < start:
            raise invalid_field("end", "must not be before start")
        if (end - start).days > 366:
            raise invalid_field("end", "at most 366 days after start")
        await self._reachable(conn, caller, tile_id)
        days = await self._usage.daily(conn, [tile_id], start, end)
        period = await self._usage.period(conn, [tile_id], start, end)
        return TileUsage(
            tile_id=tile_id,
            start=start,
            end=end,
            totals=totals(period[0] if period else None),
            days=[figures(d) for d in days],
        )

    async def monthly_report(
        self, conn: Connection, organisation_id: uuid.UUID, organisation_name: str, month: str
    ) -> MonthlyReport:
        """Every tile of the organisation that was ever published, with its month's totals and days."""
        start, end = month_range(month)
        tiles = await self._usage.report_tiles(
            conn, organisation_id=organisation_id, shown_before=None, limit=1000
        )
        ids = [t.id for t in tiles]
        days: dict[uuid.UUID, list[DailyFigures]] = {i: [] for i in ids}
        for row in await self._usage.daily(conn, ids, start, end):
            days[row.tile_id].append(figures(row))
        period = {p.tile_id: p for p in await self._usage.period(conn, ids, start, end)}
        name = tiles[0].organisation_name if tiles else organisation_name
        return MonthlyReport(
            organisation_id=organisation_id,
            organisation_name=name,
            month=month,
            start=start,
            end=end,
            tiles=[
                ReportTile(
                    tile_id=t.id, name=t.name, state=t.state, totals=totals(period.get(t.id)), days=days[t.id]
                )
                for t in tiles
            ],
        )

    # -- who used a tile (notifications' broadcasts to a tile's users) ---------------------------------------------

    async def is_tile_of(self, conn: Connection, organisation_id: uuid.UUID, tile_id: uuid.UUID) -> bool:
        """Whether the tile exists and is the organisation's (one answer for another's tile and for none)."""
        return await self._usage.is_tile_of(conn, organisation_id, tile_id)

    async def users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
        after_resident_id: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """A page of the residents who opened the organisation's tile on a business day from `since` on (and had
        by `until`), in id order after `after_resident_id`, in one statement; empty for another's tile. Only the
        opens still kept (`opens_retention_days`) are known."""
        return await self._usage.users_of(
            conn, organisation_id, tile_id, since, until, after_resident_id, limit
        )

    async def count_users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
    ) -> int:
        """How many residents `users_of` pages through."""
        return await self._usage.count_users_of(conn, organisation_id, tile_id, since, until)

    # -- retirement ----------------------------------------------------------------------------------------------

    def _period(self, today: dt.date) -> tuple[dt.date, dt.date]:
        return today - dt.timedelta(days=self.settings.retire_period_days - 1), today

    async def retirement_candidates(
        self, conn: Connection, today: dt.date | None = None, limit: int = 10_000
    ) -> RetirementCandidates:
        """Live and suspended tiles published before the period (the last `retire_period_days`, today included)
        whose opens over it stayed under `retire_min_opens`, that were degraded at least `retire_max_outages`
        times in it, or that the ratings name; each with its figures and reasons. Lowest use first."""
        today = today or business_day()
        start, end = self._period(today)
        first_day = dt.datetime.combine(start, dt.time(), BUSINESS_TZ)
        pool = await self._usage.report_tiles(conn, organisation_id=None, shown_before=first_day, limit=limit)
        if len(pool) == limit:
            _log.warning("retirement candidates: more tiles than the report reads", limit=limit)
        return RetirementCandidates(
            start=start,
            end=end,
            period_days=self.settings.retire_period_days,
            min_opens=self.settings.retire_min_opens,
            max_outages=self.settings.retire_max_outages,
            candidates=await self._candidates(conn, pool, start, end),
        )

    async def _candidates(
        self, conn: Connection, pool: Sequence[ReportTileRow], start: dt.date, end: dt.date
    ) -> list[RetirementCandidate]:
        ids = [t.id for t in pool]
        period = {p.tile_id: p for p in await self._usage.period(conn, ids, start, end)}
        rated = await self._ratings.poorly_rated(conn, ids, start, end) if self._ratings and ids else {}
        found: list[RetirementCandidate] = []
        for tile in pool:
            figures_ = totals(period.get(tile.id))
            reasons = []
            if figures_.opens < self.settings.retire_min_opens:
                reasons.append("low_use")
            if figures_.outages >= self.settings.retire_max_outages:
                reasons.append("health_failures")
            if tile.id in rated:
                reasons.append("bad_ratings")
            if not reasons:
                continue
            assert tile.first_published_at is not None  # the pool holds published tiles only
            found.append(
                RetirementCandidate(
                    tile_id=tile.id,
                    organisation_id=tile.organisation_id,
                    organisation_name=tile.organisation_name,
                    name=tile.name,
                    state=tile.state,
                    first_published_at=tile.first_published_at,
                    figures=figures_,
                    reasons=reasons,
                    ratings=rated.get(tile.id),
                )
            )
        found.sort(key=lambda c: (c.figures.opens, c.name, str(c.tile_id)))
        return found

    async def retire_candidate(
        self, conn: Connection, caller: Caller, tile_id: uuid.UUID, reason: str, today: dt.date | None = None
    ) -> tuple[RetirementCandidate, str]:
        """Retires a tile the report lists, in one step: the department's notice carries the reviewer's reason
        and the figures that listed it. 409 `not-a-retirement-candidate` when it is not (or no longer) listed."""
        today = today or business_day()
        start, end = self._period(today)
        first_day = dt.datetime.combine(start, dt.time(), BUSINESS_TZ)
        pool = await self._usage.report_tiles(
            conn, organisation_id=None, shown_before=first_day, limit=1, tile_id=tile_id
        )
        listed = await self._candidates(conn, pool, start, end)
        if not listed:
            if await self._tile_rows.get(conn, tile_id) is None:
                raise not_found("tile_id: no such tile")
            raise DomainError(
                409,
                "not-a-retirement-candidate",
                "the tile is not a retirement candidate (its use and health over the period are within the "
                "thresholds, it is newer than the period, or it is not live): retire it with the plain retire",
            )
        candidate = listed[0]
        told = f"{reason}（{self.why(candidate, start, end)}）"
        await self._tiles.retire(conn, caller, tile_id, told[:1000])
        return candidate, told

    def why(self, candidate: RetirementCandidate, start: dt.date, end: dt.date) -> str:
        """The figures that listed a candidate, as the department reads them."""
        f = candidate.figures
        parts = []
        if "low_use" in candidate.reasons:
            parts.append(
                f"{start:%Y-%m-%d}至{end:%Y-%m-%d}打开{f.opens}次，低于{self.settings.retire_min_opens}次"
            )
        if "health_failures" in candidate.reasons:
            parts.append(f"期间服务故障{f.outages}次")
        if "bad_ratings" in candidate.reasons:
            parts.append(f"评价较差：{candidate.ratings}")
        return "；".join(parts)

    # -- jobs --------------------------------------------------------------------------------------------------

    async def flush_impressions(self, pool: Pool, today: dt.date | None = None) -> dict[str, int]:
        """Adds the impressions counted in Redis to the daily figures, exactly once (module docstring), for
        today and the days before it that Redis may still hold."""
        today = today or business_day()
        counts = {"batches": 0, "applied": 0, "impressions": 0}
        for back in range(_FLUSH_DAYS + 1):
            day = today - dt.timedelta(days=back)
            for _ in range(3):  # a twin left by an unfinished flush, then the live hash
                taken = await self._take_batch(day)
                if taken is None:
                    break
                batch_id, tile_counts = taken
                async with pool.acquire() as conn, conn.transaction():
                    applied = await self._usage.add_impressions(conn, batch_id, day, tile_counts)
                await self._done(
                    keys=[_FLUSHING.format(day=_day_key(day))], args=[str(batch_id), _BATCH_FIELD]
                )
                counts["batches"] += 1
                if applied:
                    counts["applied"] += 1
                    counts["impressions"] += sum(tile_counts.values())
        return counts

    async def _take_batch(self, day: dt.date) -> tuple[uuid.UUID, dict[uuid.UUID, int]] | None:
        key = _day_key(day)
        reply = await self._take(
            keys=[_LIVE.format(day=key), _FLUSHING.format(day=key)], args=[str(uuid.uuid4()), _BATCH_FIELD]
        )
        if not reply:
            return None
        fields = {
            (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in zip(reply[::2], reply[1::2], strict=True)
        }
        batch_id = uuid.UUID(fields.pop(_BATCH_FIELD))
        tile_counts: dict[uuid.UUID, int] = {}
        for field, value in fields.items():
            try:
                tile_counts[uuid.UUID(field)] = int(value)
            except ValueError:  # not ours: dropped with the batch
                _log.warning("impression field dropped", field=field[:64])
        return batch_id, tile_counts

    async def refresh_scores(self, pool: Pool, today: dt.date | None = None) -> dict[str, int]:
        """The scores that rank tiles of equal relevance in search and the catalogue's order: unique residents
        per day over the last 28 days, each day weighing 0.9 per day of age."""
        today = today or business_day()
        async with pool.acquire() as conn, conn.transaction():
            scores = await self._usage.recent_residents(conn, today - dt.timedelta(days=27), today)
            updated = await self._tiles.set_usage_scores(conn, scores)
        return {"tiles": updated}

    async def purge(self, pool: Pool, today: dt.date | None = None) -> dict[str, int]:
        """Who opened what is kept `opens_retention_days`: older days keep only their counts. Applied impression
        batch ids are kept 30 days (far longer than Redis keeps a day's counts)."""
        today = today or business_day()
        before = today - dt.timedelta(days=self.settings.opens_retention_days)
        async with pool.acquire() as conn, conn.transaction():
            opens = await self._usage.close_and_purge(conn, before)
            batches = await self._usage.purge_batches(conn, now() - dt.timedelta(days=30))
        return {"opens": opens, "impression_batches": batches}
