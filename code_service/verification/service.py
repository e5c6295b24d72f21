"""Online verification: signatures and times in process, then one Redis round trip for the holder's live facts,
the deny marks and the single-use claim (without Redis: the code, and the deny list read from PostgreSQL); a device
code's credential is compared with the platform's record of it in that same round trip rather than by its
signature; the answer carries only what the scene needs; the scan is buffered and written in batches off the
verify path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import time
import uuid

import asyncpg
import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import Counter
from redis.asyncio import Redis

from app_backend.kernel.admissions import Admission
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import conflict, forbidden, invalid_field, not_found
from app_backend.kernel.redis_batch import BatchRunner, LocalClaims, RedisHealth
from code_service.auth import Scanner
from code_service.codes.repository import FactsRepository, SubjectRepository
from code_service.codes.schemas import SubjectFacts
from code_service.codes.service import (
    CREDENTIAL_RECORD_LEN,
    SCENE_MIN_LEVEL,
    FactsService,
    credential_digest,
    credential_key,
    credential_record,
    facts_key,
    meets_scene_level,
)
from code_service.entry.service import AdmissionDesk
from code_service.gates.service import DenyListService, deny_mark
from code_service.keys.service import KeyService, SceneKeyService
from code_service.verification.repository import ReplayFallbackRepository, ScanRepository, ScanValues
from code_service.verification.schemas import (
    ProvenCode,
    ScanRecord,
    VerifiedCode,
    VerifyAnswer,
    VoucherRedeemed,
)
from code_service.verifier.format import (
    EVENT_SCENE,
    FLAGS,
    MAX_CREDENTIAL_LIFETIME,
    MAX_SERVER_LIFETIME,
    SCENE_BITS,
    TYPE_ENTERPRISE,
    DeviceCode,
    Flags,
    FormatError,
    Health,
    ServerCode,
    Standing,
    TicketCode,
    UnsupportedVersion,
    clear_flags,
    decode,
    load_point,
    open_holder,
    verify_raw,
)
from code_service.verifier.offline import DEVICE_CODE_WINDOW

_P256 = ec.SECP256R1()

_log = structlog.get_logger("scans")
VOUCHER_TTL = 600
_TYPE_NAMES = {1: "personal", 2: "enterprise", 3: "device", 4: "ticket"}
_SINGLE_USE = frozenset({"transit", "medical"})
# How long a verification waits for PostgreSQL's deny list while Redis is unavailable, before answering from the
# code alone: short, since the point of the degraded answer is that it comes at once.
DEGRADED_DENY_WAIT = 0.25


def _deny_reason(denied: set[str], scene: str) -> str:
    """The online reasons, in the online order: the account, then the phone's credential, then (transit) debt."""
    if "account" in denied:
        return "denied-account"
    if "credential" in denied:
        return "denied-credential"
    if scene == "transit" and "debtor" in denied:
        return "in-debt"
    return ""


DEGRADED_VERIFICATIONS = Counter(
    "tzt_degraded_verifications_total",
    "Online verifications answered from the code alone because Redis was unavailable",
    ["scene"],
)


# The clock skew the platform allows in its verifications, online and of uploaded taps (a gate's clock against
# the code's window, an online verification's time against the tap's): published in docs/api.md, section Taps.
CLOCK_SKEW = 30


class EventAsk(msgspec.Struct, frozen=True):
    """What a venue's gate names with a scan in the event scene: the occasion and its entrance."""

    occasion_id: uuid.UUID
    entrance: str


def _admission_answer(admission: Admission, code_type: str, degraded: bool = False) -> VerifyAnswer:
    """The event scene's answer: admitted or why not, and only the section and seat (never the name)."""
    return VerifyAnswer(
        allowed=admission.admitted,
        reason=admission.reason,
        scene=EVENT_SCENE,
        code_type=code_type,
        degraded=degraded,
        section=admission.section,
        seat=admission.seat,
        re_entry=True if admission.re_entry else None,
    )


class _NotGenuine(Exception):
    """A code found not genuine after the decision's round trip (`_genuine_by_record`): refused, not recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _recorded_device_key(record: object, credential: bytes) -> ec.EllipticCurvePublicKey | None:
    """The device key of `credential` (its 127 bytes) when `record` is the platform's record of exactly these
    bytes (codes.service.credential_record), else None."""
    if not (
        isinstance(record, bytes)
        and len(record) == CREDENTIAL_RECORD_LEN
        and hmac.compare_digest(record[:16], credential_digest(credential))
    ):
        return None
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + record[16:])
    except ValueError:
        return None


def _used_key(code_id: bytes) -> str:
    return f"used:{code_id.hex()}"


async def _settle_alone(scanner: Scanner) -> None:
    if scanner.checks is not None:
        await scanner.checks.run()


def voucher_key(organisation_id: uuid.UUID, voucher: str) -> str:
    return f"voucher:{organisation_id}:{voucher}"


def _proven(verified: VerifiedCode) -> ProvenCode | str:
    """What a tap's code proves (VerificationService.prove_transit_code), or the reason it proves nothing."""
    if not verified.valid:
        return verified.reason
    if verified.code_type == "enterprise":
        return "wrong-code-type"
    if verified.reason != "ok":
        return verified.reason
    if verified.holder_kind != "resident" or verified.holder_id is None:
        return "unknown-holder"
    entries: tuple[tuple[str, bytes], ...] = ()
    if verified.credential_id is not None:
        # The deny list names credentials only (section 8): a lost phone, or a blocked account's phones.
        entries = (("credential", verified.credential_id), ("account", verified.credential_id))
    return ProvenCode(
        verified.holder_id, verified.replay_id, verified.credential_id, verified.code_type, entries
    )


