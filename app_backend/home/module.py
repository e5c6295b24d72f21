"""The resident's home as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.home.controllers import HomeController, NoticeAdminController, PinsController
from app_backend.home.service import HomeService
from app_backend.kernel.module import DomainModule, Platform
from app_backend.notifications.service import NotificationService
from app_backend.tiles.service import TileService
from code_service.container import CodeServices


async def start(platform: Platform) -> HomeService:
    home = HomeService(
        platform.get(TileService),
        platform.get(CodeServices).issuing,
        platform.pool,
        platform.redis,
        platform.batches,
        platform.settings.db_acquire_timeout,
    )
    # The unread count the home shows follows the resident's own reads and deletions at once.
    platform.get(NotificationService).on_inbox_change(home.forget)
    return home


async def close(home: HomeService) -> None:
    home.stop_listening()


def provide_home(state: State) -> HomeService:
    home: HomeService = state.home
    return home


module = DomainModule(
    name="home",
    start=start,
    close=close,
    requires=["tiles", "codes", "notifications"],
    routes=[HomeController, PinsController, NoticeAdminController],
    dependencies={"home": Provide(provide_home, sync_to_thread=False)},
    signature_types=[HomeService],
    migrations="app_backend.home",
)
