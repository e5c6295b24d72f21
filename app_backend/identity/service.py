"""Rules for one-time codes, sessions and real-name levels. Callers own the transaction."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from redis.asyncio import Redis

from app_backend.audit.service import AuditTrail
from app_backend.identity.aliyun import (
    AliyunLivenessProvider,
    AliyunPopulationRegistry,
    AliyunSmsSender,
)
from app_backend.identity.registry import (
    DevLivenessProvider,
    DevPopulationRegistry,
    LivenessProvider,
    PopulationRegistry,
)
from app_backend.identity.repository import (
    DevRepository,
    ResidentRepository,
    SessionRepository,
    UniqueViolation,
)
from app_backend.identity.schemas import (
    DevResident,
    LinkedEnterprise,
    Profile,
    ReleasableResident,
    ResidentPrincipal,
    ResidentRegion,
    TokenPair,
    level_name,
)
from app_backend.identity.sms import (
    DevOutboxSender,
    SmsSender,
    identity_claimed_message,
    identity_taken_message,
    otp_message,
)
from app_backend.identity.tokens import AccessTokens, InvalidToken, RefreshTokens
from app_backend.identity.validators import (
    InvalidIdentifier,
    id_number_check_char,
    normalise_name,
    normalise_phone,
    validate_id_number,
)
from app_backend.kernel.actors import Actor
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field
from app_backend.kernel.metrics import RATE_LIMITED, SHED
from app_backend.kernel.redis_batch import BatchRunner, RedisBatch, run_checks
from app_backend.kernel.regions import CITY, REGIONS, UNKNOWN_REGION
from app_backend.kernel.settings import Settings

# Atomic check of a one-time code. The phone's live codes are fields of one hash (`c:<digest>` -> issue time, ms):
# a code asked for by someone else does not void the one the owner is typing. A match deletes them all; the Nth
# wrong try against them deletes them too (a new code can be asked for at once, within the send caps).
_CHECK_OTP = """
local issued = redis.call('HGET', KEYS[1], 'c:' .. ARGV[1])
if issued then
  if tonumber(ARGV[3]) - tonumber(issued) < tonumber(ARGV[4]) then redis.call('DEL', KEYS[1]); return 'ok' end
  redis.call('HDEL', KEYS[1], 'c:' .. ARGV[1]); return 'missing'
end
if redis.call('HLEN', KEYS[1]) <= (redis.call('HEXISTS', KEYS[1], 'tries') == 1 and 1 or 0) then
  return 'missing'