class ScanRecorder:
    """Buffers scan records and writes them with COPY every `interval` seconds or `batch` records. A failed
    write keeps the records for the next attempt (up to `limit`), so a database hiccup loses nothing."""

    def __init__(
        self, pool: asyncpg.Pool, *, batch: int = 500, interval: float = 0.2, limit: int = 200_000
    ) -> None:
        self._pool = pool
        self._batch = batch
        self._interval = interval
        self._limit = limit
        self._buffer: list[ScanValues] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._repo = ScanRepository()

    def record(self, row: ScanValues) -> None:
        if len(self._buffer) < self._limit:
            self._buffer.append(row)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._buffer:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._buffer:
                batch, self._buffer = self._buffer[: self._batch], self._buffer[self._batch :]
                try:
                    async with self._pool.acquire() as conn:
                        await self._repo.insert_many(conn, batch)
                except (OSError, asyncpg.PostgresError) as exc:
                    self._buffer[:0] = batch
                    _log.warning(
                        "scan records not written yet; kept for retry",
                        error=type(exc).__name__,
                        pending=len(self._buffer),
                    )
                    return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def history(self, holder_ref: uuid.UUID, limit: int = 100) -> list[ScanRecord]:
        await self.flush()
        async with self._pool.acquire() as conn:
            rows = await self._repo.for_holder(conn, holder_ref, limit)
        return [
            ScanRecord(
                at=r.at, scene=r.scene, verdict=r.verdict, reason=r.reason, organisation=r.organisation_name
            )
            for r in rows
        ]


