"""Organisations, their credentials, and the check of every signed machine request."""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import structlog
from redis.asyncio import Redis

from app_backend.audit.service import AuditTrail
from app_backend.kernel.actors import Actor
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field
from app_backend.kernel.metrics import RATE_LIMITED
from app_backend.kernel.redis_batch import BatchRunner, LocalClaims, RedisBatch
from app_backend.kernel.settings import Settings
from app_backend.organisations import signing
from app_backend.organisations.repository import OrganisationRepository, OrganisationRow, UsedNonceRepository
from app_backend.organisations.schemas import (
    KNOWN_SCOPES,
    Credential,
    CredentialIssued,
    MachinePrincipal,
    Organisation,
    Payee,
    scopes_for_kind,
)

_SECRET_FIELD = "credential.secret"  # noqa: S105 - a field name for associated data
_KEY_ID = re.compile(r"tzk_[0-9a-f]{16}")
# docs/api.md: 16-64 characters from the URL-safe unreserved set (RFC 3986); a short nonce is guessable and a
# nonce of one character would make "never reused" meaningless after 66 requests.
_NONCE = re.compile(r"[A-Za-z0-9._~-]{16,64}")
_log = structlog.get_logger("organisations")
# How long a signed request waits for PostgreSQL to hold its nonce while Redis is unavailable.
DEGRADED_NONCE_WAIT = 1.0
# Long enough for every process's credential cache to have expired and the revoking transaction to commit.
_REVOKED_MARK_TTL = 3600


# The rate limit's fixed windows are read from this clock (tests pin it to one window).
rate_clock = time.time


def _revoked_key(key_id: str) -> str:
    return f"credential:revoked:{key_id}"


PAYEE_KINDS = frozenset({"department", "merchant", "verifier_operator"})


def _organisation(row: OrganisationRow) -> Organisation:
    return Organisation(
        id=row.id,
        name=row.name,
        kind=row.kind,
        location=row.location,
        status=row.status,
        created_at=row.created_at,
        rate_limit_per_second=row.rate_limit_per_second,
    )


