"""The deny list gates sync (revoked or superseded devices, revoked accounts, riders in debt) and tap uploads."""

from __future__ import annotations

import base64
import json
import time
import uuid

from redis.asyncio import Redis

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import invalid_field
from code_service.auth import Scanner
from code_service.codes.repository import SubjectRepository
from code_service.gates.repository import DenyRepository, TapRepository, TapValues, UntakenTapRow
from code_service.gates.schemas import GateTap, Tap, TapReceipt
from code_service.keys.service import KeyService
from code_service.verifier.denylist import KINDS
from code_service.verifier.format import sign_raw

# Gates record times of this era; a year far outside it is malformed (PostgreSQL cannot store some of them).
_RECORDABLE_YEARS = (2000, 2999)
# Online verification sees a revoked credential at once through this Redis mark (credentials live <= 24 h).
_MARK_TTL = 25 * 3600


def deny_mark(kind: str, entry: bytes) -> str:
    return f"deny:{kind}:{entry.hex()}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class DenyListService:
    def __init__(self, redis: Redis, keys: KeyService) -> None:
        self._redis = redis
        self._keys = keys
        self._repo = DenyRepository()

    async def deny(self, conn: Connection, kind: str, entries: list[bytes], reason: str) -> None:
        """Online verification checks these marks in Redis, so a denial is seen at once by every process."""
        await self._repo.record(conn, kind, entries, "add", reason)
        if kind in ("credential", "account") and entries:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.set(deny_mark(kind, entry), reason, ex=_MARK_TTL if kind == "credential" else None)
                await pipe.execute()

    async def allow(self, conn: Connection, kind: str, entries: list[bytes], reason: str) -> None:
        await self._repo.record(conn, kind, entries, "remove", reason)
        if kind in ("credential", "account") and entries:
            await self._redis.delete(*(deny_mark(kind, e) for e in entries))

    async def denied_now(self, conn: Connection, entries: list[tuple[str, bytes]]) -> set[str]:
        """The kinds among these (kind, entry) pairs that are denied now, read from the change log (what gates
        get), not from the Redis marks: for answering while Redis is unavailable."""
        return await self._repo.denied_kinds(conn, entries)

    async def document(self, conn: Connection, since: int) -> tuple[int, bool, str]:
        """A signed full snapshot (since = 0, or a version from the future) or the changes after `since`."""
        head = await self._repo.head(conn)
        full = since <= 0 or since > head
        packed: dict[str, dict[str, list[bytes]]] = {k: {"add": [], "remove": []} for k in KINDS}
        if full:
            for entry in await self._repo.current(conn, head):
                packed[entry.kind]["add"].append(entry.entry)
        else:
            for change in await self._repo.changes_since(conn, since, head):
                packed[change.kind][change.op].append(change.entry)
        body: dict[str, object] = {
            "version": head,
            "since": 0 if full else since,
            "full": full,
            "issued_at": int(time.time()),
        }
        for kind in KINDS:
            body[kind] = {op: base64.b64encode(b"".join(ids)).decode() for op, ids in packed[kind].items()}
        signer = await self._keys.signer()
        header = _b64url(json.dumps({"alg": "ES256", "kid": signer.kid, "typ": "tzt-deny+json"}).encode())
        payload = _b64url(json.dumps(body, separators=(",", ":")).encode())
        signature = _b64url(sign_raw(signer.private_key, f"{header}.{payload}".encode()))
        return head, full, f"{header}.{payload}.{signature}"


class TapService:
    def __init__(self) -> None:
        self._repo = TapRepository()

    async def upload(self, conn: Connection, scanner: Scanner, taps: list[Tap]) -> TapReceipt:
        for i, tap in enumerate(taps):
            if not _RECORDABLE_YEARS[0] <= tap.tapped_at.year <= _RECORDABLE_YEARS[1]:
                raise invalid_field(f"taps[{i}].tapped_at", "not a time a gate could have recorded")
        rows: list[TapValues] = [
            (
                t.tap_id,
                t.gate_id,
                t.line,
                t.station,
                t.direction,
                t.tapped_at,
                t.rider_token,
                bytes.fromhex(t.code_id),
                bytes.fromhex(t.subject),
                bytes.fromhex(t.credential_id) if t.credential_id else None,
            )
            for t in {t.tap_id: t for t in taps}.values()
        ]
        accepted = await self._repo.insert_many(conn, scanner.organisation_id, rows)
        return TapReceipt(accepted=len(accepted), duplicates=len(taps) - len(accepted))


class TransitGates:
    """What the fare side (payments' transit) asks of the gates: uploaded taps to price, the resident behind a code
    subject, and riders in debt on the gates' deny list (kind debtor, keyed by the code subject)."""

    def __init__(self, deny: DenyListService) -> None:
        self._deny = deny
        self._taps = TapRepository()
        self._subjects = SubjectRepository()

    async def untaken(self, conn: Connection, limit: int) -> list[GateTap]:
        """Uploaded taps not yet taken over, oldest upload first (and locked for this transaction)."""
        return [_gate_tap(r) for r in await self._taps.untaken(conn, limit)]

    async def mark_taken(self, conn: Connection, keys: list[tuple[uuid.UUID, str]]) -> None:
        """(organisation_id, tap_id) of taps now taken over; in the caller's transaction."""
        await self._taps.mark_taken(conn, keys)

    async def resident_of_subject(self, conn: Connection, subject: bytes) -> uuid.UUID | None:
        """The resident a code subject stands for (None: unknown, or an enterprise's)."""
        row = await self._subjects.get(conn, subject)
        if row is None or row.kind != "resident":
            return None
        return row.ref

    async def deny_debtor(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        subject = await self._subjects.of_resident(conn, resident_id)
        if subject is not None:  # no subject: no code was ever issued, so no gate can be shown one
            await self._deny.deny(conn, "debtor", [subject], reason)

    async def allow_debtor(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        subject = await self._subjects.of_resident(conn, resident_id)
        if subject is not None:
            await self._deny.allow(conn, "debtor", [subject], reason)


def _gate_tap(row: UntakenTapRow) -> GateTap:
    return GateTap(
        organisation_id=row.organisation_id,
        tap_id=row.tap_id,
        gate_id=row.gate_id,
        line=row.line,
        station=row.station,
        direction=row.direction,
        tapped_at=row.tapped_at,
        subject=row.subject,
    )
