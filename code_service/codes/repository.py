"""All SQL for subjects, device credentials and statuses."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

RESIDENT_FACTS = "code_ports.resident_facts"
"""Identity's and payments' answers about one resident as ONE SQL set-returning function, so that code_service
reads a holder's facts in one statement (one round trip) while its SQL never names identity's or payments'
tables (docs/decisions/0002-one-statement-code-display.md). code_service's migrations create it, after identity's
and payments' (code_service comes after them in the module list); its repository calls it by this name inside its
own statement:

    code_ports.resident_facts(resident uuid) RETURNS TABLE (
        active       boolean,  -- ResidentDirectory.resident_active (identity)
        name_enc     bytea,    -- the stored name, NULL before real-name: ResidentDirectory.mask_name masks it
        person_key   bytea,    -- ResidentDirectory.person_key_of (the key of codes.health_status / insurance_status)
        may_ride     boolean,  -- TransitService.may_ride (payments), both parts ('' when may_ride)
        ride_reason  text,
        level        smallint  -- identity's real-name level (1 phone, 2 real name, 3 face); 0 for an unknown resident
    )  STABLE, exactly one row for any uuid (an unknown resident: active false, NULLs).

Those services stay the reference answers (tests/code_service/codes/test_display_round_trips.py checks both agree)."""


# A credential's codes are accepted until its end plus a verifier's clock skew (at most 30 s, docs/code-format.md);
# two minutes covers that.
CREDENTIAL_GRACE = 120


class SubjectRow(msgspec.Struct, frozen=True):
    subject: bytes
    kind: str  # resident | enterprise
    ref: uuid.UUID


class CredentialRow(msgspec.Struct, frozen=True):
    """A device credential as its holder lists it."""

    id: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class StatusesRow(msgspec.Struct, frozen=True):
    colour: str | None  # no health status yet: NULL
    insured: bool | None  # no insurance status yet: NULL


class ResidentFactsRow(msgspec.Struct, frozen=True):
    """A resident's subject and facts (FactsRepository.resident): RESIDENT_FACTS' answer and the statuses."""

    subject: bytes | None  # never NULL: the statement finds or creates it (a scalar subquery to PostgreSQL)
    active: bool
    name_enc: bytes | None  # NULL before real-name
    may_ride: bool
    ride_reason: str
    health: str  # green | yellow | red | unknown
    insured: bool
    level: int


class StatusChangeRow(msgspec.Struct, frozen=True):
    """A resident's facts as the transaction that changed one of them sees them (FactsRepository.in_change), and
    that transaction's id: the change's own name."""

    active: bool
    name_enc: bytes | None
    may_ride: bool
    ride_reason: str
    health: str
    insured: bool
    level: int
    change: str


class SubjectFactsRow(msgspec.Struct, frozen=True):
    """A subject's kind and ref and, for a resident only, the facts of ResidentFactsRow (all NULL for an
    enterprise)."""

    kind: str  # resident | enterprise
    ref: uuid.UUID
    active: bool | None
    name_enc: bytes | None
    may_ride: bool | None
    ride_reason: str | None
    health: str | None
    insured: bool | None
    level: int | None


class SubjectRepository:
    async def get_or_create(self, conn: Connection, kind: str, ref: uuid.UUID) -> bytes:
        subject: bytes | None = await conn.fetchval(
            """INSERT INTO codes.subjects (subject, kind, ref) VALUES ($1, $2, $3)
               ON CONFLICT (kind, ref) DO NOTHING RETURNING subject""",
            secrets.token_bytes(8),
            kind,
            ref,
        )
        if subject is None:
            subject = await conn.fetchval(
                "SELECT subject FROM codes.subjects WHERE kind = $1 AND ref = $2", kind, ref
            )
        assert subject is not None
        return bytes(subject)

    async def get(self, conn: Connection, subject: bytes) -> SubjectRow | None:
        return await fetch_row(
            conn, SubjectRow, "SELECT subject, kind, ref FROM codes.subjects WHERE subject = $1", subject
        )

    async def get_many(self, conn: Connection, subjects: list[bytes]) -> dict[bytes, SubjectRow]:
        rows = await fetch_rows(
            conn,
            SubjectRow,
            "SELECT subject, kind, ref FROM codes.subjects WHERE subject = ANY($1::bytea[])",
            subjects,
        )
        return {row.subject: row for row in rows}

    async def of_resident(self, conn: Connection, resident_id: uuid.UUID) -> bytes | None:
        value = await conn.fetchval(
            "SELECT subject FROM codes.subjects WHERE kind = 'resident' AND ref = $1", resident_id
        )
        return bytes(value) if value is not None else None


class CredentialRepository:
    async def insert(
        self,
        conn: Connection,
        credential_id: bytes,
        resident_id: uuid.UUID,
        subject: bytes,
        device_key: bytes,
        not_before: dt.datetime,
        not_after: dt.datetime,
        flags: int,
    ) -> None:
        await conn.execute(
            """INSERT INTO codes.device_credentials (id, resident_id, subject, device_key, not_before, not_after,
                                                      flags)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            credential_id,
            resident_id,
            subject,
            device_key,
            not_before,
            not_after,
            flags,
        )

    async def revoke(
        self, conn: Connection, credential_id: bytes, resident_id: uuid.UUID, reason: str
    ) -> bool:
        result: str = await conn.execute(
            """UPDATE codes.device_credentials SET revoked_at = now(), revoked_reason = $3
               WHERE id = $1 AND resident_id = $2 AND revoked_at IS NULL""",
            credential_id,
            resident_id,
            reason,
        )
        return result.endswith(" 1")

    async def revoke_live_of(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> list[bytes]:
        """The ids of the credentials it ended."""
        records = await conn.fetch(
            """UPDATE codes.device_credentials SET revoked_at = now(), revoked_reason = $2
               WHERE resident_id = $1 AND revoked_at IS NULL AND not_after > now() RETURNING id""",
            resident_id,
            reason,
        )
        return [bytes(record[0]) for record in records]

    async def bind_device_key(self, conn: Connection, key_hash: bytes) -> bool:
        """Records a device key as bound; False when it was bound before."""
        result: str = await conn.execute(
            "INSERT INTO codes.bound_device_keys (key_hash) VALUES ($1) ON CONFLICT DO NOTHING", key_hash
        )
        return result.endswith(" 1")

    async def live_ids_of(self, conn: Connection, resident_id: uuid.UUID, grace_seconds: int) -> list[bytes]:
        """The holder's credentials, not revoked, whose codes a verifier may still accept (their end plus a
        verifier's clock skew has not passed)."""
        records = await conn.fetch(
            """SELECT id FROM codes.device_credentials
               WHERE resident_id = $1 AND revoked_at IS NULL AND not_after > now() - make_interval(secs => $2)""",
            resident_id,
            grace_seconds,
        )
        return [bytes(record[0]) for record in records]

    async def recent_ids_of(self, conn: Connection, resident_id: uuid.UUID) -> list[bytes]:
        """Every credential of the holder that a deny-list entry may still name (entries leave snapshots after
        25 h), revoked or not."""
        records = await conn.fetch(
            """SELECT id FROM codes.device_credentials
               WHERE resident_id = $1 AND not_after > now() - interval '25 hours'""",
            resident_id,
        )
        return [bytes(record[0]) for record in records]

    async def list_for(self, conn: Connection, resident_id: uuid.UUID) -> list[CredentialRow]:
        return await fetch_rows(
            conn,
            CredentialRow,
            """SELECT id, not_before, not_after, created_at, revoked_at FROM codes.device_credentials
               WHERE resident_id = $1 AND not_after > now() - interval '1 day' ORDER BY created_at DESC""",
            resident_id,
        )


class StatusRepository:
    """A person's department statuses alone: the multi-query reference FactsRepository's one statement is checked
    against (tests/code_service/codes/test_display_round_trips.py)."""

    async def statuses(self, conn: Connection, person_key: bytes) -> tuple[str, bool]:
        row = await fetch_row(
            conn,
            StatusesRow,
            """SELECT (SELECT colour FROM codes.health_status WHERE person_key = $1) AS colour,
                      (SELECT insured FROM codes.insurance_status WHERE person_key = $1) AS insured""",
            person_key,
        )
        assert row is not None  # a SELECT without FROM: always one row
        return (row.colour or "unknown"), bool(row.insured)


def _resident_facts(ref: str) -> str:
    """Select list and FROM clause of the facts of the resident whose id is the SQL expression `ref`: the
    one-statement function's answer (RESIDENT_FACTS: active, name, transit) and the department statuses held here, keyed
    by the person key it returns (no status: 'unknown', not insured)."""
    return f"""f.active, f.name_enc, f.may_ride, f.ride_reason, f.level,
                      coalesce(h.colour, 'unknown') AS health, coalesce(i.insured, false) AS insured
               FROM {RESIDENT_FACTS}({ref}) f
               LEFT JOIN codes.health_status h ON h.person_key = f.person_key
               LEFT JOIN codes.insurance_status i ON i.person_key = f.person_key"""


class FactsRepository:
    """A holder's facts in ONE statement each (issue 5: a code display costs at most one round trip). Both are
    read on a cache miss only (the warm display and verification read Redis, no record), so their rows are
    Structs."""

    async def resident(
        self, conn: Connection, resident_id: uuid.UUID, new_subject: bytes
    ) -> ResidentFactsRow:
        """The resident's subject, created with `new_subject` on first use, and their facts. A single statement is
        atomic on its own: no transaction needed. An existing subject is only read (no write on the usual path);
        when a concurrent first use inserted one our snapshot cannot see, the conflict's DO UPDATE hands its
        subject back (DO NOTHING would return no row), so there is always exactly one row."""
        row = await fetch_row(
            conn,
            ResidentFactsRow,
            f"""WITH known AS (
                   SELECT subject FROM codes.subjects WHERE kind = 'resident' AND ref = $1
               ), created AS (
                   INSERT INTO codes.subjects (subject, kind, ref)
                   SELECT $2, 'resident', $1 WHERE NOT EXISTS (SELECT FROM known)
                   ON CONFLICT (kind, ref) DO UPDATE SET kind = EXCLUDED.kind
                   RETURNING subject
               )
               SELECT (SELECT subject FROM known UNION ALL SELECT subject FROM created) AS subject,
                      {_resident_facts("$1")}""",
            resident_id,
            new_subject,
        )
        assert row is not None  # RESIDENT_FACTS answers exactly one row for any uuid
        return row

    async def in_change(self, conn: Connection, resident_id: uuid.UUID) -> StatusChangeRow:
        """The resident's facts inside the transaction changing them (uncommitted changes included; nothing is
        created or cached), and the id of that transaction (PostgreSQL's 64-bit one, never reused)."""
        row = await fetch_row(
            conn,
            StatusChangeRow,
            f"SELECT pg_current_xact_id()::text AS change, {_resident_facts('$1')}",
            resident_id,
        )
        assert row is not None  # RESIDENT_FACTS answers exactly one row for any uuid
        return row

    async def change_id(self, conn: Connection) -> str:
        """The id of the transaction making a change (see in_change)."""
        change: str = await conn.fetchval("SELECT pg_current_xact_id()::text")
        return change

    async def of_subject(self, conn: Connection, subject: bytes) -> SubjectFactsRow | None:
        """The subject's kind and ref and, for a resident, their facts (NULL facts for an enterprise)."""
        return await fetch_row(
            conn,
            SubjectFactsRow,
            f"""SELECT s.kind, s.ref, r.active, r.name_enc, r.may_ride, r.ride_reason, r.health, r.insured, r.level
               FROM codes.subjects s
               LEFT JOIN LATERAL (SELECT {_resident_facts("s.ref")}) r ON s.kind = 'resident'
               WHERE s.subject = $1""",
            subject,
        )
