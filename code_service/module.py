"""code_service as the composition sees it."""

from __future__ import annotations

import hashlib
import hmac

from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.enterprises.service import EnterpriseServices
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from code_service.auth import provide_holder, provide_scanner
from code_service.codes.controllers import CodeController, EnterpriseCodeController
from code_service.container import CodeServices
from code_service.entry.controllers import EntryGateController
from code_service.feeds.controllers import FeedController
from code_service.gates.controllers import GateController
from code_service.gates.tasks import purge_refused_taps
from code_service.keys.controllers import JwksController, SceneKeyController
from code_service.keys.tasks import stage_due_scene_epoch, stage_due_signing_key
from code_service.verification.controllers import ScanHistoryController, VerifyController
from code_service.verification.tasks import purge_replay_fallback


async def start(platform: Platform) -> CodeServices:
    settings = platform.settings
    identity = platform.get(IdentityServices)
    codes = CodeServices.create(
        platform.pool,
        platform.redis,
        platform.cipher,
        identity.directory,
        platform.get(EnterpriseServices).directory,
        platform.breaker,
        rider_secret=hmac.new(settings.token_pepper, b"rider-token", hashlib.sha256).digest(),
        batches=platform.batches,
        # Seals the holder field of every code (docs/code-format.md 4.4); never leaves the platform.
        seal_key=hmac.new(settings.token_pepper, b"code-holder-seal", hashlib.sha256).digest(),
    )
    # Codes accepted while Redis was away go back into it, so they are not accepted once more when it returns.
    platform.breaker.on_recovery(codes.verification.restore_claims)
    # A resident whose identity another account proved by face keeps no codes or credentials issued on it.
    identity.events.on_identity_ended(codes.identity_ended)
    identity.events.on_identity_settled(codes.facts.drop_resident)
    return codes


async def close(codes: CodeServices) -> None:
    await codes.close()


def provide_codes(state: State) -> CodeServices:
    codes: CodeServices = state.codes
    return codes


module = DomainModule(
    name="codes",
    start=start,
    close=close,
    requires=["identity", "enterprises"],
    routes=[
        JwksController,
        CodeController,
        EnterpriseCodeController,
        FeedController,
        VerifyController,
        ScanHistoryController,
        GateController,
        EntryGateController,
        SceneKeyController,
    ],
    dependencies={
        "codes": Provide(provide_codes, sync_to_thread=False),
        "holder": Provide(provide_holder, sync_to_thread=False),
        "scanner": Provide(provide_scanner),
    },
    signature_types=[CodeServices],
    jobs=[stage_due_signing_key, stage_due_scene_epoch, purge_replay_fallback, purge_refused_taps],
    cron=[
        # Hourly: a rotation is staged within the hour it falls due (publish lead 25 h; the period is days).
        CronJob(stage_due_signing_key, cron="41 * * * *"),
        # Hourly too, for scene-key epochs on the same schedule (weekly period).
        CronJob(stage_due_scene_epoch, cron="43 * * * *"),
        CronJob(purge_replay_fallback, cron="*/10 * * * *"),
        CronJob(purge_refused_taps, cron="17 3 * * *"),
    ],
    migrations="code_service",
    migrated_as={"0003_resident_facts.sql": ("app_backend.composition", "0001_code_ports.sql")},
)
