"""The tiles' jobs: the health checks, the impressions' flush, the scores that rank tiles by use, and the purge of
who opened what past its retention (app_backend/tiles/health.py, usage.py)."""

from __future__ import annotations

from typing import Any

from app_backend.tiles.service import TileService


async def probe_tile_health(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TileService).health.run(platform.pool)


async def flush_tile_impressions(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TileService).usage.flush_impressions(platform.pool)


async def score_tile_usage(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TileService).usage.refresh_scores(platform.pool)


async def purge_tile_usage(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TileService).usage.purge(platform.pool)
