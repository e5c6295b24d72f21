"""What code_service needs from the rest of the system, as protocols the composition root implements, and the
principals it receives through dependency injection."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from litestar import Request
    from litestar.datastructures import State

    from code_service.container import CodeServices


class Holder(msgspec.Struct, frozen=True):
    """The resident calling (from their access token)."""

    resident_id: uuid.UUID
    # The session and rate checks (a CallerChecks) still to be settled when the holder came from the deferring
    # `display_holder` dependency (the code display folds them into its own Redis round trip); None otherwise.
    checks: Any = None


class Scanner(msgspec.Struct, frozen=True):
    """The organisation behind a signed machine request (a gate, a hospital, a department's feed)."""

    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    key_id: str
    scopes: frozenset[str]
    # The request's Redis checks (a CallerChecks), still to be settled when the scanner came from the deferring
    # `verifier` dependency; already settled (and to be ignored) otherwise.
    checks: Any = None


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

    def mask_name(self, name_enc: bytes | None) -> str | None:
        """What `masked_name` answers, from the stored (encrypted) name as RESIDENT_FACTS returns it: no query."""
        ...

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


class RedisHealth(Protocol):
    """Whether Redis is answering (a circuit breaker the composition root shares between all hot paths).

    Verification asks before each round trip and reports how it went; while Redis is unavailable it answers from
    the code alone (signature, validity, signed entitlements) and flags the answer as degraded."""

    unavailable: tuple[type[BaseException], ...]

    def allow(self) -> bool: ...

    def failed(self, error: BaseException | None = None) -> None: ...

    def succeeded(self) -> None: ...


class CallerChecks(Protocol):
    """The Redis checks of a caller (a signed machine's nonce, revoked mark and rate limit; a resident's session
    and rate limit), handed to the handler so that it can fold them into its own batch of commands
    (app_backend.kernel.redis_batch): one round trip per request instead of two. `settle` raises the caller's 401 or
    429; `run` does the checks alone (one round trip, or the local fallback while Redis is unavailable)."""

    def queue(self, batch: Any) -> int:
        """Adds the checks' commands to `batch` (a RedisBatch) and returns how many; their replies come first."""
        ...

    def settle(self, results: list[Any]) -> None: ...

    def settle_locally(self) -> None: ...

    async def run(self) -> None: ...


RESIDENT_FACTS = "code_ports.resident_facts"
"""The Directory's and TransitEligibility's answers about one resident as ONE SQL set-returning function, so that
code_service reads a holder's facts in one statement (one round trip) while its SQL never names identity's or
payments' tables. The composition root creates it (app_backend/composition/migrations, after every package's
tables); code_service's repository calls it by this name inside its own statement:

    code_ports.resident_facts(resident uuid) RETURNS TABLE (
        active       boolean,  -- Directory.resident_active
        name_enc     bytea,    -- the stored name, NULL before real-name: Directory.mask_name gives masked_name
        person_key   bytea,    -- Directory.person_key_of (the key of codes.health_status / insurance_status)
        may_ride     boolean,  -- TransitEligibility.may_ride, both parts ('' when may_ride)
        ride_reason  text
    )  STABLE, exactly one row for any uuid (an unknown resident: active false, NULLs).

The async ports above stay the reference answers (tests/test_display_round_trips.py checks both agree)."""


def codes_from(state: State) -> CodeServices:
    """The hot handlers (code display, verification) take their services from the app state rather than as a
    dependency: Litestar resolves sibling dependencies in an anyio task group, about a tenth of a verification's
    cost (docs/performance.md). The composition root puts them there (`state.codes`)."""
    codes: CodeServices = state.codes
    return codes


def display_holder_of(request: Request[Any, Any, Any]) -> Holder:
    """The resident showing their code, with the session and rate checks (`Holder.checks`) that the display's
    own Redis round trip settles. Like `codes_from`, the hot handlers resolve their caller through what the
    composition root puts in the app state (`state.display_holder_of`), not as a dependency: resolving a
    dependency costs Litestar about a tenth of a display or a verification (docs/performance.md)."""
    holder: Holder = request.app.state.display_holder_of(request)
    return holder


async def signed_verifier_of(request: Request[Any, Any, Any]) -> Scanner:
    """The signed caller of a verification (signature, time window and credential checked), with the Redis
    checks (nonce, revoked mark, rate limit) that the verification's own round trip settles; from
    `state.signed_verifier_of`, as `display_holder_of`."""
    scanner: Scanner = await request.app.state.signed_verifier_of(request)
    return scanner
