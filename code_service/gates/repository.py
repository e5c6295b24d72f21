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
# One proven tap in the column order of TapRepository.insert_many: tap_id, gate_id, line, station, direction,
# tapped_at, rider_token, code_id (the verified code's replay id), credential_id, resident_id, verification_id.
TapValues: TypeAlias = tuple[
    str, str, str, str, str, dt.datetime, str, bytes, bytes | None, uuid.UUID, uuid.UUID | None
]
# One refused tap in the column order of TapRepository.insert_refused: tap_id, gate_id, line, station, direction,
# tapped_at, verification_id, reason.
RefusedValues: TypeAlias = tuple[str, str, str, str, str, dt.datetime, uuid.UUID | None, str]


class DenyEntryRow(msgspec.Struct, frozen=True):
    kind: str  # credential | account | debtor
    entry: bytes


class DenyChangeRow(msgspec.Struct, frozen=True):
    kind: str  # credential | account | debtor
    entry: bytes
    op: str  # add | remove


class KnownTapRow(msgspec.Struct, frozen=True):
    """A tap id an operator uploaded before: proven (reason None) or refused (and why)."""

    tap_id: str
    reason: str | None


class ReplaySlotRow(msgspec.Struct, frozen=True):
    code_id: bytes
    direction: str
    organisation_id: uuid.UUID


class ShownRow(msgspec.Struct, frozen=True):
    """An online verification of a code (codes.scans): who verified it, in which scene, and the verdict."""

    replay_id: bytes
    organisation_id: uuid.UUID
    scene: str
    verdict: str


class RefusedTapRow(msgspec.Struct, frozen=True):
    seq: int
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str
    tapped_at: dt.datetime
    received_at: dt.datetime
    reason: str
    verification_id: uuid.UUID | None


class UntakenTapRow(msgspec.Struct, frozen=True):
    """A tap the fare side has not taken over yet."""

    organisation_id: uuid.UUID
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime
    resident_id: uuid.UUID | None


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
        """The tap ids inserted. Skipped: a tap id this operator uploaded before, and a tap whose code already
        has its entry, exit or single tap (taps_replay_entry_idx, taps_replay_exit_idx), from a concurrent upload."""
        if not taps:
            return []
        records = await conn.fetch(
            """INSERT INTO codes.taps (tap_id, organisation_id, gate_id, line, station, direction, tapped_at,
                                       rider_token, code_id, credential_id, resident_id, verification_id)
               SELECT t.tap_id, $1, t.gate_id, t.line, t.station, t.direction, t.tapped_at, t.rider_token,
                      t.code_id, t.credential_id, t.resident_id, t.verification_id
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                           $8::text[], $9::bytea[], $10::bytea[], $11::uuid[], $12::uuid[])
                    AS t(tap_id, gate_id, line, station, direction, tapped_at, rider_token, code_id,
                         credential_id, resident_id, verification_id)
               ON CONFLICT DO NOTHING RETURNING tap_id""",
            organisation_id,
            *[list(column) for column in zip(*taps, strict=True)],
        )
        return [record[0] for record in records]

    async def delete_refused_before(self, conn: Connection, before: dt.datetime) -> int:
        result: str = await conn.execute("DELETE FROM codes.refused_taps WHERE received_at < $1", before)
        return int(result.rsplit(" ", 1)[1])

    async def insert_refused(
        self, conn: Connection, organisation_id: uuid.UUID, taps: list[RefusedValues]
    ) -> None:
        if not taps:
            return
        await conn.execute(
            """INSERT INTO codes.refused_taps (organisation_id, tap_id, gate_id, line, station, direction,
                                               tapped_at, verification_id, reason)
               SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                          $7::timestamptz[], $8::uuid[], $9::text[])
                    AS t(tap_id, gate_id, line, station, direction, tapped_at, verification_id, reason)
               ON CONFLICT (organisation_id, tap_id) DO UPDATE SET reason = EXCLUDED.reason""",
            organisation_id,
            *[list(column) for column in zip(*taps, strict=True)],
        )

    async def forget_refused(self, conn: Connection, organisation_id: uuid.UUID, tap_ids: list[str]) -> None:
        """Taps refused before and proven now are no longer reported as refused."""
        if tap_ids:
            await conn.execute(
                "DELETE FROM codes.refused_taps WHERE organisation_id = $1 AND tap_id = ANY($2::text[])",
                organisation_id,
                tap_ids,
            )

    async def known(
        self, conn: Connection, organisation_id: uuid.UUID, tap_ids: list[str]
    ) -> list[KnownTapRow]:
        return await fetch_rows(
            conn,
            KnownTapRow,
            """SELECT tap_id, NULL::text AS reason FROM codes.taps
               WHERE organisation_id = $1 AND tap_id = ANY($2::text[])
               UNION ALL
               SELECT tap_id, reason FROM codes.refused_taps
               WHERE organisation_id = $1 AND tap_id = ANY($2::text[])""",
            organisation_id,
            tap_ids,
        )

    async def replay_slots(self, conn: Connection, replay_ids: list[bytes]) -> list[ReplaySlotRow]:
        """The directions proven taps already hold for these codes, over every operator."""
        if not replay_ids:
            return []
        return await fetch_rows(
            conn,
            ReplaySlotRow,
            """SELECT code_id, direction, organisation_id FROM codes.taps
               WHERE code_id = ANY($1::bytea[]) AND resident_id IS NOT NULL""",
            replay_ids,
        )

    async def shown_online(self, conn: Connection, replay_ids: list[bytes]) -> list[ShownRow]:
        """Where these codes were verified online, by any operator."""
        if not replay_ids:
            return []
        return await fetch_rows(
            conn,
            ShownRow,
            """SELECT DISTINCT replay_id, organisation_id, scene, verdict FROM codes.scans
               WHERE replay_id = ANY($1::bytea[])""",
            replay_ids,
        )

    async def denied_at(
        self, conn: Connection, entries: list[tuple[int, str, bytes, dt.datetime]]
    ) -> set[int]:
        """Of (number, kind, entry, at), the numbers whose entry was on the deny list at `at` (its last change
        by then was an add), in one statement."""
        if not entries:
            return set()
        records = await conn.fetch(
            """SELECT k.n FROM unnest($1::int[], $2::text[], $3::bytea[], $4::timestamptz[]) AS k(n, kind, entry, at)
               WHERE (SELECT d.op FROM codes.deny_changes d
                      WHERE d.kind = k.kind AND d.entry = k.entry AND d.at <= k.at
                      ORDER BY d.version DESC LIMIT 1) = 'add'""",
            *[list(column) for column in zip(*entries, strict=True)],
        )
        return {record[0] for record in records}

    async def refused_since(
        self, conn: Connection, organisation_id: uuid.UUID, since: int, limit: int
    ) -> list[RefusedTapRow]:
        return await fetch_rows(
            conn,
            RefusedTapRow,
            """SELECT seq, tap_id, gate_id, line, station, direction, tapped_at, received_at, reason,
                      verification_id
               FROM codes.refused_taps WHERE organisation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            organisation_id,
            since,
            limit,
        )

    async def untaken(self, conn: Connection, limit: int) -> list[UntakenTapRow]:
        """Taps the fare side has not taken yet, oldest upload first; rows locked so two runs never share one."""
        return await fetch_rows(
            conn,
            UntakenTapRow,
            """SELECT organisation_id, tap_id, gate_id, line, station, direction, tapped_at, resident_id
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
