"""The resident's home as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.home.controllers import HomeController, NoticeAdminController, PinsController
from app_backend.home.service import HomeService
from app_backend.identity.service import IdentityServices
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
    # What the home shows of the resident follows their own changes at once: reads and deletions of messages,
    # the district they choose, the level a real-name verification gives.
    platform.get(NotificationService).on_inbox_change(home.forget)
    identity = platform.get(IdentityServices)
    identity.events.on_region_chosen(home.forget)
    identity.events.on_identity_settled(home.forget)
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
    requires=["identity", "tiles", "codes", "notifications"],
    routes=[HomeController, PinsController, NoticeAdminController],
    dependencies={"home": Provide(provide_home, sync_to_thread=False)},
    signature_types=[HomeService],
    migrations="app_backend.home",
)
