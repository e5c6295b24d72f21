"""Organisations, their credentials, and the check of every signed machine request."""

from __future__ import annotations

import hmac
import re
import secrets
import time
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from app_backend.audit.schemas import Actor
from app_backend.audit.service import AuditTrail
from app_backend.infra.crypto import FieldCipher
from app_backend.infra.errors import Problem, field_error
from app_backend.organisations import signing
from app_backend.organisations.repository import OrganisationRepository
from app_backend.organisations.schemas import (
    KNOWN_SCOPES,
    Credential,
    CredentialIssued,
    MachinePrincipal,
    Organisation,
)

_SECRET_FIELD = "credential.secret"  # noqa: S105 - a field name for associated data
_KEY_ID = re.compile(r"tzk_[0-9a-f]{16}")
# Long enough for every process's credential cache to have expired and the revoking transaction to commit.
_REVOKED_MARK_TTL = 3600


def _revoked_key(key_id: str) -> str:
    return f"credential:revoked:{key_id}"


class OrganisationService:
    def __init__(self, cipher: FieldCipher, audit: AuditTrail) -> None:
        self._cipher = cipher
        self._audit = audit
        self._repo = OrganisationRepository()

    async def create(
        self, conn: Any, name: str, kind: str, location: str | None, actor: Actor
    ) -> Organisation:
        row = await self._repo.create(conn, " ".join(name.split()), kind, location)
        if row is None:
            raise Problem(
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
            target_id=str(row["id"]),
            detail={"kind": kind},
        )
        return Organisation(**dict(row))

    async def list_all(self, conn: Any) -> list[Organisation]:
        return [Organisation(**dict(r)) for r in await self._repo.list_all(conn)]

    async def _existing(self, conn: Any, organisation_id: uuid.UUID) -> Any:
        row = await self._repo.get(conn, organisation_id)
        if row is None:
            raise Problem(404, "not-found", "organisation not found")
        return row

    async def issue_credential(
        self, conn: Any, organisation_id: uuid.UUID, scopes: list[str], label: str, actor: Actor
    ) -> CredentialIssued:
        unknown: list[str] = sorted(set(scopes) - KNOWN_SCOPES)
        if unknown:
            raise field_error("scopes", f"unknown scopes: {', '.join(unknown)}")
        await self._existing(conn, organisation_id)
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

    async def credentials(self, conn: Any, organisation_id: uuid.UUID) -> list[Credential]:
        await self._existing(conn, organisation_id)
        return [
            Credential(
                key_id=r["key_id"],
                scopes=list(r["scopes"]),
                label=r["label"],
                created_at=r["created_at"],
                revoked_at=r["revoked_at"],
            )
            for r in await self._repo.credentials(conn, organisation_id)
        ]

    async def revoke_credential(
        self, conn: Any, organisation_id: uuid.UUID, key_id: str, actor: Actor
    ) -> None:
        if not await self._repo.revoke_credential(conn, organisation_id, key_id):
            raise Problem(404, "not-found", "key_id: no active credential with this id in this organisation")
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
    does not query PostgreSQL per request; a revocation therefore takes effect within `cache_ttl` seconds."""

    cache_ttl = 5.0

    def __init__(self, redis: Redis, cipher: FieldCipher, window: int) -> None:
        self._redis = redis
        self._cipher = cipher
        self._window = window
        self._repo = OrganisationRepository()
        self._cache: dict[str, tuple[float, tuple[str, MachinePrincipal] | None]] = {}

    async def revoke(self, key_id: str) -> None:
        """Marks the key revoked in Redis, which every process checks with the nonce; outlives all caches."""
        await self._redis.set(_revoked_key(key_id), 1, ex=_REVOKED_MARK_TTL)
        self._cache.pop(key_id, None)

    async def _credential(self, pool: asyncpg.Pool, key_id: str) -> tuple[str, MachinePrincipal] | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with pool.acquire() as conn:
            row = await self._repo.credential_for_auth(conn, key_id)
        value = None
        if row is not None and row["revoked_at"] is None and row["organisation_status"] == "active":
            value = (
                self._cipher.decrypt(_SECRET_FIELD, row["secret_enc"]),
                MachinePrincipal(
                    key_id=key_id,
                    organisation_id=row["organisation_id"],
                    organisation_name=row["organisation_name"],
                    organisation_kind=row["organisation_kind"],
                    scopes=frozenset(row["scopes"]),
                ),
            )
        while len(self._cache) >= 10_000:  # drop the oldest entries, not the whole cache
            self._cache.pop(next(iter(self._cache)))
        self._cache[key_id] = (now + self.cache_ttl, value)
        return value

    async def authenticate(
        self, pool: asyncpg.Pool, method: str, path_with_query: str, headers: Any, body: bytes
    ) -> MachinePrincipal:
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
        # Checked after the signature so nobody can burn another client's nonces.
        nonce_key = f"nonce:{principal.key_id}:{values[signing.HEADER_NONCE]}"
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip for both checks
            pipe.set(nonce_key, 1, nx=True, ex=2 * self._window + 5)
            pipe.exists(_revoked_key(principal.key_id))
            fresh, revoked = await pipe.execute()
        if revoked:
            self._cache.pop(principal.key_id, None)
            raise _unsigned(f"{signing.HEADER_KEY}: unknown or revoked credential")
        if not fresh:
            raise _unsigned(f"{signing.HEADER_NONCE}: already used; every request needs a fresh nonce")
        return principal


def _unsigned(detail: str) -> Problem:
    return Problem(401, "signature-invalid", detail, headers={"WWW-Authenticate": signing.SCHEME})
