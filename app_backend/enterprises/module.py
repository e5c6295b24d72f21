"""The enterprises domain as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.service import AuditTrail
from app_backend.enterprises.controllers import EnterpriseAdminController, EnterpriseController
from app_backend.enterprises.service import EnterpriseServices
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform


async def start(platform: Platform) -> EnterpriseServices:
    return EnterpriseServices.create(
        platform.settings, platform.cipher, platform.get(AuditTrail), platform.get(IdentityServices).directory
    )


def provide_enterprises(state: State) -> EnterpriseServices:
    enterprises: EnterpriseServices = state.enterprises
    return enterprises


module = DomainModule(
    name="enterprises",
    start=start,
    requires=["audit", "identity"],
    routes=[EnterpriseController, EnterpriseAdminController],
    dependencies={"enterprises": Provide(provide_enterprises, sync_to_thread=False)},
    signature_types=[EnterpriseServices],
    migrations="app_backend.enterprises",
    migrated_as={"0001_enterprises.sql": ("app_backend", "0001_identity.sql")},
)
