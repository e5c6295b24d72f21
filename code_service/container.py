"""code_service's object graph, built by the composition root from what it is handed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from app_backend.kernel.redis_batch import BatchRunner
from code_service.codes.controllers import CodeController, EnterpriseCodeController
from code_service.codes.repository import SubjectRepository
from code_service.codes.service import FactsService, IssuingService
from code_service.feeds.controllers import FeedController
from code_service.feeds.service import FeedService
from code_service.gates.controllers import GateController
from code_service.gates.service import DenyListService, TapService
from code_service.keys.controllers import JwksController
from code_service.keys.service import KeyService
from code_service.ports import Directory, RedisHealth, SecretBox, TransitEligibility
from code_service.verification.controllers import ScanHistoryController, VerifyController
from code_service.verification.service import ScanRecorder, VerificationService

ROUTES: list[type] = [
    JwksController,
    CodeController,
    EnterpriseCodeController,
    FeedController,
    VerifyController,
    ScanHistoryController,
    GateController,
]


@dataclass
class CodeServices:
    pool: asyncpg.Pool
    redis: Redis
    keys: KeyService
    facts: FactsService
    issuing: IssuingService
    deny: DenyListService
    taps: TapService
    feeds: FeedService
    recorder: ScanRecorder
    verification: VerificationService

    @classmethod
    def create(
        cls,
        pool: asyncpg.Pool,
        redis: Redis,
        box: SecretBox,
        directory: Directory,
        transit: TransitEligibility,
        health: RedisHealth,
        rider_secret: bytes,
        batches: BatchRunner,
        skew: int = 30,
    ) -> CodeServices:
        keys = KeyService(pool, box)
        facts = FactsService(pool, redis, directory, transit)
        deny = DenyListService(redis, keys)
        issuing = IssuingService(pool, redis, keys, facts, deny, directory, health, batches)
        recorder = ScanRecorder(pool)
        return cls(
            pool=pool,
            redis=redis,
            keys=keys,
            facts=facts,
            issuing=issuing,
            deny=deny,
            taps=TapService(),
            feeds=FeedService(directory, facts, issuing),
            recorder=recorder,
            verification=VerificationService(
                redis, health, keys, facts, recorder, rider_secret, batches, skew, pool=pool, deny=deny
            ),
        )

    async def account_status_changed(self, conn: Any, resident_id: uuid.UUID, blocked: bool) -> None:
        """A blocked account is refused online at once and by gates at their next deny-list sync."""
        subject = await SubjectRepository().of_resident(conn, resident_id)
        if blocked:
            await self.issuing.supersede_devices(conn, resident_id, "account blocked")
        if subject is not None:
            if blocked:
                await self.deny.deny(conn, "account", [subject], "account blocked")
            else:
                await self.deny.allow(conn, "account", [subject], "account restored")
            await self.facts.invalidate_resident(conn, resident_id)

    async def close(self) -> None:
        await self.recorder.close()
