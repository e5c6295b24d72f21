"""Facts about a code's holder (cached for the verify path) and issuing server codes and device credentials."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import secrets
import time
import uuid

import asyncpg
import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from redis.asyncio import Redis

from app_backend.enterprises.service import EnterpriseDirectory
from app_backend.identity.service import ResidentDirectory
from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import conflict, forbidden, invalid_field, not_found
from app_backend.kernel.messages import PlatformMessage, SendMessage
from app_backend.kernel.redis_batch import BatchRunner, RedisHealth
from code_service.auth import Holder
from code_service.codes.repository import (
    CREDENTIAL_GRACE,
    CredentialRepository,
    CredentialRow,
    FactsRepository,
    ResidentFactsRow,
    StatusChangeRow,
    SubjectFactsRow,
    SubjectRepository,
)
from code_service.codes.schemas import (
    DeviceCredential,
    DeviceCredentialInfo,
    Entitlements,
    IssuedCode,
    SubjectFacts,
)
from code_service.gates.service import DenyListService
from code_service.keys.service import KeyService, SceneKeyService
from code_service.verifier.format import (
    MAX_SERVER_LIFETIME,
    TYPE_ENTERPRISE,
    TYPE_PERSONAL,
    Flags,
    Health,
    Standing,
    compressed_point,
    encode_credential,
    encode_server_code,
    seal_holder,
)

_log = structlog.get_logger("codes")
FACTS_TTL = 300
CREDENTIAL_LIFETIME = 24 * 3600
CREDENTIAL_GRID = 600
SERVER_CODE_LIFETIME = MAX_SERVER_LIFETIME
_FACTS = msgspec.json.Decoder(SubjectFacts)
_ENCODE = msgspec.json.Encoder()


def facts_key(subject: bytes) -> str:
    # "facts2": the facts gained the holder's level (scene minimum levels); entries cached before that, without
    # it, would read as level 0 and refuse every scene until they expired.
    return f"facts2:{subject.hex()}"


def credential_key(credential_id: bytes) -> str:
    return f"cred:{credential_id.hex()}"


CREDENTIAL_RECORD_LEN = 80
RECORD_GRACE = CREDENTIAL_GRACE


def credential_record(credential: bytes, device_public: ec.EllipticCurvePublicKey) -> bytes:
    """What online verification keeps of a device credential the platform signed: the digest of its 127 bytes,
    then the device key as an uncompressed point (x ‖ y). A code whose credential bytes have this digest carries
    the platform's signature without checking it again, and its device key loads without a square root: one
    ECDSA verify and a point decompression fewer per online verification of a device code (docs/performance.md)."""
    point = device_public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return credential_digest(credential) + point[1:]


def credential_digest(credential: bytes) -> bytes:
    return hashlib.sha256(credential).digest()[:16]


# Each scene's minimum resident level (L1 phone, L2 real name, L3 face verified): the ONE place it is set. A code
# carries a scene's entitlement only for a holder at or above it, and online verification answers no-entitlement
# below it (docs/code-format.md section 7). An enterprise code's holder is the enterprise, which has no level; only
# its members are issued its code. The event scene carries no bit: its level is checked online, and an attendee
# list names only the device credentials of holders at or above it.
SCENE_MIN_LEVEL: dict[str, int] = {"transit": 2, "health": 2, "medical": 3, "enterprise": 1, "event": 2}


def meets_scene_level(facts: SubjectFacts, scene: str) -> bool:
    return facts.kind != "resident" or facts.level >= SCENE_MIN_LEVEL[scene]


def flags_of(facts: SubjectFacts) -> Flags:
    """The entitlements a code carries: the live facts, but only for the scenes the holder's level opens."""
    return Flags(
        health=Health[facts.health.upper()] if meets_scene_level(facts, "health") else Health.UNKNOWN,
        may_ride=facts.may_ride and meets_scene_level(facts, "transit"),
        insured=facts.insured and meets_scene_level(facts, "medical"),
        standing=Standing[facts.standing.upper()],
    )


