"""The health checks of live tiles (docs/decisions/0025-service-tiles.md, docs/operations.md "Service tiles").

A job every minute claims the tiles whose probe is due (every `TZT_TILE_HEALTH_INTERVAL` seconds; a claim holds
until the next one is due, so two runs at once never probe a tile twice) and probes each one's health-check URL
and H5 entry with a GET, at most `TZT_TILE_HEALTH_CONCURRENCY` at once, outside any transaction, through the
platform's client for URLs others gave us (app_backend/kernel/outbound.py: outside dev and test, a name that
resolves to a private, loopback or link-local address is refused, not probed). A round passes when every URL
answered below 400 within `TZT_TILE_HEALTH_TIMEOUT` seconds. Each round is kept (for
`TZT_TILE_HEALTH_HISTORY_DAYS`) with its status and latency, and counted in the day's figures. Then, in one
transaction per tile:

- after `TZT_TILE_HEALTH_FAILURES` failed rounds in a row, the tile is **degraded** (residents see it as
  temporarily unavailable) and the department is told;
- a degraded live tile whose department set `auto_suspend` is **suspended** by the health checks once it has been
  failing for `TZT_TILE_HEALTH_SUSPEND_MINUTES`, through the state machine with the health `Caller` (once per run
  of failures: a department that resumes it while it still fails keeps it live, degraded);
- a round that passes clears the degradation and **resumes** a suspension the health checks made (never one by
  operations or the department), and the department is told each time.

What residents see changed is announced once committed (`TileService.changed`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import httpx
import structlog

from app_backend.kernel import outbound
from app_backend.kernel.clock import BUSINESS_TZ, business_day, now
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import not_found
from app_backend.kernel.settings import TileSettings
from app_backend.tiles.repository import HealthRepository, ProbeTargetRow, TileRepository
from app_backend.tiles.schemas import DEGRADED_NOTICE, Probe, TileHealth

if TYPE_CHECKING:
    from app_backend.tiles.service import Caller, TileService

_log = structlog.get_logger("tiles.health")
_REASON_LIMIT = 480


class ProbeResult(NamedTuple):
    target: str  # health_check_url or entry.h5_url
    ok: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None


class HealthChecks:
    def __init__(
        self,
        tiles: TileService,
        settings: TileSettings,
        *,
        allow_private: bool,
        caller: Caller,
        clock: Callable[[], dt.datetime] = now,
        resolver: outbound.Resolver = outbound.resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._tiles = tiles
        self.settings = settings
        self._allow_private = allow_private
        self._caller = caller
        self._clock = clock
        self._resolver = resolver
        self._transport = transport
        self._repo = HealthRepository()
        self._rows = TileRepository()

    async def run(self, pool: Pool, only: Sequence[uuid.UUID] | None = None) -> dict[str, int]:
        """One run of the job: probes the tiles due (`only`: of these), applies the verdicts, drops old history.
        Returns counts for the log."""
        counts = {"probed": 0, "failed": 0, "changed": 0}
        if self.settings.health_interval <= 0:
            return counts
        at = self._clock()
        async with pool.acquire() as conn:
            due = await self._repo.claim_due(conn, at, self.settings.health_interval, only)
        if due:
            limit = asyncio.Semaphore(self.settings.health_concurrency)
            async with outbound.client(self.settings.health_timeout, self._transport) as http:
                rounds = await asyncio.gather(*(self._probe_tile(http, limit, tile) for tile in due))
            changed = []
            for tile, probes in zip(due, rounds, strict=True):
                counts["probed"] += 1
                counts["failed"] += not all(p.ok for p in probes)
                async with pool.acquire() as conn, conn.transaction():
                    if await self._apply(conn, tile, probes, at):
                        changed.append(tile.id)
            counts["changed"] = len(changed)
            for tile_id in changed:
                await self._tiles.changed(tile_id)
        async with pool.acquire() as conn:
            await self._repo.purge(conn, at - dt.timedelta(days=self.settings.health_history_days))
        return counts

    # -- probing ---------------------------------------------------------------------------------------------

    async def _probe_tile(
        self, http: httpx.AsyncClient, limit: asyncio.Semaphore, tile: ProbeTargetRow
    ) -> list[ProbeResult]:
        targets = [("health_check_url", tile.health_url), ("entry.h5_url", tile.h5_url)]
        async with limit:
            return [await self.probe(http, name, url) for name, url in targets if url]

    async def probe(self, http: httpx.AsyncClient, target: str, url: str) -> ProbeResult:
        """One GET of `url`: passes below 400 (a redirect to a log-in page is a service that answers); its status
        and the time to its status line. Redirects are not followed, the body is not read."""
        started = time.monotonic()
        try:
            pinned = await outbound.pin(url, allow_private=self._allow_private, resolver=self._resolver)
            async with http.stream(
                "GET", pinned.url, headers={"Host": pinned.host_header}, extensions=pinned.extensions
            ) as answer:
                status = answer.status_code
        except outbound.Refused as exc:
            return ProbeResult(target, False, None, None, f"refused: {exc}")
        except httpx.TimeoutException:
            return ProbeResult(target, False, None, _ms(started), "timeout")
        except httpx.HTTPError as exc:
            return ProbeResult(target, False, None, _ms(started), type(exc).__name__)
        ok = status < 400
        return ProbeResult(target, ok, status, _ms(started), None if ok else f"HTTP {status}")

    # -- verdicts --------------------------------------------------------------------------------------------

    async def _apply(
        self, conn: Connection, target: ProbeTargetRow, probes: Sequence[ProbeResult], at: dt.datetime
    ) -> bool:
        """Records the round and moves the tile (module docstring); returns whether residents' view changed."""
        tile = await self._rows.lock(conn, target.id)
        if tile is None or tile.state not in ("live", "suspended"):
            return False  # retired since it was claimed
        error = "; ".join(f"{p.target}: {p.error}" for p in probes if not p.ok) or None
        run = await self._repo.record_round(
            conn,
            tile.id,
            at,
            business_day(at),
            [(p.target, p.ok, p.status_code, p.latency_ms, p.error) for p in probes],
            error,
        )
        tiles, caller = self._tiles, self._caller
        if error is None:
            changed = await tiles.report_health(conn, caller, tile.id, "ok", "健康检查恢复正常")
            if tile.state == "suspended" and tile.suspended_by == "health":
                await tiles.resume(conn, caller, tile.id, "健康检查恢复正常，自动恢复上线")
                changed = True
            return changed
        changed = False
        degraded = tile.health == "degraded"
        if not degraded and run.consecutive_failures >= self.settings.health_failures:
            reason = f"连续{run.consecutive_failures}次健康检查失败：{error}"[:_REASON_LIMIT]
            if await tiles.report_health(conn, caller, tile.id, "degraded", reason):
                await self._repo.count_outage(conn, tile.id, business_day(at))
                degraded = changed = True
        outage = dt.timedelta(minutes=self.settings.health_suspend_minutes)
        failing_since = run.failing_since or at
        long_outage = at - failing_since >= outage
        if (
            degraded
            and target.auto_suspend
            and tile.state == "live"
            and long_outage
            and not run.suspended_in_run
        ):
            since = failing_since.astimezone(BUSINESS_TZ)
            reason = f"自{since:%Y-%m-%d %H:%M}起健康检查持续失败，已自动暂停：{error}"[:_REASON_LIMIT]
            await tiles.suspend(conn, caller, tile.id, reason, DEGRADED_NOTICE)
            await self._repo.mark_suspended_in_run(conn, tile.id)
            changed = True
        return changed

    # -- what departments and operations read ----------------------------------------------------------------

    async def view(self, conn: Connection, caller: Caller, tile_id: uuid.UUID, limit: int = 50) -> TileHealth:
        """A tile's health as its department (only its own) or operations see it, with its latest probes."""
        tile = await self._rows.get(conn, tile_id)
        if tile is None or (caller.kind == "department" and tile.organisation_id != caller.organisation_id):
            raise not_found(
                "tile_id: no tile of yours with this id"
                if caller.kind == "department"
                else "tile_id: no such tile"
            )
        state = await self._repo.state(conn, tile_id)
        probes = await self._repo.history(conn, tile_id, limit)
        return TileHealth(
            tile_id=tile.id,
            state=tile.state,
            suspended_by=tile.suspended_by,
            health=tile.health,
            health_reason=tile.health_reason,
            consecutive_failures=state.consecutive_failures if state else 0,
            failing_since=state.failing_since if state else None,
            last_probed_at=state.last_probed_at if state else None,
            last_ok_at=state.last_ok_at if state else None,
            next_probe_at=state.next_probe_at if state else None,
            probes=[
                Probe(
                    probed_at=p.probed_at,
                    target=p.target,
                    ok=p.ok,
                    status_code=p.status_code,
                    latency_ms=p.latency_ms,
                    error=p.error,
                )
                for p in probes
            ],
        )


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
