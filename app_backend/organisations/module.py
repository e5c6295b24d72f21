"""The organisations domain as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.service import AuditTrail
from app_backend.kernel.module import DomainModule, Platform
from app_backend.organisations.controllers import MachineController, OrganisationAdminController
from app_backend.organisations.service import OrganisationServices
from app_backend.organisations.tasks import purge_used_nonces


async def start(platform: Platform) -> OrganisationServices:
    organisations = OrganisationServices.create(
        platform.settings,
        platform.redis,
        platform.cipher,
        platform.get(AuditTrail),
        platform.breaker,
        platform.batches,
    )
    # Nonces used while Redis was away go back into it, so a request cannot pass once more when it returns.
    platform.breaker.on_recovery(lambda: organisations.machine_auth.restore_nonces(platform.pool))
    return organisations


def provide_organisations(state: State) -> OrganisationServices:
    organisations: OrganisationServices = state.organisations
    return organisations


module = DomainModule(
    name="organisations",
    start=start,
    requires=["audit"],
    routes=[OrganisationAdminController, MachineController],
    dependencies={"organisations": Provide(provide_organisations, sync_to_thread=False)},
    signature_types=[OrganisationServices],
    jobs=[purge_used_nonces],
    cron=[CronJob(purge_used_nonces, cron="*/10 * * * *")],
    migrations="app_backend.organisations",
    migrated_as={
        "0001_organisations.sql": ("app_backend", "0001_identity.sql"),
        "0002_rate_limits.sql": ("app_backend", "0004_organisation_rate_limits.sql"),
    },
)