def entitlements_of(facts: SubjectFacts) -> Entitlements:
    """What the holder is told their code carries (flags_of, in words)."""
    flags = flags_of(facts)
    # Below the scene's level the level is what to do first; a blocked account or a debt still says so.
    below = not meets_scene_level(facts, "transit")
    ride_reason = (
        "level-required" if below and facts.ride_reason in ("", "no-agreement") else facts.ride_reason
    )
    return Entitlements(
        health=flags.health.name.lower(),
        may_ride=flags.may_ride,
        ride_reason=ride_reason,
        insured=flags.insured,
    )


# What a code_status_changed message says, by what changed: the scene, never the colour or the insurance (the
# message may leave for WeChat, Alipay or a push provider; the resident sees the status on their code).
_NOTICES = {
    "health": (
        "码的健康状态已更新",
        "卫生健康部门更新了您的健康状态，您的泰州通码在健康核验时的扫码结果已随之改变。请打开泰州通查看您的码。",
    ),
    "medical": (
        "码的医保状态已更新",
        "医疗保障部门更新了您的参保状态，您的泰州通码在医院扫码时的医保核验结果已随之改变。请打开泰州通查看您的码。",
    ),
    "blocked": (
        "泰州通码已暂停使用",
        "您的泰州通账户已被暂停，暂停期间您的码在各场景扫码均不能通过。如有疑问请拨打12345热线。",
    ),
    "restored": ("泰州通码已恢复使用", "您的泰州通账户已恢复，您的码可以在各场景正常扫码使用。"),
}


def code_status_message(what: str, resident_id: uuid.UUID, change: str) -> PlatformMessage:
    """`what`: health, medical (a scene's answer changed), blocked or restored (every scene's); `change`: the id of
    the transaction that made the change, so the same change is one message however often it is told."""
    title, body = _NOTICES[what]
    at = dt.datetime.now(BUSINESS_TZ)
    return PlatformMessage(
        kind="code_status_changed",
        title=title,
        body=body,
        sender="codes",
        sender_name="泰州通",
        key=f"code-status:{what}:{resident_id}:{change}",
        params={
            "scene": what if what in ("health", "medical") else "all",
            "status": "changed" if what in ("health", "medical") else what,
            "changed_at": f"{at.year}年{at.month}月{at.day}日 {at:%H:%M}",
        },
    )


def _facts_in_change(resident_id: uuid.UUID, row: StatusChangeRow) -> SubjectFacts:
    return SubjectFacts(
        subject="",
        kind="resident",
        ref=str(resident_id),
        active=row.active,
        health=row.health,
        insured=row.insured,
        may_ride=row.may_ride and row.active,
        ride_reason=row.ride_reason,
        level=row.level,
    )


class CodeStatusNotices:
    """Tells a resident when what their code answers at a scan changes: one `code_status_changed` message through
    the notification service (the kernel's SendMessage port, which notifications hands over when it starts;
    without it nothing is sent), in the transaction making the change.

    Told: a department's feed changing the health colour or the insurance that a health or medical scan answers
    (`flags_of` before and after: not while the holder's level keeps the scene closed, nor while the account is
    blocked, since the scan answers the same), and operations blocking or restoring the account (every scan).
    Not told here: a debt (payments sends `fare_debt`), an identity taken over (identity sends an SMS). Only the
    change paths call this, never verification or taps."""

    def __init__(self) -> None:
        self._send: SendMessage | None = None
        self._facts = FactsRepository()

    def use(self, send: SendMessage) -> None:
        self._send = send

    async def health_fed(self, conn: Connection, resident_id: uuid.UUID, before: str) -> bool:
        """The colour changed from `before` ('' or 'unknown': none) to what the transaction now holds."""
        return await self._fed(conn, resident_id, "health", health=before or "unknown")

    async def insurance_fed(self, conn: Connection, resident_id: uuid.UUID, before: bool) -> bool:
        return await self._fed(conn, resident_id, "medical", insured=before)

    async def _fed(self, conn: Connection, resident_id: uuid.UUID, what: str, **before: object) -> bool:
        if self._send is None:
            return False
        row = await self._facts.in_change(conn, resident_id)
        after = _facts_in_change(resident_id, row)
        if not after.active or flags_of(after) == flags_of(msgspec.structs.replace(after, **before)):
            return False
        return await self._send(conn, resident_id, code_status_message(what, resident_id, row.change))

    async def account_changed(self, conn: Connection, resident_id: uuid.UUID, blocked: bool) -> bool:
        if self._send is None:
            return False
        change = await self._facts.change_id(conn)
        message = code_status_message("blocked" if blocked else "restored", resident_id, change)
        return await self._send(conn, resident_id, message)


