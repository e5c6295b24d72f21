"""mini_programs as the composition sees it."""

from __future__ import annotations

import aiohttp
import httpx
from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.service import AuditTrail
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from mini_programs.alipay import AlipayMiniProgram
from mini_programs.config import load_apps
from mini_programs.controllers import MiniProgramIdentityController, MiniProgramLoginController
from mini_programs.service import MiniProgramService
from mini_programs.wechat import WechatMiniProgram
from payments.container import PaymentServices


async def start(platform: Platform) -> MiniProgramService:
    """The configured mini-programs (the local sandboxes in dev, started by `tzt serve`); without configuration
    every login answers 400 naming app_id. Mini-program payments take their payer from here."""
    settings = platform.settings
    apps = load_apps(settings.mini_program_config, allow_http=settings.is_dev)
    http = httpx.AsyncClient()
    # WeChat's connector has its own pool (mini_programs/wechat.py, LoopHttp: why aiohttp).
    wechat_http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    service = MiniProgramService(
        platform.pool,
        apps,
        {a.app_id: WechatMiniProgram(a, platform.redis, wechat_http) for a in apps.wechat.values()},
        {a.app_id: AlipayMiniProgram(a, http) for a in apps.alipay.values()},
        platform.get(IdentityServices),
        platform.get(AuditTrail),
        platform.cipher,
        http,
        wechat_http,
    )
    platform.get(PaymentServices).orders.use_mini_program_payers(service.payer_id)
    return service


async def close(service: MiniProgramService) -> None:
    await service.aclose()


def provide_mini(state: State) -> MiniProgramService:
    mini: MiniProgramService = state.mini_programs
    return mini


module = DomainModule(
    name="mini_programs",
    start=start,
    close=close,
    requires=["audit", "identity", "payments"],
    routes=[MiniProgramLoginController, MiniProgramIdentityController],
    dependencies={"mini": Provide(provide_mini, sync_to_thread=False)},
    signature_types=[MiniProgramService],
    migrations="mini_programs",
)