class VerificationService:
    def __init__(
        self,
        redis: Redis,
        health: RedisHealth,
        keys: KeyService,
        facts: FactsService,
        recorder: ScanRecorder,
        rider_secret: bytes,
        batches: BatchRunner,
        skew: int = CLOCK_SKEW,
        *,
        pool: asyncpg.Pool,
        deny: DenyListService,
        scene_keys: SceneKeyService,
        seal_key: bytes,
        admissions: AdmissionDesk | None = None,
    ) -> None:
        self._admissions = admissions or AdmissionDesk(pool)
        self._scene_keys = scene_keys
        self._seal_key = seal_key
        self._subjects = SubjectRepository()
        self._facts_rows = FactsRepository()
        self._redis = redis
        self._batches = batches
        self._pool = pool
        self._deny = deny
        self._health = health
        self._keys = keys
        self._facts = facts
        self._recorder = recorder
        self._rider_secret = rider_secret
        self._skew = skew
        self._local_claims = LocalClaims(ttl=MAX_SERVER_LIFETIME + DEVICE_CODE_WINDOW + 4 * skew)
        self._replay_fallback = ReplayFallbackRepository()

    @property
    def skew(self) -> int:
        """The clock skew this platform allows (CLOCK_SKEW unless configured)."""
        return self._skew

    async def verify(
        self,
        scanner: Scanner,
        text: str,
        scene: str,
        *,
        occasion_id: uuid.UUID | None = None,
        entrance: str | None = None,
    ) -> VerifyAnswer:
        """`scanner.checks`, when present, are the caller's unsettled Redis checks: every path settles them
        before it answers (in the decision's pipeline, or alone when the code is refused before that). The event
        scene names the occasion and the entrance (docs/code-format.md 7.1)."""
        if f"verify:{scene}" not in scanner.scopes:
            await _settle_alone(scanner)
            raise forbidden(f"scene: this verifier is not allowed the {scene} scene")
        event = None
        if scene == EVENT_SCENE:
            if occasion_id is None or not entrance:
                await _settle_alone(scanner)
                field = "occasion_id" if occasion_id is None else "entrance"
                raise invalid_field(
                    field, "the event scene names the occasion (session or slot) and the entrance"
                )
            event = EventAsk(occasion_id, entrance)
        try:
            code = decode(text)
        except UnsupportedVersion:
            await _settle_alone(scanner)
            return VerifyAnswer(allowed=False, reason="unsupported-version", scene=scene)
        except FormatError:
            await _settle_alone(scanner)
            return VerifyAnswer(allowed=False, reason="malformed", scene=scene)
        now = time.time()
        if isinstance(code, TicketCode):
            return await self._printed_ticket(scanner, code, scene, now, event)
        # The platform's own holder id, sealed in the code (docs/code-format.md 4.4): the signature checked below
        # covers the sealed bytes, so the id is as genuine as the code.
        subject = open_holder(self._seal_key, code.nonce, code.holder)
        code_type = _TYPE_NAMES[code.type]
        # A device code whose credential the platform has a record of is checked against the record in the
        # decision's own round trip (`_genuine_by_record`) instead of by its platform signature; any other code,
        # or one that may be refused, is checked here, in the order of docs/code-format.md section 6.
        by_record = (
            isinstance(code, DeviceCode)
            and scene != "enterprise"
            and await self._may_check_by_record(code, now)
            and self._health.allow()
        )
        if not by_record:
            problem = await self._check(code, now)
            if problem:
                await _settle_alone(scanner)
                return VerifyAnswer(allowed=False, reason=problem, scene=scene, code_type=code_type)
        if (scene == "enterprise") != (code.type == TYPE_ENTERPRISE):
            await _settle_alone(scanner)
            answer = VerifyAnswer(allowed=False, reason="wrong-code-type", scene=scene, code_type=code_type)
        else:
            # The breaker is asked once per round trip: while it is open, it lets one probe through.
            online = by_record or self._health.allow()
            try:
                answer = await self._decide(
                    scanner, code, subject, scene, code_type, now, online, by_record, event
                )
            except _NotGenuine as refused:
                return VerifyAnswer(allowed=False, reason=refused.reason, scene=scene, code_type=code_type)
        self._record(scanner, subject, scene, answer, code.replay_id)
        return answer

    async def _printed_ticket(
        self, scanner: Scanner, code: TicketCode, scene: str, now: float, event: EventAsk | None
    ) -> VerifyAnswer:
        """A printed ticket (type 4): genuine and in date, then admitted through its provider by its ticket id in
        the event scene only. It names no holder, so no scan record is kept here (the provider records the
        admission)."""
        problem = await self._check(code, now)
        await _settle_alone(scanner)
        if problem:
            return VerifyAnswer(allowed=False, reason=problem, scene=scene, code_type="ticket")
        if event is None:
            return VerifyAnswer(allowed=False, reason="wrong-code-type", scene=scene, code_type="ticket")
        if uuid.UUID(bytes=code.occasion_id) != event.occasion_id:
            return VerifyAnswer(allowed=False, reason="no-ticket", scene=scene, code_type="ticket")
        admission = await self._admissions.admit(
            event.occasion_id,
            event.entrance,
            scanner.organisation_id,
            dt.datetime.fromtimestamp(now, dt.UTC),
            ticket_id=uuid.UUID(bytes=code.ticket_id),
        )
        return _admission_answer(admission, "ticket")

    async def verify_code(self, conn: Connection, text: str, scene: str, at: float) -> VerifiedCode:
        """The public seam for paths that hold a scanned code's text (uploaded taps): steps 1-5 of
        docs/code-format.md section 6 at time `at` (Unix seconds) with this verifier's skew, then the scene's type
        and the entitlement the code itself carried (step 7, unmasked with the platform's scene keys), and the
        holder, from the sealed holder field. No deny list, no live status and no replay store: the caller decides
        those (for a tap: one entry and one exit per replay id). One statement (the holder's id) when genuine."""
        return (await self.verify_codes(conn, [(text, at)], scene))[0]

    async def verify_codes(
        self, conn: Connection, scanned: list[tuple[str, float]], scene: str
    ) -> list[VerifiedCode]:
        """`verify_code` for each (text, at), in order: the signatures and times in process, then the holders of
        every genuine code in one statement (a gate's upload of 5000 taps made 5000 round trips)."""
        checked = [await self._verified_alone(conn, text, scene, at) for text, at in scanned]
        subjects = list({c.subject for c in checked if c.valid and c.subject})
        holders = await self._subjects.get_many(conn, subjects) if subjects else {}
        found = []
        for verified in checked:
            row = holders.get(verified.subject) if verified.valid else None
            if row is not None:
                verified = msgspec.structs.replace(verified, holder_kind=row.kind, holder_id=row.ref)
            found.append(verified)
        return found

    async def _verified_alone(self, conn: Connection, text: str, scene: str, at: float) -> VerifiedCode:
        """`verify_code` but for the holder (holder_kind and holder_id left empty)."""
        try:
            code = decode(text)
        except UnsupportedVersion:
            return VerifiedCode(valid=False, reason="unsupported-version")
        except FormatError:
            return VerifiedCode(valid=False, reason="malformed")
        code_type = _TYPE_NAMES[code.type]
        # A key retired since `at` still proves what it signed then (an offline gate's taps arrive late).
        platform_key = await self._keys.public_key_at(conn, code.kid, at)
        if platform_key is None:
            return VerifiedCode(valid=False, reason="unknown-key", code_type=code_type)
        problem = await self._check(code, at, platform_key=platform_key)
        if problem:
            return VerifiedCode(valid=False, reason=problem, code_type=code_type)
        if isinstance(code, TicketCode):  # no holder, no flags: a ticket of one occasion, for its gates only
            return VerifiedCode(
                valid=True,
                reason="ok" if scene == EVENT_SCENE else "no-entitlement",
                code_type=code_type,
                replay_id=code.ticket_id,
                ticket_id=uuid.UUID(bytes=code.ticket_id),
                occasion_id=uuid.UUID(bytes=code.occasion_id),
            )
        subject = open_holder(self._seal_key, code.nonce, code.holder)
        # An epoch retired since `at` still reads what was issued with it (as platform_key above).
        epoch = await self._scene_keys.epoch_of_proof(conn, code.epoch)
        flags = clear_flags(code, epoch.keys).to_byte() if epoch is not None else 0
        reason = "ok"
        if scene == EVENT_SCENE:  # reads no flag bit: the ticket is the provider's to find
            reason = "no-entitlement" if code.type == TYPE_ENTERPRISE else "ok"
        elif scene not in SCENE_BITS or (scene == "enterprise") != (code.type == TYPE_ENTERPRISE):
            reason = "no-entitlement"
        elif epoch is None:
            reason = "no-scene-key"
        elif not flags & SCENE_BITS[scene]:
            reason = "no-entitlement"
        return VerifiedCode(
            valid=True,
            reason=reason,
            code_type=code_type,
            subject=subject,
            replay_id=code.replay_id,
            credential_id=code.credential_id if isinstance(code, DeviceCode) else None,
            flags=flags,
        )

    async def _check(
        self,
        code: ServerCode | DeviceCode | TicketCode,
        now: float,
        device_key: ec.EllipticCurvePublicKey | None = None,
        platform_key: ec.EllipticCurvePublicKey | None = None,
    ) -> str:
        """Steps 1.5 (the device key, unless given already loaded) to 5 of docs/code-format.md section 6, with
        the platform's signature (by the published key of the code's kid, unless given)."""
        if isinstance(code, DeviceCode) and device_key is None:
            try:
                device_key = load_point(code.device_key)
            except FormatError:
                return "malformed"
        key = platform_key or await self._keys.public_key(code.kid)
        if key is None:
            return "unknown-key"
        if isinstance(code, TicketCode):
            if not self._keys.signed(code.kid, key, code.signature, code.signed):
                return "bad-signature"
            if now < code.not_before - self._skew:
                return "not-yet-valid"
            return "expired" if now > code.not_after + self._skew else ""
        if isinstance(code, ServerCode):
            if not 1 <= code.lifetime <= MAX_SERVER_LIFETIME or not self._keys.signed(
                code.kid, key, code.signature, code.signed
            ):
                return "bad-signature"
            if now < code.issued_at - self._skew:
                return "not-yet-valid"
            return "expired" if now >= code.expires_at + self._skew else ""
        assert device_key is not None
        if not 0 < code.not_after - code.not_before <= MAX_CREDENTIAL_LIFETIME or not self._keys.signed(
            code.kid, key, code.credential_signature, code.credential
        ):
            return "bad-signature"
        if not verify_raw(device_key, code.device_signature, code.signed):
            return "bad-device-signature"
        return self._device_times(code, now)

    def _device_times(self, code: DeviceCode, now: float) -> str:
        skew = self._skew
        if now < code.not_before - skew or code.shown_at > now + skew:
            return "not-yet-valid"
        if now > code.not_after + skew or code.shown_at < now - DEVICE_CODE_WINDOW - skew:
            return "expired"
        return ""

    async def _may_check_by_record(self, code: DeviceCode, now: float) -> bool:
        """Whether nothing but the signatures is left to check: the kid is known and both windows hold. A code
        that fails here is refused for the reason `_check` finds first, as the format requires."""
        return await self._keys.public_key(code.kid) is not None and not self._device_times(code, now)

    async def _genuine_by_record(self, code: DeviceCode, record: object, now: float) -> str:
        """The signatures of a device code whose windows and kid were checked (`_may_check_by_record`): its
        credential's bytes against the platform's record of them (credential_record), then the device's own
        signature. Without a matching record, the platform's signature is checked after all, and a genuine
        credential's record is written (again) for the next time. Returns the refusal reason, or ""."""
        credential = code.credential + code.credential_signature
        device_key = _recorded_device_key(record, credential)
        if device_key is not None and verify_raw(device_key, code.device_signature, code.signed):
            return ""
        try:
            device_public = load_point(code.device_key)  # once, for the check and the record
        except FormatError:
            return "malformed"
        problem = await self._check(code, now, device_public)
        if not problem:  # the record was missing (evicted, Redis restarted empty) or wrong
            await self._write_record(code, credential, now, device_public)
        return problem

    async def _write_record(
        self, code: DeviceCode, credential: bytes, now: float, device_public: ec.EllipticCurvePublicKey
    ) -> None:
        record = credential_record(credential, device_public)
        try:
            batch = self._batches.batch()
            # Until the credential's end as this verifier counts it (skew included); at least a second.
            ttl = max(1, int(code.not_after - now) + 2 * self._skew)
            batch.set(credential_key(code.credential_id), record, ex=ttl)
            await batch.execute()
        except self._health.unavailable as exc:
            self._health.failed(exc)

    async def _decide(
        self,
        scanner: Scanner,
        code: ServerCode | DeviceCode,
        subject: bytes,
        scene: str,
        code_type: str,
        now: float,
        online: bool,
        by_record: bool,
        event: EventAsk | None = None,
    ) -> VerifyAnswer:
        """One Redis round trip: the caller's checks, the holder's live facts, the deny marks, the single-use
        claim and (`by_record`) the credential's record. Without Redis: the code and the deny list in PostgreSQL,
        flagged as degraded."""
        if online:
            checks = scanner.checks
            try:
                batch = self._batches.batch()
                settled = checks.queue(batch) if checks is not None else 0
                batch.get(facts_key(subject))
                batch.exists(deny_mark("account", subject))
                batch.exists(
                    deny_mark("credential", code.credential_id) if isinstance(code, DeviceCode) else "-"
                )
                if by_record:
                    assert isinstance(code, DeviceCode)
                    batch.get(credential_key(code.credential_id))
                if scene in _SINGLE_USE:
                    batch.set(
                        _used_key(code.code_id),
                        1,
                        nx=True,
                        ex=MAX_SERVER_LIFETIME + DEVICE_CODE_WINDOW + 4 * self._skew,
                    )
                results = await batch.execute()
            except self._health.unavailable as exc:
                self._health.failed(exc)
            else:
                self._health.succeeded()
                return await self._decide_online(
                    scanner, code, subject, scene, code_type, results, settled, now, by_record, event
                )
        await _settle_alone(scanner)  # the nonce held in PostgreSQL while Redis is unavailable
        if by_record:
            problem = await self._check(code, now)
            if problem:
                raise _NotGenuine(problem)
        denied = await self._denied_in_database(code, subject, scene)
        if event is not None:
            return await self._event_degraded(scanner, subject, code_type, denied, event, now)
        epoch = await self._scene_keys.epoch(code.epoch)
        flags = clear_flags(code, epoch.keys) if epoch is not None else FLAGS[0]
        return await self._decide_degraded(scanner, code, subject, scene, code_type, denied, flags)

    async def _denied_in_database(
        self, code: ServerCode | DeviceCode, subject: bytes, scene: str
    ) -> set[str] | None:
        """Without Redis, PostgreSQL answers instead, as briefly as the degraded answer allows: the deny list's
        change log (what gates get: a device credential revoked, or listed for its account or a debt) and the
        holder's account and transit status (one statement each), so a lost phone, a blocked account or a debtor
        is still refused, whichever code they show. If PostgreSQL cannot answer within DEGRADED_DENY_WAIT either,
        the answer comes from the code alone (None)."""
        try:
            async with asyncio.timeout(DEGRADED_DENY_WAIT), self._pool.acquire() as conn:
                denied: set[str] = set()
                if isinstance(code, DeviceCode):
                    entries = [("credential", code.credential_id), ("account", code.credential_id)]
                    if scene == "transit":
                        entries.append(("debtor", code.credential_id))
                    denied = await self._deny.denied_now(conn, entries)
                holder = await self._facts_rows.of_subject(conn, subject)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.warning("deny list not readable while redis is unavailable", error=type(exc).__name__)
            return None
        if holder is None or (holder.kind == "resident" and not holder.active):
            denied.add("account")
        elif scene == "transit" and holder.ride_reason == "in-debt":
            denied.add("debtor")
        return denied

    async def _decide_online(
        self,
        scanner: Scanner,
        code: ServerCode | DeviceCode,
        subject: bytes,
        scene: str,
        code_type: str,
        results: list[object],
        settled: int,
        now: float,
        by_record: bool,
        event: EventAsk | None = None,
    ) -> VerifyAnswer:
        # Read before any await: the hand-back of the outage's claims to Redis may finish meanwhile, and this
        # batch's claim, made first, would then stand alone.
        recovering = self._health.recovering
        raw, account_denied, credential_denied, *rest = results[settled:]
        record = rest.pop(0) if by_record else None
        claimed = bool(rest and rest[0])
        try:
            if scanner.checks is not None:
                # A refused request (replayed nonce, revoked key, rate limit) must not use up the code.
                scanner.checks.settle(results[:settled])
                if recovering:
                    await scanner.checks.recheck()
            if by_record:
                assert isinstance(code, DeviceCode)
                problem = await self._genuine_by_record(code, record, now)
                if problem:
                    raise _NotGenuine(problem)
        except Exception:
            if claimed:
                await self._redis.delete(_used_key(code.code_id))
            raise
        if claimed and recovering and not await self._claim_degraded(code.code_id):
            # Accepted while Redis was away, and not handed back to it yet: Redis alone would accept it again. The
            # claim this batch made in Redis stays: the code is used.
            return VerifyAnswer(allowed=False, reason="replayed", scene=scene, code_type=code_type)
        facts = self._facts.decode_cached(raw) or await self._facts.cached_or_load(subject)

        def deny(reason: str) -> VerifyAnswer:
            return VerifyAnswer(allowed=False, reason=reason, scene=scene, code_type=code_type)

        if facts is None or account_denied or not facts.active:
            answer = deny("denied-account")
        elif credential_denied:
            answer = deny("denied-credential")
        elif rest and not claimed:
            return deny("replayed")
        elif not meets_scene_level(facts, scene):
            answer = deny("no-entitlement")  # below the scene's minimum level (SCENE_MIN_LEVEL)
        elif event is not None:
            answer = await self._admit_holder(scanner, facts, code_type, event, now)
        else:
            answer = await self._scene_answer(scanner, subject, facts, scene, code_type)
        if claimed and not answer.allowed:
            # Only an accepted code uses up its replay id (docs/code-format.md, section 6, step 8): a rider
            # refused for a debt they then pay can show the same code again.
            await self._redis.delete(_used_key(code.code_id))
        return answer

    async def _admit_holder(
        self, scanner: Scanner, facts: SubjectFacts, code_type: str, event: EventAsk, now: float
    ) -> VerifyAnswer:
        """The event scene: the holder (a resident at the scene's level, live) is admitted by the provider that
        knows the occasion, which records it once per ticket in its own transaction."""
        admission = await self._admissions.admit(
            event.occasion_id,
            event.entrance,
            scanner.organisation_id,
            dt.datetime.fromtimestamp(now, dt.UTC),
            resident_id=uuid.UUID(facts.ref),
        )
        return _admission_answer(admission, code_type)

    async def _event_degraded(
        self,
        scanner: Scanner,
        subject: bytes,
        code_type: str,
        denied: set[str] | None,
        event: EventAsk,
        now: float,
    ) -> VerifyAnswer:
        """The event scene while Redis is unavailable: the deny list and the holder from PostgreSQL, then the
        provider, which needs PostgreSQL anyway (tickets live there, not in the code)."""
        DEGRADED_VERIFICATIONS.labels(EVENT_SCENE).inc()
        refusal = _deny_reason(denied or set(), EVENT_SCENE)
        if refusal:
            return VerifyAnswer(
                allowed=False, reason=refusal, scene=EVENT_SCENE, code_type=code_type, degraded=True
            )
        async with self._pool.acquire() as conn:
            holder = await self._facts_rows.of_subject(conn, subject)
        if holder is None or holder.kind != "resident" or not holder.active:
            return VerifyAnswer(
                allowed=False, reason="denied-account", scene=EVENT_SCENE, code_type=code_type, degraded=True
            )
        if (holder.level or 0) < SCENE_MIN_LEVEL[EVENT_SCENE]:
            return VerifyAnswer(
                allowed=False, reason="no-entitlement", scene=EVENT_SCENE, code_type=code_type, degraded=True
            )
        admission = await self._admissions.admit(
            event.occasion_id,
            event.entrance,
            scanner.organisation_id,
            dt.datetime.fromtimestamp(now, dt.UTC),
            resident_id=holder.ref,
        )
        return _admission_answer(admission, code_type, degraded=True)

    async def _claim_degraded(self, code_id: bytes) -> bool:
        """Single use while Redis is unavailable: claimed in PostgreSQL, so one process's acceptance holds for all
        of them. Should PostgreSQL not answer within DEGRADED_DENY_WAIT either, in this process only, as the deny
        list falls back to the code alone."""
        try:
            async with asyncio.timeout(DEGRADED_DENY_WAIT), self._pool.acquire() as conn:
                ttl = MAX_SERVER_LIFETIME + DEVICE_CODE_WINDOW + 4 * self._skew  # as the Redis claim's
                return await self._replay_fallback.claim(conn, code_id, ttl)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.warning("replay id held in this process only", error=type(exc).__name__)
            return self._local_claims.claim(code_id)

    async def _decide_degraded(
        self,
        scanner: Scanner,
        code: ServerCode | DeviceCode,
        subject: bytes,
        scene: str,
        code_type: str,
        denied: set[str] | None,
        flags: Flags,
    ) -> VerifyAnswer:
        """Redis is unavailable: what a gate would decide offline, from the signature (already checked), the
        validity window, the entitlements signed into the code (`flags`, unmasked with the platform's scene keys;
        a scene's bits are set only at or above its minimum level) and the deny list (`denied`, from PostgreSQL;
        None when that could not be read either). No live facts; single use is held in PostgreSQL
        (`_claim_degraded`). The answer says so (`degraded`), and it is recorded like any other."""
        DEGRADED_VERIFICATIONS.labels(scene).inc()
        refusal = _deny_reason(denied or set(), scene)
        if refusal:
            return VerifyAnswer(
                allowed=False, reason=refusal, scene=scene, code_type=code_type, degraded=True
            )
        if scene in _SINGLE_USE and not await self._claim_degraded(code.code_id):
            return VerifyAnswer(
                allowed=False, reason="replayed", scene=scene, code_type=code_type, degraded=True
            )
        if scene == "transit":
            if not flags.may_ride:
                return VerifyAnswer(
                    allowed=False, reason="no-entitlement", scene=scene, code_type=code_type, degraded=True
                )
            return VerifyAnswer(
                allowed=True,
                reason="ok",
                scene=scene,
                code_type=code_type,
                degraded=True,
                rider_token=self.rider_token(scanner.organisation_id, subject),
            )
        if scene == "health":
            colour = flags.health.name.lower()
            good = flags.health == Health.GREEN
            return VerifyAnswer(
                allowed=good,
                reason="ok" if good else f"health-{colour}",
                scene=scene,
                code_type=code_type,
                degraded=True,
                colour=colour,
            )
        if scene == "medical":
            # A voucher lives in Redis, so none can be handed out now: the hospital scans again to settle.
            return VerifyAnswer(
                allowed=flags.insured,
                reason="ok-no-voucher" if flags.insured else "not-insured",
                scene=scene,
                code_type=code_type,
                degraded=True,
                insured=flags.insured,
            )
        standing = flags.standing.name.lower()
        good = flags.standing == Standing.GOOD
        return VerifyAnswer(
            allowed=good,
            reason="ok" if good else f"standing-{standing}",
            scene=scene,
            code_type=code_type,
            degraded=True,
            standing=standing,
        )

    async def _scene_answer(
        self, scanner: Scanner, subject: bytes, facts: SubjectFacts, scene: str, code_type: str
    ) -> VerifyAnswer:
        if scene == "transit":
            if not facts.may_ride:
                return VerifyAnswer(
                    allowed=False,
                    reason=facts.ride_reason or "no-entitlement",
                    scene=scene,
                    code_type=code_type,
                )
            return VerifyAnswer(
                allowed=True,
                reason="ok",
                scene=scene,
                code_type=code_type,
                rider_token=self.rider_token(scanner.organisation_id, subject),
            )
        if scene == "health":
            return VerifyAnswer(
                allowed=facts.health == "green",
                reason="ok" if facts.health == "green" else f"health-{facts.health}",
                scene=scene,
                code_type=code_type,
                colour=facts.health,
                masked_name=facts.masked_name,
            )
        if scene == "medical":
            if not facts.insured:
                return VerifyAnswer(
                    allowed=False,
                    reason="not-insured",
                    scene=scene,
                    code_type=code_type,
                    insured=False,
                    masked_name=facts.masked_name,
                )
            voucher = "mv_" + secrets.token_urlsafe(18)
            await self._redis.set(
                voucher_key(scanner.organisation_id, voucher),
                msgspec.json.encode(
                    {
                        "org": str(scanner.organisation_id),
                        "subject": subject.hex(),
                        "name": facts.masked_name,
                    }
                ),
                ex=VOUCHER_TTL,
            )
            return VerifyAnswer(
                allowed=True,
                reason="ok",
                scene=scene,
                code_type=code_type,
                insured=True,
                masked_name=facts.masked_name,
                voucher=voucher,
                voucher_expires_in=VOUCHER_TTL,
            )
        good = facts.standing == "good"
        return VerifyAnswer(
            allowed=good,
            reason="ok" if good else f"standing-{facts.standing}",
            scene=scene,
            code_type=code_type,
            enterprise_name=facts.name,
            uscc=facts.uscc,
            standing=facts.standing,
        )

    def rider_token(self, organisation_id: uuid.UUID, subject: bytes) -> str:
        """Pseudonymous per operator: the same rider looks different to the metro and to the bus company."""
        mac = hmac.new(self._rider_secret, organisation_id.bytes + subject, hashlib.sha256).digest()
        return "rt_" + base64.b32encode(mac[:15]).decode().lower()

    def _record(
        self, scanner: Scanner, subject: bytes, scene: str, answer: VerifyAnswer, replay_id: bytes
    ) -> None:
        # Only the subject is stored; the history joins it to the holder when read, keeping this path cheap.
        verification_id = None
        if scene == "transit" and answer.allowed:
            # The gate may upload this id as its tap's proof (prove_transit_verification).
            verification_id = uuid.uuid4()
            answer.verification_id = str(verification_id)
        self._recorder.record(
            (
                dt.datetime.now(dt.UTC),
                subject,
                scanner.organisation_id,
                scanner.organisation_name,
                scanner.key_id,
                scene,
                "allowed" if answer.allowed else "denied",
                answer.reason,
                verification_id,
                replay_id,  # where the code was shown: a tap of it elsewhere is checked against this
            )
        )

    def record_event_scan(
        self, scanner: Scanner, subject: bytes, at: dt.datetime, allowed: bool, reason: str, replay_id: bytes
    ) -> None:
        """An admission a gate made offline and uploaded (code_service.entry): recorded at its scan time, so the
        holder sees it in their scan history like an online scan."""
        self._recorder.record(
            (
                at,
                subject,
                scanner.organisation_id,
                scanner.organisation_name,
                scanner.key_id,
                EVENT_SCENE,
                "allowed" if allowed else "denied",
                reason,
                None,
                replay_id,
            )
        )

    # -- proving taps (the gates' uploads): the one place that knows how a code names its holder -----------

    async def prove_transit_code(self, conn: Connection, text: str, at: float) -> ProvenCode | str:
        """Whether `text` is a transit code that verified at unix time `at` (the tap's time): `verify_code` in
        the transit scene (a platform key published at `at`, its signatures, its validity window at `at` with the
        published skew CLOCK_SKEW, the may-ride entitlement it carried), a resident's code. Returns what the
        platform derives from it (the resident from the sealed holder, the replay id, the deny-list entries to
        check at `at`) or the refusal reason, in the reasons of docs/code-format.md section 6."""
        return (await self.prove_transit_codes(conn, [(text, at)]))[0]

    async def prove_transit_codes(
        self, conn: Connection, scanned: list[tuple[str, float]]
    ) -> list[ProvenCode | str]:
        """`prove_transit_code` for each (text, at), in order, with the holders read in one statement."""
        return [_proven(verified) for verified in await self.verify_codes(conn, scanned, "transit")]

    async def restore_claims(self) -> None:
        """Puts the replay ids claimed in PostgreSQL during an outage into Redis, for the time each has left: once
        Redis answers again it is asked alone, and must know them (a code accepted then is not accepted again)."""
        async with self._pool.acquire() as conn:
            held = await self._replay_fallback.live(conn)
        if not held:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in held:
                pipe.set(_used_key(row.code_id), 1, nx=True, ex=row.seconds_left)
            await pipe.execute()
        _log.info("replay ids handed back to redis", count=len(held))

    async def flush_scans(self) -> None:
        await self._recorder.flush()

    async def prove_transit_verification(
        self, conn: Connection, organisation_id: uuid.UUID, verification_id: uuid.UUID, at: float
    ) -> ProvenCode | str:
        """Whether `verification_id` names an online transit verification this operator made that answered ok
        within CLOCK_SKEW of `at`. The deny list was checked when it answered, so no entries are left."""
        await self._recorder.flush()  # a verification a moment ago may still be in the recorder's buffer
        found = await ScanRepository().verification(conn, verification_id)
        if found is None or found.organisation_id != organisation_id:
            # Another operator's verification is not told apart from none: ids are no oracle.
            return "unknown-verification"
        if found.scene != "transit" or found.verdict != "allowed" or found.replay_id is None:
            return "not-transit"
        if abs(found.at.timestamp() - at) > self._skew:
            return "outside-window"
        resident = await self._resident_of(conn, found.subject)
        if resident is None:
            return "unknown-holder"
        credential_id = found.replay_id[:8] if len(found.replay_id) > 8 else None
        return ProvenCode(
            resident, found.replay_id, credential_id, "device" if credential_id else "personal", ()
        )

    async def _resident_of(self, conn: Connection, subject: bytes) -> uuid.UUID | None:
        row = await SubjectRepository().get(conn, subject)
        return row.ref if row is not None and row.kind == "resident" else None

    async def redeem_voucher(self, scanner: Scanner, voucher: str) -> VoucherRedeemed:
        if "verify:medical" not in scanner.scopes:
            raise forbidden("this credential lacks the scope verify:medical")
        # Keyed by the hospital, so another organisation's attempt cannot consume (and so destroy) the voucher.
        raw = await self._redis.getdel(voucher_key(scanner.organisation_id, voucher))
        data = msgspec.json.decode(raw) if raw else None
        if data is None or data["org"] != str(scanner.organisation_id):
            raise not_found("voucher: unknown, expired, already settled, or issued to another hospital")
        # Worth only what its holder still holds: an identity taken over, an account blocked or insurance ended
        # since the scan ends the voucher too (the facts are dropped from the cache when any of that happens).
        facts = await self._facts.cached_or_load(bytes.fromhex(data["subject"]))
        if facts is None or not facts.active or not facts.insured or not meets_scene_level(facts, "medical"):
            raise conflict("voucher: its holder no longer holds this insurance; scan the holder's code again")
        return VoucherRedeemed(
            insured=True, masked_name=data["name"], settlement_ref="ms_" + secrets.token_hex(8)
        )