class FactsService:
    """A holder's facts: read from PostgreSQL in ONE statement (a resident's: subject, identity, statuses and
    transit through the RESIDENT_FACTS function, see code_service/codes/repository.py) and cached in Redis.

    identity's `ResidentDirectory.resident_active / person_key_of / masked_name` and payments' `may_ride` are the
    reference answers that statement reproduces (tests/code_service/codes/test_display_round_trips.py); only
    `mask_name` and the enterprises' `EnterpriseDirectory.enterprise` are called here."""

    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, residents: ResidentDirectory, enterprises: EnterpriseDirectory
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._residents = residents
        self._enterprises = enterprises
        self._facts = FactsRepository()
        self._subjects = SubjectRepository()

    async def load(self, conn: Connection, subject: bytes) -> SubjectFacts | None:
        """Reads the holder's facts from PostgreSQL (one statement for a resident, two for an enterprise) and
        refreshes the cache."""
        row = await self._facts.of_subject(conn, subject)
        if row is None:
            return None
        facts = (
            self._resident(subject, row.ref, row)
            if row.kind == "resident"
            else await self._enterprise(conn, subject, row.ref)
        )
        await self._redis.set(facts_key(subject), _ENCODE.encode(facts), ex=FACTS_TTL)
        return facts

    async def load_resident(self, conn: Connection, resident_id: uuid.UUID) -> tuple[bytes, SubjectFacts]:
        """The resident's subject (created on first use) and facts in ONE statement, with no transaction of its
        own (a single statement is atomic; in the caller's transaction when there is one); refreshes the cache."""
        row = await self._facts.resident(conn, resident_id, secrets.token_bytes(8))
        assert row.subject is not None
        subject = row.subject
        facts = self._resident(subject, resident_id, row)
        await self._redis.set(facts_key(subject), _ENCODE.encode(facts), ex=FACTS_TTL)
        return subject, facts

    def _resident(
        self, subject: bytes, resident_id: uuid.UUID, row: ResidentFactsRow | SubjectFactsRow
    ) -> SubjectFacts:
        """A resident's row has every fact (RESIDENT_FACTS answers one row for any uuid and the statuses are
        coalesced): the defaults below only satisfy SubjectFactsRow's types, whose facts are NULL for an
        enterprise."""
        active = bool(row.active)
        return SubjectFacts(
            subject=subject.hex(),
            kind="resident",
            ref=str(resident_id),
            active=active,
            masked_name=self._residents.mask_name(row.name_enc) or "",
            health=row.health or "unknown",
            insured=bool(row.insured),
            may_ride=bool(row.may_ride) and active,
            ride_reason=(row.ride_reason or "") if active else "account-blocked",
            level=row.level or 0,
        )

    async def _enterprise(self, conn: Connection, subject: bytes, enterprise_id: uuid.UUID) -> SubjectFacts:
        facts = await self._enterprises.enterprise(conn, enterprise_id)
        if facts is None:
            return SubjectFacts(
                subject=subject.hex(), kind="enterprise", ref=str(enterprise_id), active=False
            )
        return SubjectFacts(
            subject=subject.hex(),
            kind="enterprise",
            ref=str(enterprise_id),
            name=facts.name,
            uscc=facts.uscc,
            standing=facts.standing,
        )

    def decode_cached(self, raw: object) -> SubjectFacts | None:
        """`raw`: a Redis reply (bytes, or None when the facts are not cached)."""
        return _FACTS.decode(raw) if isinstance(raw, bytes) and raw else None

    async def cached_or_load(self, subject: bytes) -> SubjectFacts | None:
        cached = self.decode_cached(await self._redis.get(facts_key(subject)))
        if cached is not None:
            return cached
        async with self._pool.acquire() as conn:
            return await self.load(conn, subject)

    async def drop_resident(self, resident_id: uuid.UUID) -> None:
        """Drops the cached facts on a connection of its own (for use after the caller's commit)."""
        async with self._pool.acquire() as conn:
            await self.invalidate_resident(conn, resident_id)

    async def invalidate_resident(self, conn: Connection, resident_id: uuid.UUID) -> None:
        subject = await self._subjects.of_resident(conn, resident_id)
        if subject is not None:
            await self._redis.delete(facts_key(subject))


