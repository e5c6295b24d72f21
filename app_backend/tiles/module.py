"""Service tiles as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.service import AuditTrail
from app_backend.kernel.module import DomainModule, Platform
from app_backend.notifications.service import NotificationService
from app_backend.oidc.service import OidcService
from app_backend.tiles.controllers import (
    CatalogueController,
    DepartmentTilesController,
    TileAdminController,
    TileNoticesController,
    TileUseController,
)
from app_backend.tiles.service import TileService
from app_backend.tiles.tasks import (
    flush_tile_impressions,
    probe_tile_health,
    purge_tile_usage,
    score_tile_usage,
)


async def start(platform: Platform) -> TileService:
    tiles = TileService(
        platform.get(AuditTrail),
        platform.get(OidcService),
        platform.settings,
        platform.redis,
        platform.batches,
        platform.breaker,
    )
    # A resident who opens a department's tile has used its service: the department may message them.
    notifications = platform.get(NotificationService)
    tiles.usage.use_service_users(notifications.record_service_use)
    # A department broadcasts to the residents who opened its tile: notifications pages them from the usage.
    notifications.use_tile_users(tiles.usage)
    return tiles


def provide_tiles(state: State) -> TileService:
    tiles: TileService = state.tiles
    return tiles


module = DomainModule(
    name="tiles",
    start=start,
    requires=["audit", "oidc", "notifications"],
    routes=[
        CatalogueController,
        TileUseController,
        DepartmentTilesController,
        TileNoticesController,
        TileAdminController,
    ],
    dependencies={"tiles": Provide(provide_tiles, sync_to_thread=False)},
    signature_types=[TileService],
    jobs=[probe_tile_health, flush_tile_impressions, score_tile_usage, purge_tile_usage],
    # Unique cron jobs (SAQ's default): one run of each at a time across every worker. The health job claims the
    # tiles it probes and the flush claims its batches, so even two runs at once would not count twice.
    cron=[
        CronJob(probe_tile_health, cron="* * * * *", timeout=300),
        CronJob(flush_tile_impressions, cron="* * * * *", timeout=120),
        CronJob(score_tile_usage, cron="7 * * * *", timeout=600),
        CronJob(purge_tile_usage, cron="27 4 * * *", timeout=1800),
    ],
    migrations="app_backend.tiles",
)
