"""code_service's public services: one object per process, started by its module (code_service/module.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from app_backend.enterprises.service import EnterpriseDirectory
from app_backend.identity.service import ResidentDirectory
from app_backend.kernel.admissions import Admissions
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from app_backend.kernel.messages import SendMessage
from app_backend.kernel.redis_batch import BatchRunner, RedisHealth
from code_service.codes.repository import SubjectRepository
from code_service.codes.service import CodeStatusNotices, FactsService, IssuingService
from code_service.entry.service import AdmissionDesk, AdmissionUploads, AttendeeLists, TicketCodes
from code_service.feeds.service import FeedService
from code_service.gates.service import DenyListService, TapService, TransitGates
from code_service.keys.service import KeyService, SceneKeyService
from code_service.verification.service import CLOCK_SKEW, ScanRecorder, VerificationService


@dataclass
class CodeServices:
    pool: asyncpg.Pool
    redis: Redis
    keys: KeyService
    scene_keys: SceneKeyService
    facts: FactsService
    issuing: IssuingService
    deny: DenyListService
    taps: TapService
    # What payments' transit fares ask of the gates: proven taps with their riders, debtors.
    transit_gates: TransitGates
    feeds: FeedService
    recorder: ScanRecorder
    verification: VerificationService
    # Tells a resident when what their code answers at a scan changes (code_status_changed messages).
    notices: CodeStatusNotices
    # Entry with the one code (the event scene): the domains' Admissions providers, asked in turn.
    admissions: AdmissionDesk
    # Printed ticket codes, signed for the domains that sell entry: ticket_codes.issue(ticket_id, occasion_id,
    # not_after) -> the code's text.
    ticket_codes: TicketCodes
    attendee_lists: AttendeeLists
    admission_uploads: AdmissionUploads

    @classmethod
    def create(
        cls,
        pool: asyncpg.Pool,
        redis: Redis,
        box: FieldCipher,
        residents: ResidentDirectory,
        enterprises: EnterpriseDirectory,
        health: RedisHealth,
        rider_secret: bytes,
        batches: BatchRunner,
        seal_key: bytes,
        skew: int = CLOCK_SKEW,
    ) -> CodeServices:
        keys = KeyService(pool, box)
        scene_keys = SceneKeyService(pool, box)
        facts = FactsService(pool, redis, residents, enterprises)
        deny = DenyListService(redis, keys)
        issuing = IssuingService(
            pool, redis, keys, facts, deny, enterprises, health, batches, scene_keys, seal_key
        )
        recorder = ScanRecorder(pool)
        notices = CodeStatusNotices()
        admissions = AdmissionDesk(pool)
        verification = VerificationService(
            redis,
            health,
            keys,
            facts,
            recorder,
            rider_secret,
            batches,
            skew,
            pool=pool,
            deny=deny,
            scene_keys=scene_keys,
            seal_key=seal_key,
            admissions=admissions,
        )
        return cls(
            pool=pool,
            redis=redis,
            keys=keys,
            scene_keys=scene_keys,
            facts=facts,
            issuing=issuing,
            deny=deny,
            taps=TapService(verification),
            feeds=FeedService(residents, facts, issuing, notices),
            transit_gates=TransitGates(deny),
            recorder=recorder,
            verification=verification,
            notices=notices,
            admissions=admissions,
            ticket_codes=TicketCodes(pool, keys),
            attendee_lists=AttendeeLists(admissions, keys),
            admission_uploads=AdmissionUploads(verification, admissions),
        )

    def use_admissions(self, provider: Admissions) -> None:
        """A domain that sells entry (tickets, bookings) hands over its Admissions provider when it starts; the
        event scene asks the providers in turn, the first answer that is not None wins (none: `no-ticket`)."""
        self.admissions.use(provider)

    def use_messages(self, send: SendMessage) -> None:
        """How residents are told of their code's status (notifications' send_platform, handed over when it
        starts)."""
        self.notices.use(send)

    async def account_status_changed(
        self, conn: Connection, resident_id: uuid.UUID, blocked: bool, *, changed: bool = True
    ) -> None:
        """A blocked account is refused online at once and by gates at their next deny-list sync (every live
        credential of the holder, kind `account`); it is issued no code or credential while blocked. Restoring it
        takes those entries off again, so a phone's credential of the day works again. When the status `changed`
        (not a block of a blocked account), the resident is told (a code_status_changed message)."""
        subject = await SubjectRepository().of_resident(conn, resident_id)
        if blocked:
            await self.deny.deny_holder(conn, "account", resident_id, "account blocked")
        else:
            await self.deny.allow_holder(conn, "account", resident_id, "account restored")
        if subject is not None:
            await self.deny.mark_account(subject, blocked, "account blocked")
            await self.facts.invalidate_resident(conn, resident_id)
        if changed:
            await self.notices.account_changed(conn, resident_id, blocked)

    async def identity_ended(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        """The resident's identity went to another account (identity's IdentityEvents): device credentials,
        which carry its entitlements offline, end and are denied; online codes answer from the account's facts,
        which no longer hold the identity. The account itself stays usable at L1."""
        await self.issuing.supersede_devices(conn, resident_id, reason)
        await self.facts.invalidate_resident(conn, resident_id)

    async def close(self) -> None:
        await self.recorder.close()