class OrganisationService:
    def __init__(self, cipher: FieldCipher, audit: AuditTrail) -> None:
        self._cipher = cipher
        self._audit = audit
        self._repo = OrganisationRepository()

    async def payee(self, conn: Connection, payee_id: uuid.UUID) -> Payee | None:
        """Who can receive money: active departments, merchants and transit operators."""
        row = await self._repo.get(conn, payee_id)
        if row is None or row.status != "active" or row.kind not in PAYEE_KINDS:
            return None
        return Payee(id=row.id, name=row.name, kind=row.kind)

    async def organisation(self, conn: Connection, organisation_id: uuid.UUID) -> Organisation | None:
        """An organisation by id (other domains: who a department's client speaks for)."""
        row = await self._repo.get(conn, organisation_id)
        return None if row is None else _organisation(row)

    async def create(
        self,
        conn: Connection,
        name: str,
        kind: str,
        location: str | None,
        actor: Actor,
        rate_limit: int | None = None,
    ) -> Organisation:
        row = await self._repo.create(conn, " ".join(name.split()), kind, location, rate_limit)
        if row is None:
            raise DomainError(
                409,
                "organisation-exists",
                "name: an organisation with this name exists",
                extra={"errors": [{"field": "name", "message": "already exists"}]},
            )
        await self._audit.record(
            conn,
            actor,
            "admin.organisation_create",
            target_type="organisation",
            target_id=str(row.id),
            detail={"kind": kind}
            if rate_limit is None
            else {"kind": kind, "rate_limit_per_second": rate_limit},
        )
        return _organisation(row)

    async def set_rate_limit(
        self, conn: Connection, organisation_id: uuid.UUID, rate_limit: int | None, actor: Actor
    ) -> Organisation:
        """Takes effect within the credential cache's few seconds in every worker."""
        row = await self._repo.set_rate_limit(conn, organisation_id, rate_limit)
        if row is None:
            raise DomainError(404, "not-found", "organisation not found")
        await self._audit.record(
            conn,
            actor,
            "admin.organisation_rate_limit",
            target_type="organisation",
            target_id=str(organisation_id),
            detail={"rate_limit_per_second": rate_limit},
        )
        return _organisation(row)

    async def list_all(self, conn: Connection) -> list[Organisation]:
        return [_organisation(r) for r in await self._repo.list_all(conn)]

    async def _existing(self, conn: Connection, organisation_id: uuid.UUID) -> OrganisationRow:
        row = await self._repo.get(conn, organisation_id)
        if row is None:
            raise DomainError(404, "not-found", "organisation not found")
        return row

    async def issue_credential(
        self, conn: Connection, organisation_id: uuid.UUID, scopes: list[str], label: str, actor: Actor
    ) -> CredentialIssued:
        unknown: list[str] = sorted(set(scopes) - KNOWN_SCOPES)
        if unknown:
            raise invalid_field("scopes", f"unknown scopes: {', '.join(unknown)}")
        organisation = await self._existing(conn, organisation_id)
        beyond: list[str] = sorted(set(scopes) - scopes_for_kind(organisation.kind))
        if beyond:
            raise invalid_field(
                "scopes",
                f"not for an organisation of kind {organisation.kind}: {', '.join(beyond)}",
            )
        key_id = "tzk_" + secrets.token_hex(8)
        secret = "tzs_" + secrets.token_urlsafe(32)
        clean: list[str] = sorted(set(scopes))
        await self._repo.add_credential(
            conn, key_id, organisation_id, self._cipher.encrypt(_SECRET_FIELD, secret), clean, label
        )
        await self._audit.record(
            conn,
            actor,
            "admin.credential_issue",
            target_type="organisation",
            target_id=str(organisation_id),
            detail={"key_id": key_id, "scopes": clean},
        )
        return CredentialIssued(key_id=key_id, secret=secret, scopes=clean, organisation_id=organisation_id)

    async def credentials(self, conn: Connection, organisation_id: uuid.UUID) -> list[Credential]:
        await self._existing(conn, organisation_id)
        return [
            Credential(
                key_id=r.key_id,
                scopes=list(r.scopes),
                label=r.label,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
            for r in await self._repo.credentials(conn, organisation_id)
        ]

    async def revoke_credential(
        self, conn: Connection, organisation_id: uuid.UUID, key_id: str, actor: Actor
    ) -> None:
        if not await self._repo.revoke_credential(conn, organisation_id, key_id):
            raise DomainError(
                404, "not-found", "key_id: no active credential with this id in this organisation"
            )
        await self._audit.record(
            conn,
            actor,
            "admin.credential_revoke",
            target_type="organisation",
            target_id=str(organisation_id),
            detail={"key_id": key_id},
        )


class MachineAuth:
    """Checks a signed machine request. Credentials are cached in-process for a few seconds so the verify path
    does not query PostgreSQL per request; a revocation therefore takes effect within `cache_ttl` seconds, or at
    once through the revoked mark in Redis.

    The Redis part of the check (single-use nonce, revoked mark, the organisation's rate limit) is a
    `MachineChecks` that a hot handler can fold into its own pipeline. While Redis is unavailable the nonce is
    claimed in PostgreSQL instead (organisations.used_nonces, shared by every process; 503 if that cannot answer
    either), the revoked mark is not seen (the credential cache still reloads from PostgreSQL every `cache_ttl`
    seconds) and the rate limit is not counted: the request keeps working."""

    cache_ttl = 5.0

    def __init__(
        self,
        redis: Redis,
        cipher: FieldCipher,
        window: int,
        breaker: RedisBreaker,
        rate_per_second: int,
        batches: BatchRunner,
    ) -> None:
        self._redis = redis
        self._cipher = cipher
        self._window = window
        self._breaker = breaker
        self._batches = batches
        self._rate = rate_per_second
        self._repo = OrganisationRepository()
        self._cache: dict[str, tuple[float, tuple[str, MachinePrincipal] | None]] = {}
        self._nonce_ttl = 2 * window + 5
        self._local_nonces = LocalClaims(ttl=self._nonce_ttl)
        self._used_nonces = UsedNonceRepository()

    async def restore_nonces(self, pool: Pool) -> None:
        """Puts the nonces claimed in PostgreSQL during an outage into Redis, for the time each has left: once
        Redis answers again it is asked alone, and must know them."""
        async with pool.acquire() as conn:
            held = await self._used_nonces.live(conn)
        if not held:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in held:
                pipe.set(f"nonce:{row.key_id}:{row.nonce}", 1, nx=True, ex=row.seconds_left)
            await pipe.execute()
        _log.info("nonces handed back to redis", count=len(held))

    async def revoke(self, key_id: str) -> None:
        """Marks the key revoked in Redis, which every process checks with the nonce; outlives all caches."""
        await self._redis.set(_revoked_key(key_id), 1, ex=_REVOKED_MARK_TTL)
        self._cache.pop(key_id, None)

    async def _credential(self, pool: Pool, key_id: str) -> tuple[str, MachinePrincipal] | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with pool.acquire() as conn:
            row = await self._repo.credential_for_auth(conn, key_id)
        value = None
        if row is not None and row.revoked_at is None and row.organisation_status == "active":
            # A credential issued before scopes were bound to kinds (or written around the service) keeps only
            # what its organisation's kind allows: the endpoints beyond it answer 403.
            allowed = frozenset(row.scopes) & scopes_for_kind(row.organisation_kind)
            if len(allowed) != len(row.scopes):
                _log.warning(
                    "credential holds scopes beyond its organisation's kind; ignored",
                    key_id=key_id,
                    kind=row.organisation_kind,
                    ignored=sorted(set(row.scopes) - allowed),
                )
            value = (
                self._cipher.decrypt(_SECRET_FIELD, row.secret_enc),
                MachinePrincipal(
                    key_id=key_id,
                    organisation_id=row.organisation_id,
                    organisation_name=row.organisation_name,
                    organisation_kind=row.organisation_kind,
                    scopes=allowed,
                    rate_limit=row.rate_limit_per_second or self._rate,
                ),
            )
        while len(self._cache) >= 10_000:  # drop the oldest entries, not the whole cache
            self._cache.pop(next(iter(self._cache)))
        self._cache[key_id] = (now + self.cache_ttl, value)
        return value

    async def authenticate(
        self, pool: Pool, method: str, path_with_query: str, headers: Mapping[str, str], body: bytes
    ) -> MachinePrincipal:
        principal, checks = await self.check_signature(pool, method, path_with_query, headers, body)
        await checks.run()
        return principal

    async def check_signature(
        self, pool: Pool, method: str, path_with_query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[MachinePrincipal, MachineChecks]:
        """The in-process part: headers, time window, credential and HMAC. The caller must run or settle the
        returned checks before it acts on the request."""
        values = {}
        for name in (
            signing.HEADER_KEY,
            signing.HEADER_TIMESTAMP,
            signing.HEADER_NONCE,
            signing.HEADER_SIGNATURE,
        ):
            value = headers.get(name)
            if not value or len(value) > 256:
                raise _unsigned(f"{name}: header missing; machine requests must be signed ({signing.SCHEME})")
            values[name] = value
        if not _NONCE.fullmatch(values[signing.HEADER_NONCE]):
            raise _unsigned(
                f"{signing.HEADER_NONCE}: must be 16-64 characters from A-Z, a-z, 0-9 and - _ . ~ (a fresh random "
                "value for every request)"
            )
        ts = values[signing.HEADER_TIMESTAMP]
        if not (ts.isascii() and ts.isdigit()) or abs(int(ts) - time.time()) > self._window:
            raise _unsigned(f"{signing.HEADER_TIMESTAMP}: outside the allowed window of ±{self._window} s")
        if not _KEY_ID.fullmatch(values[signing.HEADER_KEY]):
            raise _unsigned(f"{signing.HEADER_KEY}: unknown or revoked credential")
        found = await self._credential(pool, values[signing.HEADER_KEY])
        if found is None:
            raise _unsigned(f"{signing.HEADER_KEY}: unknown or revoked credential")
        secret, principal = found
        expected = signing.signature(secret, method, path_with_query, ts, values[signing.HEADER_NONCE], body)
        if not hmac.compare_digest(expected, values[signing.HEADER_SIGNATURE].lower()):
            raise _unsigned(f"{signing.HEADER_SIGNATURE}: signature does not match the request")
        # Checked after the signature so nobody can burn another client's nonces or spend its rate.
        return principal, MachineChecks(self, principal, values[signing.HEADER_NONCE], pool)


class MachineChecks:
    """Nonce, revoked mark and rate limit of one signed request: four commands in the caller's pipeline."""

    __slots__ = ("_auth", "_nonce", "_nonce_key", "_pool", "_principal", "_rate_key")

    def __init__(self, auth: MachineAuth, principal: MachinePrincipal, nonce: str, pool: Pool) -> None:
        self._auth = auth
        self._principal = principal
        self._nonce = nonce
        self._pool = pool
        self._nonce_key = f"nonce:{principal.key_id}:{nonce}"
        # A fixed one-second window per organisation, shared by every worker through Redis.
        self._rate_key = f"rate:org:{principal.organisation_id}:{int(rate_clock())}"

    def queue(self, batch: RedisBatch) -> int:
        batch.set(self._nonce_key, 1, nx=True, ex=2 * self._auth._window + 5)
        batch.exists(_revoked_key(self._principal.key_id))
        batch.incr(self._rate_key)
        batch.expire(self._rate_key, 2)
        return 4

    def settle(self, results: list[int]) -> None:
        # The batch answers each of the four commands with an integer (SET NX with 1 or 0).
        fresh, revoked, count = results[0], results[1], results[2]
        if revoked:
            self._auth._cache.pop(self._principal.key_id, None)
            raise _unsigned(f"{signing.HEADER_KEY}: unknown or revoked credential")
        if not fresh:
            raise _unsigned(f"{signing.HEADER_NONCE}: already used; every request needs a fresh nonce")
        if count > self._principal.rate_limit:
            RATE_LIMITED.labels("organisation").inc()
            raise DomainError(
                429,
                "rate-limited",
                f"{signing.HEADER_KEY}: this organisation's limit of {self._principal.rate_limit} requests per "
                "second is reached; retry after the second",
                headers={"Retry-After": "1"},
            )

    def settle_locally(self) -> None:
        """Single use in this process only: what a caller that cannot wait gets. Every path of ours while Redis is
        unavailable awaits `run` instead, which holds the nonce in PostgreSQL for all processes."""
        if not self._auth._local_nonces.claim(self._nonce_key):
            raise _unsigned(f"{signing.HEADER_NONCE}: already used; every request needs a fresh nonce")

    async def run(self) -> None:
        """The checks alone: one Redis round trip, or (Redis unavailable) the nonce claimed in PostgreSQL."""
        auth = self._auth
        breaker = auth._breaker
        if breaker.allow():
            try:
                batch = auth._batches.batch()
                self.queue(batch)
                results = await batch.execute()
            except breaker.unavailable as exc:
                breaker.failed(exc)
            else:
                breaker.succeeded()
                recovering = breaker.recovering  # read before any await: the hand-back may finish meanwhile
                self.settle(results)
                if recovering:
                    await self.recheck()
                return
        await self._settle_in_database()

    async def recheck(self) -> None:
        await self._settle_in_database()

    async def _settle_in_database(self) -> None:
        auth = self._auth
        try:
            async with asyncio.timeout(DEGRADED_NONCE_WAIT), self._pool.acquire() as conn:
                fresh = await auth._used_nonces.claim(
                    conn, self._principal.key_id, self._nonce, auth._nonce_ttl
                )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Neither store can hold the nonce: refusing is safer than accepting a request that may be a replay.
            _log.warning("nonce cannot be held while redis is unavailable", error=type(exc).__name__)
            raise DomainError(
                503,
                "dependency-unavailable",
                f"{signing.HEADER_NONCE}: single use cannot be checked right now; retry with a fresh nonce",
                headers={"Retry-After": "2"},
            ) from None
        if not fresh:
            raise _unsigned(f"{signing.HEADER_NONCE}: already used; every request needs a fresh nonce")


def _unsigned(detail: str) -> DomainError:
    return DomainError(401, "signature-invalid", detail, headers={"WWW-Authenticate": signing.SCHEME})


@dataclass
class OrganisationServices:
    """The organisations domain's public services: the registry of organisations and their credentials, and the
    authentication of their signed requests."""

    organisations: OrganisationService
    machine_auth: MachineAuth

    @classmethod
    def create(
        cls,
        settings: Settings,
        redis: Redis,
        cipher: FieldCipher,
        audit: AuditTrail,
        breaker: RedisBreaker,
        batches: BatchRunner,
    ) -> OrganisationServices:
        return cls(
            organisations=OrganisationService(cipher, audit),
            machine_auth=MachineAuth(
                redis,
                cipher,
                settings.signature_window,
                breaker,
                settings.rate_organisation_per_second,
                batches,
            ),
        )
