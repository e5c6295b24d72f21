"""The identity domain as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.service import AuditTrail
from app_backend.identity.auth import RESIDENT
from app_backend.identity.controllers import (
    AuthController,
    DevController,
    MeController,
    ResidentAdminController,
)
from app_backend.identity.service import IdentityServices
from app_backend.identity.tasks import purge_expired_refresh_tokens
from app_backend.kernel.module import DomainModule, Platform


async def start(platform: Platform) -> IdentityServices:
    return IdentityServices.create(
        platform.settings,
        platform.redis,
        platform.pool,
        platform.side_pool,
        platform.cipher,
        platform.get(AuditTrail),
        platform.breaker,
        platform.batches,
    )


def provide_identity(state: State) -> IdentityServices:
    identity: IdentityServices = state.identity
    return identity


module = DomainModule(
    name="identity",
    start=start,
    requires=["audit"],
    routes=[AuthController, MeController, ResidentAdminController],
    dev_routes=[DevController],
    dependencies={"identity": Provide(provide_identity, sync_to_thread=False), **RESIDENT},
    signature_types=[IdentityServices],
    jobs=[purge_expired_refresh_tokens],
    cron=[CronJob(purge_expired_refresh_tokens, cron="37 3 * * *")],
    migrations="app_backend.identity",
    migrated_as={"0001_identity.sql": ("app_backend", "0001_identity.sql")},
)
