"""Service tiles as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.service import AuditTrail
from app_backend.kernel.module import DomainModule, Platform
from app_backend.oidc.service import OidcService
from app_backend.tiles.controllers import (
    CatalogueController,
    DepartmentTilesController,
    TileAdminController,
    TileNoticesController,
)
from app_backend.tiles.service import TileService


async def start(platform: Platform) -> TileService:
    return TileService(platform.get(AuditTrail), platform.get(OidcService), platform.settings.is_dev)


def provide_tiles(state: State) -> TileService:
    tiles: TileService = state.tiles
    return tiles


module = DomainModule(
    name="tiles",
    start=start,
    requires=["audit", "oidc"],
    routes=[CatalogueController, DepartmentTilesController, TileNoticesController, TileAdminController],
    dependencies={"tiles": Provide(provide_tiles, sync_to_thread=False)},
    signature_types=[TileService],
    migrations="app_backend.tiles",
)
