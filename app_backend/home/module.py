"""The resident's home as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.home.controllers import HomeController, NoticeAdminController, PinsController
from app_backend.home.service import HomeService
from app_backend.kernel.module import DomainModule, Platform
from app_backend.tiles.service import TileService
from code_service.container import CodeServices


async def start(platform: Platform) -> HomeService:
    return HomeService(
        platform.get(TileService),
        platform.get(CodeServices).issuing,
        platform.pool,
        platform.redis,
        platform.batches,
        platform.settings.db_acquire_timeout,
    )


async def close(home: HomeService) -> None:
    home.stop_listening()


def provide_home(state: State) -> HomeService:
    home: HomeService = state.home
    return home


module = DomainModule(
    name="home",
    start=start,
    close=close,
    requires=["tiles", "codes"],
    routes=[HomeController, PinsController, NoticeAdminController],
    dependencies={"home": Provide(provide_home, sync_to_thread=False)},
    signature_types=[HomeService],
    migrations="app_backend.home",
)
