"""The one-login domain as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.audit.service import AuditTrail
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from app_backend.oidc.controllers import (
    ConsentController,
    DataAccessController,
    DiscoveryController,
    OidcClientAdminController,
    OidcController,
)
from app_backend.oidc.keys import IdTokenKeys
from app_backend.oidc.service import OidcService
from app_backend.oidc.tasks import (
    deliver_backchannel_logouts,
    purge_spent_codes_and_tokens,
    stage_due_id_token_key,
)
from app_backend.organisations.service import OrganisationServices


async def start(platform: Platform) -> OidcService:
    return OidcService(
        platform.settings,
        platform.pool,
        platform.redis,
        platform.get(AuditTrail),
        platform.get(IdentityServices),
        platform.get(OrganisationServices),
        # The keys reload their rows on the side pool: a token request holds a request connection while its
        # ID token is signed, and must never wait for a second one from the same pool.
        IdTokenKeys(platform.side_pool, platform.cipher),
    )


def provide_oidc(state: State) -> OidcService:
    oidc: OidcService = state.oidc
    return oidc


module = DomainModule(
    name="oidc",
    start=start,
    requires=["audit", "identity", "organisations"],
    routes=[
        DiscoveryController,
        OidcController,
        OidcClientAdminController,
        ConsentController,
        DataAccessController,
    ],
    dependencies={"oidc": Provide(provide_oidc, sync_to_thread=False)},
    signature_types=[OidcService],
    jobs=[deliver_backchannel_logouts, stage_due_id_token_key, purge_spent_codes_and_tokens],
    cron=[
        CronJob(deliver_backchannel_logouts, cron="* * * * *"),
        CronJob(stage_due_id_token_key, cron="23 * * * *"),
        CronJob(purge_spent_codes_and_tokens, cron="47 3 * * *"),
    ],
    migrations="app_backend.oidc",
    append_only=["oidc.releases"],
)
