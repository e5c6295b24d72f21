"""The deny list gates sync (device credentials: revoked or superseded, of blocked accounts, of riders in debt) and
tap uploads."""

from __future__ import annotations

import base64
import json
import time
import uuid

from redis.asyncio import Redis

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import invalid_field
from code_service.auth import Scanner
from code_service.codes.repository import CREDENTIAL_GRACE, CredentialRepository, SubjectRepository
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
    """The published list names device credentials only (docs/code-format.md section 8): kind `credential` (revoked
    or superseded), `account` (every live credential of a blocked account) or `debtor` (every live credential of a
    rider in debt). Online verification reads the holder's live status instead, plus two Redis marks: a revoked
    credential's, and a blocked account's (by the platform's holder id, never published)."""

    def __init__(self, redis: Redis, keys: KeyService) -> None:
        self._redis = redis
        self._keys = keys
        self._repo = DenyRepository()
        self._credentials = CredentialRepository()

    async def deny(self, conn: Connection, kind: str, credential_ids: list[bytes], reason: str) -> None:
        """Online verification checks a revoked credential's mark in Redis, so it is refused at once by every
        process; accounts and debts it reads from the holder's live facts."""
        await self._repo.record(conn, kind, credential_ids, "add", reason)
        if kind == "credential" and credential_ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in credential_ids:
                    pipe.set(deny_mark(kind, entry), reason, ex=_MARK_TTL)
                await pipe.execute()

    async def allow(self, conn: Connection, kind: str, credential_ids: list[bytes], reason: str) -> None:
        await self._repo.record(conn, kind, credential_ids, "remove", reason)
        if kind == "credential" and credential_ids:
            await self._redis.delete(*(deny_mark(kind, e) for e in credential_ids))

    async def deny_holder(
        self, conn: Connection, kind: str, resident_id: uuid.UUID, reason: str
    ) -> list[bytes]:
        """Lists every live credential of the resident under `kind` (account or debtor); returns their ids."""
        live = await self._credentials.live_ids_of(conn, resident_id, CREDENTIAL_GRACE)
        await self.deny(conn, kind, live, reason)
        return live

    async def allow_holder(
        self, conn: Connection, kind: str, resident_id: uuid.UUID, reason: str
    ) -> list[bytes]:
        """Takes the resident's credentials listed under `kind` off the list again; returns their ids."""
        recent = await self._credentials.recent_ids_of(conn, resident_id)
        listed = await self._repo.listed(conn, kind, recent)
        await self.allow(conn, kind, listed, reason)
        return listed

    async def mark_account(self, subject: bytes, blocked: bool, reason: str) -> None:
        """Online verification's at-once view of a blocked account, keyed by the holder id (never published)."""
        if blocked:
            await self._redis.set(deny_mark("account", subject), reason)
        else:
            await self._redis.delete(deny_mark("account", subject))

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
    """What the fare side (payments' transit) asks of the gates: uploaded taps to price, the resident behind a
    holder id, and riders in debt on the gates' deny list (kind debtor: every live credential of the rider; new
    credentials and codes carry may-ride 0 while the debt lasts)."""

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
        await self._deny.deny_holder(conn, "debtor", resident_id, reason)

    async def allow_debtor(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        await self._deny.allow_holder(conn, "debtor", resident_id, reason)


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