end
local tries = redis.call('HINCRBY', KEYS[1], 'tries', 1)
if tries >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]); return 'locked' end
return tostring(tonumber(ARGV[2]) - tries)
"""

# The send caps, checked and counted at once (both keys share the phone's hash slot). Sorted sets of send times
# (ms) make the windows slide: a refusal always names when the oldest send leaves the window, never a day.
# KEYS: this requester's sends to the phone, every send to the phone.
# ARGV: now, cooldown, window, per requester, per phone, a unique member. Refused asks are not counted, so
# asking again and again cannot lengthen anyone's wait.
_CLAIM_SEND = """
local now, cooldown, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last and now - tonumber(last) < cooldown then
  return {'cooldown', tostring(cooldown - (now - tonumber(last)))}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return {'requester', tostring(tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + window - now)}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return {'phone', tostring(tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {'ok', '0'}
"""


def _seconds_to_midnight() -> int:
    now = dt.datetime.now(BUSINESS_TZ)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()))


# The level any release of unmasked personal data needs of the resident it belongs to (issue 13).
RELEASE_LEVEL = 3

# The rate limit's fixed windows are read from this clock (tests pin it to one window).
rate_clock = time.time
# The one-time codes' clock: send windows, cooldowns and code lifetimes (tests move it instead of sleeping).
otp_clock = time.time


def phone_field(raw: str, field: str = "phone") -> str:
    """A mainland mobile number from a request, normalised; a 400 naming the field otherwise."""
    try:
        return normalise_phone(raw)
    except InvalidIdentifier as exc:
        raise invalid_field(field, str(exc)) from None


def revoked_key(session_id: uuid.UUID | str) -> str:
    return f"auth:revoked:{session_id}"


def requester_of(client_ip: str) -> str:
    """Who pays for an ask: an IPv4 address, or the /64 network of an IPv6 one (one host holds a whole /64, so
    counting its addresses one by one would give it billions of budgets)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def person_of(raw_name: str, raw_id: str) -> tuple[str, str]:
    """A name and an ID number from a request, normalised; a 400 naming the field otherwise."""
    try:
        name = normalise_name(raw_name)
    except InvalidIdentifier as exc:
        raise invalid_field("name", str(exc)) from None
    try:
        id_number = validate_id_number(raw_id)
    except InvalidIdentifier as exc:
        raise invalid_field("id_number", str(exc)) from None
    return name, id_number


class OtpService:
    """One-time login codes. The caps are built so that nobody but the requester pays for the requester's asks: a
    stranger cannot lock a phone's owner out (docs/decisions/0007-otp-caps-never-lock-the-owner-out.md)."""

    def __init__(self, redis: Redis, settings: Settings, sms: SmsSender, cipher: FieldCipher) -> None:
        self._redis = redis
        self._settings = settings
        self._sms = sms
        self._cipher = cipher
        self._check = redis.register_script(_CHECK_OTP)
        self._claim = redis.register_script(_CLAIM_SEND)

    def _phone_key(self, phone: str) -> str:
        return self._cipher.lookup_hash("otp.phone", phone).hex()[:32]

    def _requester_key(self, client_ip: str) -> str:
        return self._cipher.lookup_hash("otp.requester", requester_of(client_ip)).hex()[:32]

    def _code_hash(self, phone_key: str, code: str) -> str:
        return hmac.new(
            self._settings.token_pepper, f"{phone_key}:{code}".encode(), hashlib.sha256
        ).hexdigest()

    async def send(self, phone: str, client_ip: str) -> None:
        s = self._settings
        pk, rk = self._phone_key(phone), self._requester_key(client_ip)
        day = dt.datetime.now(BUSINESS_TZ).strftime("%Y%m%d")
        # The requester's own daily budget over all phones: it only ever holds back the address that asked.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(f"otp:day:ip:{rk}:{day}")
            pipe.expire(f"otp:day:ip:{rk}:{day}", 2 * 86400)
            per_ip, _ = await pipe.execute()
        if per_ip > s.otp_daily_per_ip:
            raise _send_refused(
                "otp-daily-cap",
                "the daily limit of codes for this client address is reached",
                _seconds_to_midnight(),
            )
        now_ms = int(otp_clock() * 1000)
        member = f"{now_ms}:{secrets.token_hex(4)}"
        verdict, wait_ms = await self._claim(
            keys=[f"otp:sends:{{{pk}}}:{rk}", f"otp:sends:{{{pk}}}"],
            args=[
                now_ms,
                s.otp_cooldown * 1000,
                s.otp_send_window * 1000,
                s.otp_sends_per_requester,
                s.otp_sends_per_phone,
                member,
            ],
        )
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        wait = max(1, -(-int(float(wait_ms)) // 1000))
        if verdict == "cooldown":
            raise _send_refused("otp-cooldown", f"wait {wait} s before asking for another code", wait)
        if verdict == "requester":
            raise _send_refused(
                "otp-send-cap", f"this client address asked for this phone too often; wait {wait} s", wait
            )
        if verdict == "phone":
            raise _send_refused("otp-send-cap", f"this phone was sent too many codes; wait {wait} s", wait)
        code = f"{secrets.randbelow(1_000_000):06d}"
        key, field = f"otp:code:{pk}", f"c:{self._code_hash(pk, code)}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, field, now_ms)
            pipe.expire(key, s.otp_ttl)
            await pipe.execute()
        try:
            await self._sms.send(phone, otp_message(code, s.otp_ttl // 60))
        except DomainError:
            # The text never left (the gateway is down): no code waits for it, and the send counts against
            # nobody's caps, so the owner can ask again as soon as the gateway is back.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(key, field)
                pipe.zrem(f"otp:sends:{{{pk}}}:{rk}", member)
                pipe.zrem(f"otp:sends:{{{pk}}}", member)
                await pipe.execute()
            raise

    async def check(self, phone: str, code: str) -> None:
        pk = self._phone_key(phone)
        s = self._settings
        verdict = (
            await self._check(
                keys=[f"otp:code:{pk}"],
                args=[
                    self._code_hash(pk, code),
                    s.otp_max_attempts,
                    int(otp_clock() * 1000),
                    s.otp_ttl * 1000,
                ],
            )
        ).decode()
        if verdict == "ok":
            return
        if verdict == "missing":
            raise _otp_problem(
                "no valid code for this phone: it expired, was used, or was locked; request a new one"
            )
        if verdict == "locked":
            raise _otp_problem("wrong code; too many wrong tries, this code is now void; request a new one")
        raise _otp_problem(f"wrong code; {verdict} tries left")


def _send_refused(kind: str, message: str, wait: int) -> DomainError:
    return DomainError(
        429,
        kind,
        f"phone: {message}",
        headers={"Retry-After": str(wait)},
        extra={"errors": [{"field": "phone", "message": message}]},
    )


def _otp_problem(message: str) -> DomainError:
    return DomainError(
        401, "otp-invalid", f"otp: {message}", extra={"errors": [{"field": "otp", "message": message}]}
    )


class ReuseDetected(msgspec.Struct):
    session_id: uuid.UUID


class AuthService:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        cipher: FieldCipher,
        access: AccessTokens,
        refresh: RefreshTokens,
        audit: AuditTrail,
        otp: OtpService,
        breaker: RedisBreaker,
        batches: BatchRunner,
    ) -> None:
        self._redis = redis
        self._batches = batches
        self._breaker = breaker
        self._settings = settings
        self._cipher = cipher
        self._access = access
        self._refresh = refresh
        self._audit = audit
        self._otp = otp
        self._residents = ResidentRepository()
        self._sessions = SessionRepository()

    async def login(self, conn: Connection, phone: str, code: str, actor: Actor) -> TokenPair:
        try:
            await self._otp.check(phone, code)
        except DomainError:
            await self._audit.record_detached(
                actor,
                "auth.login",
                target_type="phone",
                target_id=self._cipher.lookup_hash("resident.phone", phone).hex()[:16],
                outcome="failure",
            )
            raise
        row, created = await self._residents.get_or_create_by_phone(
            conn,
            self._cipher.lookup_hash("resident.phone", phone),
            self._cipher.encrypt("resident.phone", phone),
        )
        if row.status != "active":
            await self._audit.record_detached(
                actor,
                "auth.login",
                target_type="resident",
                target_id=str(row.id),
                outcome="denied",
                detail={"reason": "blocked"},
            )
            raise DomainError(403, "resident-blocked", "this account is blocked; contact the 12345 hotline")
        session_id = await self._sessions.create(conn, row.id, self._settings.session_max_age)
        pair = await self._issue(conn, row.id, session_id, row.level, created)
        await self._audit.record(
            conn,
            Actor("resident", str(row.id), actor.request_id, actor.ip),
            "auth.login",
            target_type="resident",
            target_id=str(row.id),
            detail={"new_resident": created, "session": str(session_id)},
        )
        return pair

    async def dev_residents(self, conn: Connection, count: int) -> list[DevResident]:
        """Dev only (the load tests' fixtures, decision 0028's ticket rush needs 100,000 buyers): `count`
        real-named residents with random phones and ID numbers, each logged in. What a phone would do through
        OTP and real-name, without the SMS and registry round trips; a random phone or person already held is
        skipped, so a few fewer may come back."""
        rng = secrets.SystemRandom()
        made: dict[bytes, tuple[str, str]] = {}
        people = []
        for _ in range(count):
            phone = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
            born = f"{rng.randrange(1950, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
            first17 = f"321202{born}{rng.randrange(1000):03d}"
            id_number = first17 + id_number_check_char(first17)
            phone_hash = self._cipher.lookup_hash("resident.phone", phone)
            made[phone_hash] = (phone, id_number)
            people.append(
                (
                    self._cipher.encrypt("resident.phone", phone),
                    phone_hash,
                    self._cipher.encrypt("resident.name", "测试购票人"),
                    self._cipher.encrypt("resident.id_number", id_number),
                    self._cipher.lookup_hash("resident.id_number", id_number),
                )
            )
        dev = DevRepository()
        residents = await dev.insert_real_named(conn, people)
        tokens = {resident: self._refresh.new() for resident in residents.values()}
        sessions = await dev.open_sessions(
            conn,
            list(tokens),
            [self._refresh.digest(t) for t in tokens.values()],
            self._settings.session_max_age,
            self._settings.refresh_token_ttl,
        )
        return [
            DevResident(
                resident_id=resident,
                phone=made[phone_hash][0],
                access_token=self._access.issue(resident, sessions[resident], 2),
                refresh_token=tokens[resident],
            )
            for phone_hash, resident in residents.items()
        ]

    async def resident_for_phone(self, conn: Connection, phone: str) -> tuple[uuid.UUID, bool]:
        """(the resident whose account uses this normalised phone, whether it was created now). Only for a phone
        a channel has proven to be the caller's (a mini-program's phone number), never for one a client claims:
        for those, `login` checks a one-time code first."""
        row, created = await self._residents.get_or_create_by_phone(
            conn,
            self._cipher.lookup_hash("resident.phone", phone),
            self._cipher.encrypt("resident.phone", phone),
        )
        return row.id, created

    async def open_session(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        actor: Actor,
        *,
        method: str,
        created: bool = False,
        detail: dict[str, object] | None = None,
        origin: str | None = None,
    ) -> TokenPair:
        """A new session with the app's tokens for a resident another domain has recognised (a linked
        mini-program identity): refused (403) for a blocked account, audited as a login by `method`. The account
        read, the session and its refresh token are one statement. `origin` tags the session with what opened it
        (the caller's own name for it), so that `end_sessions_of` can end all it opened."""
        refresh_token = self._refresh.new()
        opened = await self._sessions.open_for_active(
            conn,
            resident_id,
            self._settings.session_max_age,
            self._refresh.digest(refresh_token),
            self._settings.refresh_token_ttl,
            origin,
        )
        if opened is None:
            raise DomainError(404, "not-found", "resident not found")
        if opened.session_id is None:
            await self._audit.record_detached(
                actor,
                "auth.login",
                target_type="resident",
                target_id=str(resident_id),
                outcome="denied",
                detail={"reason": "blocked", "method": method},
            )
            raise DomainError(403, "resident-blocked", "this account is blocked; contact the 12345 hotline")
        session_id = opened.session_id
        pair = TokenPair(
            access_token=self._access.issue(resident_id, session_id, opened.level),
            refresh_token=refresh_token,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self._access.ttl,
            resident_id=resident_id,
            level=level_name(opened.level),
            new_resident=created,
        )
        await self._audit.record(
            conn,
            Actor("resident", str(resident_id), actor.request_id, actor.ip),
            "auth.login",
            target_type="resident",
            target_id=str(resident_id),
            detail={"new_resident": created, "session": str(session_id), "method": method, **(detail or {})},
        )
        return pair

    async def _issue(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        session_id: uuid.UUID,
        level: int,
        created: bool = False,
    ) -> TokenPair:
        refresh_token = self._refresh.new()
        await self._sessions.add_refresh_token(
            conn, session_id, self._refresh.digest(refresh_token), self._settings.refresh_token_ttl
        )
        return TokenPair(
            access_token=self._access.issue(resident_id, session_id, level),
            refresh_token=refresh_token,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=self._access.ttl,
            resident_id=resident_id,
            level=level_name(level),
            new_resident=created,
        )

    async def refresh(self, conn: Connection, token: str, actor: Actor) -> TokenPair | ReuseDetected | None:
        digest = self._refresh.digest(token)
        row = await self._sessions.use_refresh_token(conn, digest)
        if row is not None:
            return await self._issue(conn, row.resident_id, row.session_id, row.level)
        known = await self._sessions.find_refresh_token(conn, digest)
        if known is None or known.used_at is None:
            return None
        # A spent token came back: someone holds a copy. End the whole family, thief and owner alike.
        await self.revoke_session(conn, known.session_id, "refresh token reuse")
        await self._audit.record(
            conn,
            actor,
            "auth.refresh_reuse",
            target_type="session",
            target_id=str(known.session_id),
            outcome="revoked",
            detail={"resident": str(known.resident_id)},
        )
        return ReuseDetected(session_id=known.session_id)

    async def revoke_session(self, conn: Connection, session_id: uuid.UUID, reason: str) -> None:
        await self._sessions.revoke(conn, session_id, reason)
        await self._redis.set(revoked_key(session_id), reason, ex=self._access.ttl + 60)

    async def revoke_all(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        for session_id in await self._sessions.revoke_all_for_resident(conn, resident_id, reason):
            await self._redis.set(revoked_key(session_id), reason, ex=self._access.ttl + 60)

    async def end_sessions_of(
        self, conn: Connection, resident_id: uuid.UUID, origin: str, reason: str
    ) -> int:
        """Ends the resident's live sessions `open_session` opened with this origin, as a logout ends one: their
        refresh tokens are refused and their access tokens answer 401 from the next request. How many ended."""
        ended = await self._sessions.revoke_of_origin(conn, resident_id, origin, reason)
        for session_id in ended:
            await self._redis.set(revoked_key(session_id), reason, ex=self._access.ttl + 60)
        return len(ended)

    async def session_started(self, conn: Connection, session_id: uuid.UUID) -> dt.datetime | None:
        """When the resident authenticated to open this session (its login), None for an unknown session."""
        return await self._sessions.started_at(conn, session_id)

    async def authenticate(self, authorization: str | None) -> ResidentPrincipal:
        principal, checks = self.check_token(authorization)
        await checks.run()
        return principal

    def check_token(self, authorization: str | None) -> tuple[ResidentPrincipal, ResidentChecks]:
        """The in-process part (the token's signature and expiry). The caller must run or settle the returned
        checks (session revoked? rate limit) before it acts on the request."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise DomainError(
                401,
                "unauthenticated",
                "authorization: a bearer access token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            claims = self._access.decode(authorization[7:].strip())
            principal = ResidentPrincipal(
                uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), int(claims["lvl"])
            )
        except (InvalidToken, ValueError, KeyError, TypeError) as exc:
            raise DomainError(
                401,
                "unauthenticated",
                f"authorization: {exc or 'token invalid'}",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        return principal, ResidentChecks(self._batches, self._breaker, principal, self._settings)


class ResidentChecks:
    """Session revoked? Rate limit reached? Three commands in the caller's Redis pipeline, no database: revocations
    are pushed to Redis when a session ends. Without Redis a revoked session cannot be told apart, so resident
    requests are refused with 503 (codes keep showing offline from the phone's device credential)."""

    __slots__ = ("_batches", "_breaker", "_limit", "_principal", "_rate_key", "_window")

    def __init__(
        self, batches: BatchRunner, breaker: RedisBreaker, principal: ResidentPrincipal, settings: Settings
    ) -> None:
        self._batches = batches
        self._breaker = breaker
        self._principal = principal
        self._limit = settings.rate_resident_per_minute
        self._window = int(rate_clock()) // 60
        self._rate_key = f"rate:resident:{principal.resident_id}:{self._window}"

    def queue(self, batch: RedisBatch) -> int:
        batch.exists(revoked_key(self._principal.session_id))
        batch.incr(self._rate_key)
        batch.expire(self._rate_key, 61)
        return 3

    def settle(self, results: list[int]) -> None:
        # The batch answers each of the three commands with an integer.
        revoked, count = results[0], results[1]
        if revoked:
            raise DomainError(
                401,
                "unauthenticated",
                "authorization: this session has ended",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if count > self._limit:
            RATE_LIMITED.labels("resident").inc()
            retry = max(1, (self._window + 1) * 60 - int(rate_clock()))
            raise DomainError(
                429,
                "rate-limited",
                f"authorization: more than {self._limit} requests a minute from this account; retry later",
                headers={"Retry-After": str(retry)},
            )

    async def recheck(self) -> None:
        """A resident's checks hold nothing single-use (sessions and rate limits): nothing to claim again."""

    def settle_locally(self) -> None:
        SHED.labels("redis-unavailable").inc()
        raise DomainError(
            503,
            "dependency-unavailable",
            "sessions cannot be checked right now; retry shortly (your code still shows offline)",
            headers={"Retry-After": "2"},
        )

    async def run(self) -> None:
        await run_checks(self, self._batches, self._breaker)


def _region_view(region: str | None) -> ResidentRegion:
    code = region or CITY
    return ResidentRegion(region=code, name=REGIONS.get(code, code), chosen=region is not None)


class ResidentService:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        cipher: FieldCipher,
        audit: AuditTrail,
        registry: PopulationRegistry,
        liveness: LivenessProvider,
        auth: AuthService,
        sms: SmsSender,
        events: IdentityEvents,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._cipher = cipher
        self._audit = audit
        self._registry = registry
        self._liveness = liveness
        self._auth = auth
        self._sms = sms
        self.events = events
        self._residents = ResidentRepository()

    def _masked(self, field: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        rule = {
            "resident.phone": self._settings.mask_phone,
            "resident.name": self._settings.mask_name,
            "resident.id_number": self._settings.mask_id_number,
        }[field]
        return mask(self._cipher.decrypt(field, blob), rule.head, rule.tail)

    async def profile(
        self, conn: Connection, resident_id: uuid.UUID, enterprises: list[LinkedEnterprise]
    ) -> Profile:
        row = await self._residents.get(conn, resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        return Profile(
            id=row.id,
            phone=self._masked("resident.phone", row.phone_enc) or "",
            name=self._masked("resident.name", row.name_enc),
            id_number=self._masked("resident.id_number", row.id_number_enc),
            level=level_name(row.level),
            status=row.status,
            created_at=row.created_at,
            real_name_verified_at=row.real_name_verified_at,
            face_verified_at=row.face_verified_at,
            enterprises=enterprises,
        )

    async def staff_roles(self, conn: Connection, resident_id: uuid.UUID) -> frozenset[str]:
        return frozenset(await self._residents.staff_roles(conn, resident_id))

    async def region(self, conn: Connection, resident_id: uuid.UUID) -> ResidentRegion:
        """Where the resident lives: the region they chose, or the city until they choose one."""
        row = await self._residents.region(conn, resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        return _region_view(row.region)

    async def set_region(self, conn: Connection, resident_id: uuid.UUID, region: str) -> ResidentRegion:
        """The resident chooses the district they live in (the city's code: none in particular)."""
        if region not in REGIONS:
            raise invalid_field("region", UNKNOWN_REGION)
        if not await self._residents.set_region(conn, resident_id, region):
            raise DomainError(404, "not-found", "resident not found")
        return _region_view(region)

    async def grant_role(
        self, conn: Connection, resident_id: uuid.UUID, role: str, granted_by: Actor
    ) -> None:
        if await self._residents.get(conn, resident_id) is None:
            raise DomainError(404, "not-found", "resident_id: no such resident")
        await self._residents.grant_role(conn, resident_id, role, f"{granted_by.type}:{granted_by.id}")

    async def set_status(self, conn: Connection, resident_id: uuid.UUID, status: str) -> bool:
        """Whether the status changed (blocking a blocked resident changes nothing)."""
        previous = await self._residents.set_status(conn, resident_id, status)
        if previous is None:
            raise DomainError(404, "not-found", "resident_id: no such resident")
        return previous != status

    async def release_own(
        self, conn: Connection, principal: ResidentPrincipal, actor: Actor
    ) -> dict[str, str | None]:
        """The resident's own unmasked data. Any release of unmasked data needs L3 (a face that matched the
        registry's photo), read from the account, not from the token; audited where the resident can see it."""
        row = await self._residents.get(conn, principal.resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        if row.level < RELEASE_LEVEL:
            await self._audit.record_detached(
                actor,
                "resident.reveal",
                target_type="resident",
                target_id=str(principal.resident_id),
                outcome="denied",
            )
            raise DomainError(
                403,
                "level-required",
                f"level: unmasked personal data is released only at L{RELEASE_LEVEL} (face verification); "
                f"this account is L{row.level}",
                extra={"errors": [{"field": "level", "message": f"L{RELEASE_LEVEL} required"}]},
            )
        await self._audit.record(
            conn, actor, "resident.reveal", target_type="resident", target_id=str(principal.resident_id)
        )
        return await self.reveal(conn, principal.resident_id)

    async def reveal(self, conn: Connection, resident_id: uuid.UUID) -> dict[str, str | None]:
        """Unmasked personal data: for staff with a reason (the caller audits it), or `release_own`."""
        row = await self._residents.get(conn, resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        return {
            "phone": self._cipher.decrypt("resident.phone", row.phone_enc),
            "name": self._cipher.decrypt("resident.name", row.name_enc) if row.name_enc else None,
            "id_number": (
                self._cipher.decrypt("resident.id_number", row.id_number_enc) if row.id_number_enc else None
            ),
        }

    def _person(self, raw_name: str, raw_id: str) -> tuple[str, str]:
        return person_of(raw_name, raw_id)

    async def _count_attempt(self, principal: ResidentPrincipal) -> None:
        """Real-name attempts and identity claims share one daily budget: the registry is not an oracle."""
        attempts_key = f"realname:tries:{principal.resident_id}"
        async with self._redis.pipeline(
            transaction=True
        ) as pipe:  # the counter never exists without its expiry
            pipe.set(attempts_key, 0, ex=86400, nx=True)
            pipe.incr(attempts_key)
            _, attempts = await pipe.execute()
        if attempts > 5:
            raise DomainError(
                429,
                "real-name-attempts",
                "too many real-name attempts today; try again tomorrow",
                headers={"Retry-After": str(max(1, await self._redis.ttl(attempts_key)))},
            )

    @contextlib.asynccontextmanager
    async def _refunded_if_unreachable(
        self, principal: ResidentPrincipal, counted: bool
    ) -> AsyncIterator[None]:
        """A vendor that could not be asked answered nothing: the attempt it cost is given back (503 only)."""
        try:
            yield
        except DomainError as exc:
            if counted and exc.status == 503:
                await self._redis.decr(f"realname:tries:{principal.resident_id}")
            raise

    async def _registry_match(
        self,
        conn: Connection,
        principal: ResidentPrincipal,
        name: str,
        id_number: str,
        actor: Actor,
        action: str,
    ) -> None:
        if await self._registry.matches(conn, name, id_number):
            return
        await self._audit.record_detached(
            actor, action, target_type="resident", target_id=str(principal.resident_id), outcome="no-match"
        )
        raise DomainError(
            422,
            "real-name-mismatch",
            "name, id_number: the name and ID number do not match the population registry",
            extra={
                "errors": [
                    {"field": "name", "message": "does not match the registry"},
                    {"field": "id_number", "message": "does not match the registry"},
                ]
            },
        )

    async def verify_real_name(
        self, conn: Connection, principal: ResidentPrincipal, raw_name: str, raw_id: str, actor: Actor
    ) -> str:
        name, id_number = self._person(raw_name, raw_id)
        await self._count_attempt(principal)
        row = await self._residents.get(conn, principal.resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        if row.id_number_enc is not None:
            raise DomainError(409, "already-verified", "this account is already real-name verified")
        # Knowing a name and an ID number proves nothing: the account's phone must be the person's own, by the
        # carriers' three-factor check. Whoever cannot pass it can still prove who they are by face (L3).
        phone = self._cipher.decrypt("resident.phone", row.phone_enc)
        async with self._refunded_if_unreachable(principal, counted=True):
            await self._registry_match(conn, principal, name, id_number, actor, "resident.real_name")
            phone_theirs = await self._registry.phone_belongs(conn, name, id_number, phone)
        if not phone_theirs:
            await self._audit.record_detached(
                actor,
                "resident.real_name",
                target_type="resident",
                target_id=str(principal.resident_id),
                outcome="phone-not-theirs",
            )
            message = (
                "the carriers do not have this account's phone registered to this ID number; real-name needs "
                "a phone in your own name, or prove who you are by face verification (POST "
                "/api/v1/me/face-verification/sessions with name and id_number)"
            )
            raise DomainError(
                422,
                "phone-not-registered",
                f"phone: {message}",
                extra={"errors": [{"field": "phone", "message": "not registered to this ID number"}]},
            )
        try:
            async with conn.transaction():  # a savepoint, so the unique check fails cleanly
                updated = await self._residents.set_real_name(
                    conn,
                    principal.resident_id,
                    self._cipher.encrypt("resident.name", name),
                    self._cipher.encrypt("resident.id_number", id_number),
                    self._cipher.lookup_hash("resident.id_number", id_number),
                )
        except UniqueViolation:
            await self._audit.record_detached(
                actor,
                "resident.real_name",
                target_type="resident",
                target_id=str(principal.resident_id),
                outcome="duplicate",
            )
            raise DomainError(
                409,
                "id-number-taken",
                "id_number: this ID number already backs another account. If it is yours, prove it by face "
                "verification: POST /api/v1/me/face-verification/sessions with your name and id_number, then "
                "confirm; the identity then moves to this account and the other one drops to L1",
                extra={"errors": [{"field": "id_number", "message": "already backs another account"}]},
            ) from None
        if not updated:
            raise DomainError(409, "already-verified", "this account is already real-name verified")
        await self._audit.record(
            conn, actor, "resident.real_name", target_type="resident", target_id=str(principal.resident_id)
        )
        return level_name(max(2, row.level))

    async def start_face_verification(
        self,
        conn: Connection,
        principal: ResidentPrincipal,
        actor: Actor,
        raw_name: str | None = None,
        raw_id: str | None = None,
        meta_info: str | None = None,
    ) -> tuple[str, int]:
        """Opens a face check of the resident against a person of the registry: their own identity (L2), or the
        one they name, which may be held by another account (a claim: a pass takes it over)."""
        row = await self._residents.get(conn, principal.resident_id)
        if row is None:
            raise DomainError(404, "not-found", "resident not found")
        counted = False
        if raw_name is None or raw_id is None:
            if raw_name is not None or raw_id is not None:
                missing = "id_number" if raw_id is None else "name"
                raise invalid_field(missing, "name and id_number come together")
            if row.name_enc is None or row.id_number_enc is None:
                raise DomainError(
                    403,
                    "level-required",
                    "face verification needs real-name verification (L2) first, or the name and id_number of "
                    "the identity you claim",
                )
            name = self._cipher.decrypt("resident.name", row.name_enc)
            id_number = self._cipher.decrypt("resident.id_number", row.id_number_enc)
        else:
            name, id_number = self._person(raw_name, raw_id)
            if (
                row.id_number_enc is not None
                and self._cipher.decrypt("resident.id_number", row.id_number_enc) != id_number
            ):
                raise DomainError(
                    409, "already-verified", "id_number: this account is already verified as another person"
                )
            await self._count_attempt(principal)
            counted = True
            async with self._refunded_if_unreachable(principal, counted):
                await self._registry_match(
                    conn, principal, name, id_number, actor, "resident.face_verification"
                )
        async with self._refunded_if_unreachable(principal, counted):
            session_id, ttl = await self._liveness.start(
                str(principal.resident_id), name, id_number, meta_info
            )
        claim = FaceClaim(
            resident_id=principal.resident_id,
            name_enc=self._cipher.encrypt("resident.name", name),
            id_number_enc=self._cipher.encrypt("resident.id_number", id_number),
        )
        await self._redis.set(_claim_key(session_id), msgspec.msgpack.encode(claim), ex=ttl)
        return session_id, ttl

    async def confirm_face_verification(
        self, conn: Connection, principal: ResidentPrincipal, session_id: str, result_token: str, actor: Actor
    ) -> FaceVerified:
        raw_claim = await self._redis.get(_claim_key(session_id))
        if not await self._liveness.confirm(str(principal.resident_id), session_id, result_token):
            await self._audit.record_detached(
                actor,
                "resident.face_verification",
                target_type="resident",
                target_id=str(principal.resident_id),
                outcome="failure",
            )
            raise DomainError(
                422,
                "liveness-failed",
                "result_token: the liveness check did not pass for this session",
                extra={"errors": [{"field": "result_token", "message": "liveness not confirmed"}]},
            )
        await self._redis.delete(_claim_key(session_id))
        claim = msgspec.msgpack.decode(raw_claim, type=FaceClaim) if isinstance(raw_claim, bytes) else None
        if claim is None or claim.resident_id != principal.resident_id:
            raise DomainError(
                422,
                "liveness-failed",
                "session_id: this liveness session has expired; start another",
                extra={"errors": [{"field": "session_id", "message": "expired"}]},
            )
        id_number = self._cipher.decrypt("resident.id_number", claim.id_number_enc)
        id_hash = self._cipher.lookup_hash("resident.id_number", id_number)
        # One claim of a person at a time: racing claims queue here and each finds the holder the last one left.
        await self._residents.lock_person(conn, id_hash)
        mine = await self._residents.id_number_hash(conn, principal.resident_id)
        if mine is not None and bytes(mine) != id_hash:  # it real-named as someone else since the start
            raise DomainError(
                409, "already-verified", "id_number: this account is already verified as another person"
            )
        taken_from: uuid.UUID | None = None
        victim_phone_enc: bytes | None = None
        for _ in range(3):
            holder = await self._residents.find_by_id_number_hash(conn, id_hash)
            if holder is not None and holder != principal.resident_id:
                victim_phone_enc = await self._residents.detach_identity(conn, holder)
                taken_from = holder
            try:
                async with conn.transaction():  # a savepoint: a plain real-name may take the number meanwhile
                    claimed = await self._residents.claim_identity(
                        conn, principal.resident_id, claim.name_enc, claim.id_number_enc, id_hash
                    )
                break
            except UniqueViolation:
                continue
        else:
            raise DomainError(409, "conflict", "id_number: claimed concurrently; try again")
        if not claimed:
            raise DomainError(
                409, "already-verified", "id_number: this account is already verified as another person"
            )
        await self._audit.record(
            conn,
            actor,
            "resident.face_verification",
            target_type="resident",
            target_id=str(principal.resident_id),
            detail={"took_over_from": str(taken_from)} if taken_from else None,
        )
        if taken_from is not None:
            await self._end_identity(conn, taken_from, principal.resident_id, actor)
        me = await self._residents.get(conn, principal.resident_id)
        assert me is not None  # the claim above updated it
        return FaceVerified(
            level="L3",
            resident_id=principal.resident_id,
            phone_enc=me.phone_enc,
            taken_from=taken_from,
            taken_from_phone_enc=victim_phone_enc,
        )

    async def _end_identity(
        self, conn: Connection, resident_id: uuid.UUID, claimant: uuid.UUID, actor: Actor
    ) -> None:
        """The account that held an identity someone proved by face is L1 again: its sessions (whose tokens say
        L2 or L3) end, and the domains subscribed to the identity's end (code_service: codes and device
        credentials) end what they issued on it. Audited where its owner can see it."""
        reason = "identity taken over by face verification"
        await self._auth.revoke_all(conn, resident_id, reason)
        await self.events.identity_ended(conn, resident_id, reason)
        await self._audit.record(
            conn,
            actor,
            "resident.identity_taken_over",
            target_type="resident",
            target_id=str(resident_id),
            outcome="demoted",
            detail={"claimant": str(claimant), "level": "L1"},
        )

    async def after_face_verification(self, verified: FaceVerified) -> None:
        """Once committed: both accounts are told by SMS, and subscribers drop what they cached of both."""
        await self.events.identity_settled(verified.resident_id)
        if verified.taken_from is None:
            return
        await self.events.identity_settled(verified.taken_from)
        # The takeover is committed and audited; a gateway that is down (logged by its connector) costs a notice,
        # never the other one.
        with contextlib.suppress(DomainError):
            await self._sms.send(
                self._cipher.decrypt("resident.phone", verified.phone_enc), identity_claimed_message()
            )
        if verified.taken_from_phone_enc is not None:
            with contextlib.suppress(DomainError):
                await self._sms.send(
                    self._cipher.decrypt("resident.phone", verified.taken_from_phone_enc),
                    identity_taken_message(),
                )


def _claim_key(session_id: str) -> str:
    return f"face:claim:{session_id}"


class FaceClaim(msgspec.Struct, frozen=True):
    """Who a liveness session checks, kept beside it (encrypted) until it is confirmed."""

    resident_id: uuid.UUID
    name_enc: bytes
    id_number_enc: bytes


class FaceVerified(msgspec.Struct, frozen=True):
    level: str
    resident_id: uuid.UUID
    phone_enc: bytes
    taken_from: uuid.UUID | None = None
    taken_from_phone_enc: bytes | None = None


IdentityEnded = Callable[[Connection, uuid.UUID, str], Awaitable[None]]
IdentitySettled = Callable[[uuid.UUID], Awaitable[None]]


class IdentityEvents:
    """What other domains learn of residents' identities, by subscribing when they start (identity imports none
    of them): `ended` runs in the transaction that detaches an identity from an account, `settled` after it
    committed, for each account whose identity changed; `region_chosen` after a resident's new district
    committed."""

    def __init__(self) -> None:
        self._ended: list[IdentityEnded] = []
        self._settled: list[IdentitySettled] = []
        self._region_chosen: list[IdentitySettled] = []

    def on_region_chosen(self, handler: IdentitySettled) -> None:
        self._region_chosen.append(handler)

    async def region_chosen(self, resident_id: uuid.UUID) -> None:
        for handler in self._region_chosen:
            await handler(resident_id)

    def on_identity_ended(self, handler: IdentityEnded) -> None:
        self._ended.append(handler)

    def on_identity_settled(self, handler: IdentitySettled) -> None:
        self._settled.append(handler)

    async def identity_ended(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        for handler in self._ended:
            await handler(conn, resident_id, reason)

    async def identity_settled(self, resident_id: uuid.UUID) -> None:
        for handler in self._settled:
            await handler(resident_id)


class ResidentDirectory:
    """Facts about residents other domains ask for (the code side's holders, department feeds): masked names,
    whether an account is active, and the keyed hash of the ID number that departments' records are keyed by."""

    def __init__(self, cipher: FieldCipher, settings: Settings) -> None:
        self._cipher = cipher
        self._settings = settings
        self._residents = ResidentRepository()

    async def masked_name(self, conn: Connection, resident_id: uuid.UUID) -> str | None:
        row = await self._residents.get(conn, resident_id)
        return None if row is None else self.mask_name(row.name_enc)

    def mask_name(self, name_enc: bytes | None) -> str | None:
        """What `masked_name` answers, from the stored (encrypted) name: no query."""
        if name_enc is None:
            return None
        rule = self._settings.mask_name
        return mask(self._cipher.decrypt("resident.name", name_enc), rule.head, rule.tail)

    async def resident_active(self, conn: Connection, resident_id: uuid.UUID) -> bool:
        row = await self._residents.get(conn, resident_id)
        return row is not None and row.status == "active"

    async def person_key_of(self, conn: Connection, resident_id: uuid.UUID) -> bytes | None:
        """The keyed hash of the resident's ID number (None before real-name): the key of department feeds."""
        value = await self._residents.id_number_hash(conn, resident_id)
        return bytes(value) if value is not None else None

    async def resident_of_person(self, conn: Connection, person_key: bytes) -> uuid.UUID | None:
        return await self._residents.find_by_id_number_hash(conn, person_key)

    async def verified_id_number(self, conn: Connection, resident_id: uuid.UUID) -> str | None:
        """The ID number of a real-named (L2 or above) resident, None otherwise: for a registry check the
        resident asked for (an enterprise's legal representative), never for display or release to anyone
        (releases go through ResidentService.release_own, which needs L3)."""
        row = await self._residents.get(conn, resident_id)
        if row is None or row.level < 2 or row.id_number_enc is None:
            return None
        return self._cipher.decrypt("resident.id_number", row.id_number_enc)

    async def releasable(self, conn: Connection, resident_id: uuid.UUID) -> ReleasableResident | None:
        """What a department may receive of a resident once the resident has consented (the one-login provider,
        app_backend/oidc): the caller releases only the consented claims and records each release. The name and
        ID number come only from a verified identity (L2 or above)."""
        row = await self._residents.get(conn, resident_id)
        if row is None:
            return None
        verified = row.level >= 2
        name = self._cipher.decrypt("resident.name", row.name_enc) if verified and row.name_enc else None
        return ReleasableResident(
            resident_id=row.id,
            level=row.level,
            active=row.status == "active",
            phone=self._cipher.decrypt("resident.phone", row.phone_enc),
            masked_name=self.mask_name(row.name_enc) if verified else None,
            name=name,
            id_number=(
                self._cipher.decrypt("resident.id_number", row.id_number_enc)
                if verified and row.id_number_enc
                else None
            ),
        )

    async def resident_by_phone(self, conn: Connection, phone: str) -> uuid.UUID | None:
        """The resident whose account uses this (normalised) phone."""
        found = await self._residents.find_by_phone_hash(
            conn, self._cipher.lookup_hash("resident.phone", phone)
        )
        return None if found is None else found.id

    async def region_of(self, conn: Connection, resident_id: uuid.UUID) -> str:
        """The region a resident lives in: the district they chose, else the city (CITY), as the home shows tiles
        and broadcasts reach residents."""
        row = await self._residents.region(conn, resident_id)
        return CITY if row is None or row.region is None else row.region

    async def residents_of_region(
        self,
        conn: Connection,
        region: str,
        *,
        joined_by: dt.datetime,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """A page of the active residents of a region whose accounts existed at `joined_by`, in id order after
        `after`: of the city, every one (whatever district they chose); of a district, those who chose it."""
        if region == CITY:
            return await self._residents.active_ids(conn, joined_by, after, limit)
        return await self._residents.active_ids_in_region(conn, region, joined_by, after, limit)

    async def active_among(self, conn: Connection, resident_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Those of these residents whose account is active (not blocked), in id order: a broadcast to another
        audience than a region (the users of a tile) skips blocked accounts as `residents_of_region` does."""
        return await self._residents.active_among(conn, resident_ids)

    async def count_of_region(self, conn: Connection, region: str, *, joined_by: dt.datetime) -> int:
        """How many residents `residents_of_region` walks."""
        return await self._residents.count_active(conn, None if region == CITY else region, joined_by)

    def person_key(self, id_number: str) -> bytes:
        """Validates an ID number (GB 11643) and returns its keyed hash; raises ValueError with a reason."""
        try:
            normalised = validate_id_number(id_number)
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from None
        return self._cipher.lookup_hash("resident.id_number", normalised)


@dataclass
class IdentityServices:
    """The identity domain's public services: log-in, sessions, residents and their levels."""

    pool: Pool
    side_pool: Pool
    otp: OtpService
    auth: AuthService
    residents: ResidentService
    directory: ResidentDirectory
    population_registry: PopulationRegistry
    liveness: LivenessProvider
    events: IdentityEvents
    # Dev stand-ins (tzt serve in dev, the tests): the SMS outbox and the liveness vendor. None outside dev and
    # test, where they are never constructed.
    dev_outbox: DevOutboxSender | None = None
    dev_liveness: DevLivenessProvider | None = None

    async def staff_roles(self, resident_id: uuid.UUID) -> frozenset[str]:
        """Read on a connection of its own: the guards ask before the request's transaction exists."""
        async with self.side_pool.acquire() as conn:
            return await self.residents.staff_roles(conn, resident_id)

    @classmethod
    def create(
        cls,
        settings: Settings,
        redis: Redis,
        pool: Pool,
        side_pool: Pool,
        cipher: FieldCipher,
        audit: AuditTrail,
        breaker: RedisBreaker,
        batches: BatchRunner,
    ) -> IdentityServices:
        # Outside dev and test nothing below may be a dev stand-in: refuse before constructing any connector
        # (settings.PRODUCTION_BACKENDS says which names do).
        settings.refuse_dev_stand_ins()
        outbox = dev_liveness = None
        sms: SmsSender
        population: PopulationRegistry
        liveness: LivenessProvider
        if settings.sms_backend == "aliyun":
            sms = AliyunSmsSender(settings.aliyun)
        else:
            sms = outbox = _dev_only(settings, "sms_backend", DevOutboxSender)(
                redis, settings.index_key, settings.otp_ttl
            )
        if settings.registry_backend == "aliyun":
            population = AliyunPopulationRegistry(settings.aliyun)
        else:
            population = _dev_only(settings, "registry_backend", DevPopulationRegistry)(cipher)
        if settings.liveness_backend == "aliyun":
            liveness = AliyunLivenessProvider(settings.aliyun, redis)
        else:
            liveness = dev_liveness = _dev_only(settings, "liveness_backend", DevLivenessProvider)(
                redis, settings.liveness_secret
            )
        otp = OtpService(redis, settings, sms, cipher)
        access = AccessTokens(
            {settings.jwt_kid: settings.jwt_secret}, settings.jwt_kid, settings.access_token_ttl
        )
        auth = AuthService(
            redis,
            settings,
            cipher,
            access,
            RefreshTokens(settings.token_pepper),
            audit,
            otp,
            breaker,
            batches,
        )
        events = IdentityEvents()
        return cls(
            pool=pool,
            side_pool=side_pool,
            otp=otp,
            auth=auth,
            residents=ResidentService(
                redis, settings, cipher, audit, population, liveness, auth, sms, events
            ),
            directory=ResidentDirectory(cipher, settings),
            population_registry=population,
            liveness=liveness,
            events=events,
            dev_outbox=outbox,
            dev_liveness=dev_liveness,
        )


StandIn = TypeVar("StandIn")


def _dev_only(settings: Settings, setting: str, stand_in: type[StandIn]) -> type[StandIn]:
    """The dev stand-in class for a backend set to `dev`, in dev and test only (refuse_dev_stand_ins has already
    refused anything else; this holds even if a new backend name is listed without a connector here)."""
    if not settings.is_dev or getattr(settings, setting) != "dev":
        raise RuntimeError(f"TZT_{setting.upper()}={getattr(settings, setting)!r} has no connector here")
    return stand_in
