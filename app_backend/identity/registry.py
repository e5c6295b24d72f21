"""Connectors to the authorities: the population registry (name + ID number, and the carriers' three-factor check
that a phone is registered to that person) and a face-liveness provider.

The production connectors (`aliyun`: Alibaba Cloud's ID Verification, app_backend/identity/aliyun.py) implement
the same protocols; the dev ones below keep their ground truth in seeded tables or sign their own results, and are
constructed only in dev and test, and only for the backends set to `dev` (IdentityServices.create)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from app_backend.identity.repository import DevRegistryRepository
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection


class PopulationRegistry(Protocol):
    async def matches(self, conn: Connection, name: str, id_number: str) -> bool:
        """The registry holds this person under this name."""
        ...

    async def phone_belongs(self, conn: Connection, name: str, id_number: str, phone: str) -> bool:
        """The carriers' three-factor check: the (normalised) phone is registered to this person."""
        ...


class DevPopulationRegistry:
    def __init__(self, cipher: FieldCipher, repository: DevRegistryRepository | None = None) -> None:
        self._cipher = cipher
        self._repo = repository or DevRegistryRepository()

    async def matches(self, conn: Connection, name: str, id_number: str) -> bool:
        stored = await self._repo.person_name_hash(
            conn, self._cipher.lookup_hash("registry.id_number", id_number)
        )
        return stored is not None and hmac.compare_digest(
            stored, self._cipher.lookup_hash("registry.name", name)
        )

    async def phone_belongs(self, conn: Connection, name: str, id_number: str, phone: str) -> bool:
        holder = await self._repo.subscriber_of(conn, self._cipher.lookup_hash("registry.phone", phone))
        return (
            holder is not None
            and hmac.compare_digest(holder, self._cipher.lookup_hash("registry.id_number", id_number))
            and await self.matches(conn, name, id_number)
        )

    async def enrol(self, conn: Connection, name: str, id_number: str, phones: Sequence[str] = ()) -> None:
        """A person of the dev registry, and the (normalised) phones the dev carriers have registered to them: the
        demo seed's people carry theirs (app_backend/composition/seed.py); a phone can belong to one person."""
        id_hash = self._cipher.lookup_hash("registry.id_number", id_number)
        await self._repo.upsert_person(conn, id_hash, self._cipher.lookup_hash("registry.name", name))
        for phone in phones:
            await self._repo.upsert_subscriber(
                conn, self._cipher.lookup_hash("registry.phone", phone), id_hash
            )


class LivenessProvider(Protocol):
    name: str

    async def start(
        self, resident_id: str, name: str, id_number: str, meta_info: str | None = None
    ) -> tuple[str, int]:
        """Opens a face check of the resident against the registry's photo of this person. `meta_info` is what
        the vendor's face SDK on the device reports about it (vendors that need it refuse without it)."""
        ...

    async def confirm(self, resident_id: str, session_id: str, result_token: str) -> bool: ...


class DevLivenessProvider:
    """Plays the vendor: a session is opened for one resident, and the vendor's signed result closes it."""

    name = "dev"
    ttl = 600

    def __init__(self, redis: Redis, secret: bytes) -> None:
        self._redis = redis
        self._secret = secret

    async def start(
        self, resident_id: str, name: str, id_number: str, meta_info: str | None = None
    ) -> tuple[str, int]:
        # There is no photo to compare in dev: the dev vendor's caller decides the outcome (DevController).
        session_id = "lv_" + secrets.token_urlsafe(16)
        await self._redis.set(f"liveness:{session_id}", resident_id, ex=self.ttl)
        return session_id, self.ttl

    def _sign(self, session_id: str, outcome: str) -> str:
        mac = hmac.new(self._secret, f"{session_id}:{outcome}".encode(), hashlib.sha256).digest()
        return f"{outcome}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    async def complete(self, session_id: str, outcome: str) -> str | None:
        """What the vendor's SDK hands back to the app after the face check."""
        if not await self._redis.exists(f"liveness:{session_id}"):
            return None
        return self._sign(session_id, outcome)

    async def confirm(self, resident_id: str, session_id: str, result_token: str) -> bool:
        key = f"liveness:{session_id}"
        owner = await self._redis.get(key)
        if owner is None or (owner.decode() if isinstance(owner, bytes) else owner) != resident_id:
            return False  # someone else's session: leave it alone
        if not hmac.compare_digest(result_token, self._sign(session_id, "pass")):
            await self._redis.delete(key)
            return False
        return bool(await self._redis.delete(key))  # one confirmation per session, even when raced
