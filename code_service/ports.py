"""What code_service needs from the rest of the system, as protocols the composition root implements, and the
principals it receives through dependency injection."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import msgspec


class Holder(msgspec.Struct, frozen=True):
    """The resident calling (from their access token)."""

    resident_id: uuid.UUID


class Scanner(msgspec.Struct, frozen=True):
    """The organisation behind a signed machine request (a gate, a hospital, a department's feed)."""

    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    key_id: str
    scopes: frozenset[str]


class EnterpriseFacts(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    uscc: str
    standing: str


class SecretBox(Protocol):
    """Authenticated encryption for secrets at rest (the platform's AES-GCM field cipher)."""

    def encrypt(self, field: str, plaintext: str) -> bytes: ...

    def decrypt(self, field: str, blob: bytes) -> str: ...


class Directory(Protocol):
    """Facts about residents and enterprises owned by the identity side."""

    async def masked_name(self, conn: Any, resident_id: uuid.UUID) -> str | None: ...

    async def resident_active(self, conn: Any, resident_id: uuid.UUID) -> bool: ...

    async def person_key_of(self, conn: Any, resident_id: uuid.UUID) -> bytes | None:
        """The keyed hash of the resident's ID number (None before real-name): the key of department feeds."""
        ...

    async def resident_of_person(self, conn: Any, person_key: bytes) -> uuid.UUID | None: ...

    def person_key(self, id_number: str) -> bytes:
        """Validates an ID number (GB 11643) and returns its keyed hash; raises ValueError with a reason."""
        ...

    async def enterprise_of_member(
        self, conn: Any, enterprise_id: uuid.UUID, resident_id: uuid.UUID
    ) -> EnterpriseFacts | None: ...

    async def enterprise(self, conn: Any, enterprise_id: uuid.UUID) -> EnterpriseFacts | None: ...


class TransitEligibility(Protocol):
    """Withholding agreements, debts and blocks: payments answers (its RideEligibility, wired by app_backend)."""

    async def may_ride(self, conn: Any, resident_id: uuid.UUID) -> tuple[bool, str]: ...
