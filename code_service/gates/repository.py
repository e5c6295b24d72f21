"""All SQL for the deny list's change log and for gate taps."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TypeAlias

import msgspec

from app_backend.kernel.db import Connection, fetch_rows

# Writers take this lock until commit, so versions become visible in order and a reader's highest version
# never hides a lower one still in flight.
_DENY_LOCK = 0x7A7464  # "tzd"
# Device credentials live at most 24 h; after that their deny entries (all of them name credentials) carry no
# meaning.
CREDENTIAL_ENTRY_LIFE = "25 hours"
# One uploaded tap in the column order of TapRepository.insert_many: tap_id, gate_id, line, station, direction,
# tapped_at, rider_token, code_id, subject, credential_id.
TapValues: TypeAlias = tuple[str, str, str, str, str, dt.datetime, str, bytes, bytes, bytes | None]


class DenyEntryRow(msgspec.Struct, frozen=True):
    kind: str  # credential | account | debtor
    entry: bytes


class DenyChangeRow(msgspec.Struct, frozen=True):
    kind: str  # credential | account | debtor
    entry: bytes
    op: str  # add | remove


class TapRow(msgspec.Struct, frozen=True):
    """A subject's tap as the gate uploaded it."""

    tap_id: str
    gate_id: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime


class UntakenTapRow(msgspec.Struct, frozen=True):
    """A tap the fare side has not taken over yet."""

    organisation_id: uuid.UUID
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime
    subject: bytes | None


class DenyRepository:
    async def record(self, conn: Connection, kind: str, entries: list[bytes], op: str, reason: str) -> None:
        if not entries:
            return
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _DENY_LOCK)
        await conn.executemany(
            "INSERT INTO codes.deny_changes (kind, entry, op, reason) VALUES ($1, $2, $3, $4)",
            [(kind, e, op, reason) for e in entries],
        )

    async def head(self, conn: Connection) -> int:
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM codes.deny_changes"))

    async def changes_since(self, conn: Connection, since: int, upto: int) -> list[DenyChangeRow]:
        """The last operation per entry among changes in (since, upto]."""
        return await fetch_rows(
            conn,
            DenyChangeRow,
            """SELECT DISTINCT ON (kind, entry) kind, entry, op FROM codes.deny_changes
               WHERE version > $1 AND version <= $2 ORDER BY kind, entry, version DESC""",
            since,
            upto,
        )

    async def current(self, conn: Connection, upto: int) -> list[DenyEntryRow]:
        """Every entry denied as of `upto`, sorted by entry (bytea order is big-endian order)."""
        return await fetch_rows(
            conn,
            DenyEntryRow,
            f"""SELECT kind, entry FROM (
                    SELECT DISTINCT ON (kind, entry) kind, entry, op, at FROM codes.deny_changes
                    WHERE version <= $1 ORDER BY kind, entry, version DESC) last
                WHERE op = 'add' AND at > now() - interval '{CREDENTIAL_ENTRY_LIFE}'
                ORDER BY kind, entry""",
            upto,
        )

    async def denied_kinds(self, conn: Connection, entries: list[tuple[str, bytes]]) -> set[str]:
        """Which of these (kind, entry) pairs are denied now (their last change is an add), in one statement."""
        records = await conn.fetch(
            """SELECT k.kind FROM unnest($1::text[], $2::bytea[]) AS k(kind, entry)
               WHERE (SELECT d.op FROM codes.deny_changes d WHERE d.kind = k.kind AND d.entry = k.entry
                      ORDER BY d.version DESC LIMIT 1) = 'add'""",
            [kind for kind, _ in entries],
            [entry for _, entry in entries],
        )
        return {record[0] for record in records}

    async def listed(self, conn: Connection, kind: str, entries: list[bytes]) -> list[bytes]:
        """Those of `entries` whose last change under `kind` is an add."""
        if not entries:
            return []
        records = await conn.fetch(
            """SELECT k.entry FROM unnest($2::bytea[]) AS k(entry)
               WHERE (SELECT d.op FROM codes.deny_changes d WHERE d.kind = $1 AND d.entry = k.entry
                      ORDER BY d.version DESC LIMIT 1) = 'add'""",
            kind,
            entries,
        )
        return [bytes(record[0]) for record in records]

    async def is_denied(self, conn: Connection, kind: str, entry: bytes) -> bool:
        op = await conn.fetchval(
            """SELECT op FROM codes.deny_changes WHERE kind = $1 AND entry = $2 ORDER BY version DESC LIMIT 1""",
            kind,
            entry,
        )
        return op == "add"


class TapRepository:
    async def insert_many(
        self, conn: Connection, organisation_id: uuid.UUID, taps: list[TapValues]
    ) -> list[str]:
        """The tap ids inserted (a tap id this operator uploaded before is skipped)."""
        records = await conn.fetch(
            """INSERT INTO codes.taps (tap_id, organisation_id, gate_id, line, station, direction, tapped_at,
                                       rider_token, code_id, subject, credential_id)
               SELECT t.tap_id, $1, t.gate_id, t.line, t.station, t.direction, t.tapped_at, t.rider_token,
                      t.code_id, t.subject, t.credential_id
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                           $8::text[], $9::bytea[], $10::bytea[], $11::bytea[])
                    AS t(tap_id, gate_id, line, station, direction, tapped_at, rider_token, code_id, subject,
                         credential_id)
               ON CONFLICT (organisation_id, tap_id) DO NOTHING RETURNING tap_id""",
            organisation_id,
            *[list(column) for column in zip(*taps, strict=True)],
        )
        return [record[0] for record in records]

    async def for_subject(self, conn: Connection, subject: bytes) -> list[TapRow]:
        return await fetch_rows(
            conn,
            TapRow,
            "SELECT tap_id, gate_id, station, direction, tapped_at FROM codes.taps WHERE subject = $1 "
            "ORDER BY tapped_at",
            subject,
        )

    async def untaken(self, conn: Connection, limit: int) -> list[UntakenTapRow]:
        """Taps the fare side has not taken yet, oldest upload first; rows locked so two runs never share one."""
        return await fetch_rows(
            conn,
            UntakenTapRow,
            """SELECT organisation_id, tap_id, gate_id, line, station, direction, tapped_at, subject
               FROM codes.taps WHERE fare_taken_at IS NULL ORDER BY received_at LIMIT $1
               FOR UPDATE SKIP LOCKED""",
            limit,
        )

    async def mark_taken(self, conn: Connection, keys: list[tuple[uuid.UUID, str]]) -> None:
        if not keys:
            return
        await conn.execute(
            """UPDATE codes.taps t SET fare_taken_at = now()
               FROM unnest($1::uuid[], $2::text[]) AS k(organisation_id, tap_id)
               WHERE t.organisation_id = k.organisation_id AND t.tap_id = k.tap_id""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