def subject_key(resident_id: uuid.UUID) -> str:
    return f"subject-of:{resident_id}"


class IssuingService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: KeyService,
        facts: FactsService,
        deny: DenyListService,
        enterprises: EnterpriseDirectory,
        health: RedisHealth,
        batches: BatchRunner,
        scene_keys: SceneKeyService,
        seal_key: bytes,
    ) -> None:
        self._scene_keys = scene_keys
        self._seal_key = seal_key
        self._pool = pool
        self._redis = redis
        self._batches = batches
        self._health = health
        self._keys = keys
        self._facts = facts
        self._deny = deny
        self._enterprises = enterprises
        self._subjects = SubjectRepository()
        self._credentials = CredentialRepository()
        self._subject_of: dict[uuid.UUID, bytes] = {}

    async def _resident_facts(self, conn: Connection, holder: Holder) -> tuple[bytes, SubjectFacts]:
        subject, facts = await self._facts.load_resident(conn, holder.resident_id)
        if not facts.active:
            raise forbidden("this account is blocked; no code can be issued")
        return subject, facts

    async def _cached_resident_facts(self, holder: Holder) -> tuple[bytes, SubjectFacts]:
        """The display path: one Redis round trip when warm (the caller's session and rate checks ride along),
        one PostgreSQL statement when cold."""
        # A resident's subject never changes, so once known it is kept in the process.
        subject = self._subject_of.get(holder.resident_id)
        raw_facts = await self._first_round_trip(holder, subject)
        if subject is None:
            cached_subject = raw_facts  # the first round trip asked for the subject instead
            subject = bytes(cached_subject) if isinstance(cached_subject, bytes) else None
            raw_facts = await self._redis.get(facts_key(subject)) if subject is not None else None
            if subject is not None:
                self._remember_subject(holder.resident_id, subject)
        facts = self._facts.decode_cached(raw_facts) if subject else None
        if subject is None or facts is None:
            # One statement and no transaction of its own (BEGIN and COMMIT would be two more round trips).
            async with self._pool.acquire() as conn:
                subject, facts = await self._resident_facts(conn, holder)
            await self._redis.set(subject_key(holder.resident_id), subject, ex=86400)
        elif not facts.active:
            raise forbidden("this account is blocked; no code can be issued")
        return bytes(subject), facts

    async def _first_round_trip(self, holder: Holder, subject: bytes | None) -> object:
        """The holder's unsettled checks (session revoked? rate limit?) and the cached facts, or the cached
        subject when this process does not know it yet, in one pipeline. Without Redis the checks refuse."""
        checks = holder.checks
        if checks is not None and not self._health.allow():
            checks.settle_locally()
        try:
            batch = self._batches.batch()
            settled = checks.queue(batch) if checks is not None else 0
            batch.get(facts_key(subject) if subject is not None else subject_key(holder.resident_id))
            results = await batch.execute()
        except self._health.unavailable as exc:
            self._health.failed(exc)
            if checks is not None:
                checks.settle_locally()
            raise
        self._health.succeeded()
        if checks is not None:
            checks.settle(results[:settled])
        return results[settled]

    def entitlements_key(self, resident_id: uuid.UUID) -> tuple[str, bool]:
        """What a caller's own Redis batch reads for the resident's entitlements (the home), and whether it is the
        cached facts (this process knows the resident's code subject) or the subject; then `entitlements_from`."""
        subject = self._subject_of.get(resident_id)
        return (subject_key(resident_id), False) if subject is None else (facts_key(subject), True)

    async def entitlements_from(
        self, resident_id: uuid.UUID, raw: object, is_facts: bool
    ) -> Entitlements | None:
        """The entitlements from the reply to `entitlements_key`: the facts at once, or, from the subject, one more
        Redis read (the first time this process sees the resident). None when not cached."""
        if is_facts:
            return self.entitlements_in(raw)
        if not isinstance(raw, bytes) or not raw:
            return None
        self._remember_subject(resident_id, raw)
        return self.entitlements_in(await self._redis.get(facts_key(raw)))

    def entitlements_in(self, raw: object) -> Entitlements | None:
        facts = self._facts.decode_cached(raw)
        return None if facts is None else entitlements_of(facts)

    def _remember_subject(self, resident_id: uuid.UUID, subject: bytes) -> None:
        if len(self._subject_of) >= 100_000:
            self._subject_of.pop(next(iter(self._subject_of)))
        self._subject_of[resident_id] = subject

    async def personal_code(self, holder: Holder) -> IssuedCode:
        subject, facts = await self._cached_resident_facts(holder)
        return await self._server_code(TYPE_PERSONAL, subject, facts, entitlements_of(facts))

    async def enterprise_code(self, conn: Connection, holder: Holder, enterprise_id: uuid.UUID) -> IssuedCode:
        if await self._enterprises.enterprise_of_member(conn, enterprise_id, holder.resident_id) is None:
            raise not_found("enterprise not found")
        subject = await self._subjects.get_or_create(conn, "enterprise", enterprise_id)
        facts = await self._facts.load(conn, subject)
        assert facts is not None
        return await self._server_code(TYPE_ENTERPRISE, subject, facts, None)

    async def _server_code(
        self, code_type: int, subject: bytes, facts: SubjectFacts, entitlements: Entitlements | None
    ) -> IssuedCode:
        signer = await self._keys.signer()
        epoch = await self._scene_keys.current()
        now = int(time.time())
        code_id = secrets.token_bytes(8)
        text = encode_server_code(
            signer.private_key,
            signer.kid_bytes,
            code_type,
            code_id,
            seal_holder(self._seal_key, code_id, subject),
            now,
            SERVER_CODE_LIFETIME,
            flags_of(facts),
            epoch.epoch,
            epoch.keys,
        )
        return IssuedCode(
            code=text,
            kind="enterprise" if code_type == TYPE_ENTERPRISE else "personal",
            issued_at=now,
            expires_at=now + SERVER_CODE_LIFETIME,
            entitlements=entitlements,
        )

    async def device_credential(
        self, conn: Connection, holder: Holder, public_key_b64: str
    ) -> DeviceCredential:
        device_public = _device_point(public_key_b64)
        device_key = compressed_point(device_public)
        subject, facts = await self._resident_facts(conn, holder)
        # A device key links the codes made with it, so it lives as long as one credential: a key bound before
        # (by anyone) is refused, and the phone makes a fresh pair (docs/code-format.md 5.2).
        if not await self._credentials.bind_device_key(conn, hashlib.sha256(device_key).digest()):
            raise conflict(
                "public_key: this key was bound to a credential before; make a fresh key pair for each credential"
            )
        signer = await self._keys.signer()
        epoch = await self._scene_keys.current()
        credential_id = secrets.token_bytes(8)
        # On a grid, so a credential's window is shared by every credential issued in the same ten minutes and does
        # not single a phone out to a stranger's reader (docs/code-format.md section 10, timing).
        now = int(time.time())
        not_before = now - now % CREDENTIAL_GRID
        not_after = not_before + CREDENTIAL_LIFETIME
        flags = flags_of(facts)
        raw = encode_credential(
            signer.private_key,
            signer.kid_bytes,
            credential_id,
            seal_holder(self._seal_key, credential_id, subject),
            not_before,
            not_after,
            flags,
            device_key,
            epoch.epoch,
            epoch.keys,
        )
        await self._credentials.insert(
            conn,
            credential_id,
            holder.resident_id,
            subject,
            device_key,
            dt.datetime.fromtimestamp(not_before, dt.UTC),
            dt.datetime.fromtimestamp(not_after, dt.UTC),
            flags.to_byte(),
        )
        await self._remember_credential(credential_id, credential_record(raw, device_public))
        return DeviceCredential(
            id=credential_id.hex(),
            credential=base64.b64encode(raw).decode(),
            kid=signer.kid,
            not_before=not_before,
            not_after=not_after,
            entitlements=entitlements_of(facts),
        )

    async def _remember_credential(self, credential_id: bytes, record: bytes) -> None:
        """Written before the transaction commits, which is harmless: the record only says that the platform
        signed these bytes, and it did. Without Redis the credential is still issued; online verification then
        checks its signature instead, and writes the record itself."""
        try:
            await self._redis.set(
                credential_key(credential_id), record, ex=CREDENTIAL_LIFETIME + RECORD_GRACE
            )
        except self._health.unavailable as exc:
            self._health.failed(exc)
            _log.warning("device credential record not written", error=type(exc).__name__)

    async def credentials(self, conn: Connection, holder: Holder) -> list[DeviceCredentialInfo]:
        return [_credential_info(r) for r in await self._credentials.list_for(conn, holder.resident_id)]

    async def revoke_device(self, conn: Connection, holder: Holder, credential_hex: str) -> None:
        try:
            credential_id = bytes.fromhex(credential_hex)
        except ValueError:
            credential_id = b""
        if len(credential_id) != 8:
            raise invalid_field("credential_id", "a credential id is 16 hexadecimal characters")
        if not await self._credentials.revoke(conn, credential_id, holder.resident_id, "revoked by holder"):
            raise not_found("no live device credential with this id")
        await self._deny.deny(conn, "credential", [credential_id], "revoked by holder")

    async def supersede_devices(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> list[bytes]:
        """A worse status, a lost identity: live credentials would carry stale entitlements offline, so they end
        (deny-list kind `credential`, for good). The holder's next credential carries the new status."""
        ended = await self._credentials.revoke_live_of(conn, resident_id, reason)
        await self._deny.deny(conn, "credential", ended, reason)
        return ended

    async def live_credentials(self, conn: Connection, resident_id: uuid.UUID) -> list[bytes]:
        """The ids of the holder's credentials whose codes may still be accepted (issued within the last 24 h, plus
        the verifiers' clock skew)."""
        return await self._credentials.live_ids_of(conn, resident_id, RECORD_GRACE)


def _credential_info(row: CredentialRow) -> DeviceCredentialInfo:
    return DeviceCredentialInfo(
        id=row.id.hex(),
        not_before=row.not_before,
        not_after=row.not_after,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _device_point(public_key_b64: str) -> ec.EllipticCurvePublicKey:
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except (binascii.Error, ValueError):
        raise invalid_field("public_key", "not a P-256 public point") from None
