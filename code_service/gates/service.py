"""The deny list gates sync (device credentials: revoked or superseded, of blocked accounts, of riders in debt) and
tap uploads."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import invalid_field
from code_service.auth import Scanner
from code_service.codes.repository import CREDENTIAL_GRACE, CredentialRepository, SubjectRepository
from code_service.gates.repository import DenyRepository, TapRepository, UntakenTapRow
from code_service.gates.schemas import GateTap, RefusedTap, RefusedTaps, Tap, TapOutcome, TapReceipt
from code_service.keys.service import KeyService
from code_service.verification.schemas import ProvenCode
from code_service.verifier.denylist import KINDS
from code_service.verifier.format import sign_raw

# Gates record times of this era; a year far outside it is malformed (PostgreSQL cannot store some of them).
_RECORDABLE_YEARS = (2000, 2999)
# How long after a tap its gate may upload it: long enough for an offline gate to come back after an outage over
# a weekend, short enough that a tap cannot be invented for a day long gone (docs/api.md, Taps).
MAX_UPLOAD_DELAY = 72 * 3600
# A verification another server process made a moment ago may not be written yet (scan records are written in
# batches off the verify path): a tap refused for naming an unknown verification is proven again when sent again.
_RETRYABLE = frozenset({"unknown-verification"})
REFUSED_TAPS = Counter(
    "tzt_taps_refused_total", "Uploaded taps the platform refused (never billed), by reason", ["reason"]
)
_log = structlog.get_logger("gates")
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


class TapProver(Protocol):
    """How a tap's proof is checked (code_service.verification's VerificationService)."""

    @property
    def skew(self) -> int: ...

    async def prove_transit_codes(
        self, conn: Connection, scanned: list[tuple[str, float]]
    ) -> list[ProvenCode | str]: ...

    async def prove_transit_verification(
        self, conn: Connection, organisation_id: uuid.UUID, verification_id: uuid.UUID, at: float
    ) -> ProvenCode | str: ...

    async def flush_scans(self) -> None:
        """This process's online verifications of a moment ago are written (others' within 0.2 s)."""
        ...


def _holds(directions: set[str], direction: str) -> bool:
    """Whether a code whose taps already have `directions` has no room for one more in `direction`: at most one
    entry and one exit, or one single tap."""
    if direction == "single":
        return bool(directions)
    return direction in directions or "single" in directions


class TapService:
    """Taps are proofs: each is verified at its own time, within MAX_UPLOAD_DELAY of its upload, and at most one
    entry and one exit (or one single tap) per code is kept. Refused taps are stored for the operator's report
    (GET /api/v1/gates/taps/refused), counted, and never reach the fare side."""

    def __init__(self, prover: TapProver, clock: Callable[[], float] = time.time) -> None:
        self._repo = TapRepository()
        self._prover = prover
        self.clock = clock

    async def upload(self, conn: Connection, scanner: Scanner, taps: list[Tap]) -> TapReceipt:
        for i, tap in enumerate(taps):
            if not _RECORDABLE_YEARS[0] <= tap.tapped_at.year <= _RECORDABLE_YEARS[1]:
                raise invalid_field(f"taps[{i}].tapped_at", "not a time a gate could have recorded")
            if (tap.code is None) == (tap.verification_id is None):
                raise invalid_field(
                    f"taps[{i}].code", "give the scanned code or a verification_id (one of them)"
                )
        operator = scanner.organisation_id
        batch = list({t.tap_id: t for t in taps}.values())
        # A tap id sent again keeps its first outcome, except a refusal that may not hold any more.
        known: dict[str, str | None] = {}
        retried: set[str] = set()
        for row in await self._repo.known(conn, operator, [t.tap_id for t in batch]):
            if row.reason in _RETRYABLE:
                retried.add(row.tap_id)
            else:
                known[row.tap_id] = row.reason
        outcomes: dict[str, TapOutcome] = {
            tap_id: TapOutcome(tap_id, "duplicate")
            if reason is None
            else TapOutcome(tap_id, "refused", reason)
            for tap_id, reason in known.items()
        }
        refused: dict[str, str] = {}
        proven: list[tuple[Tap, ProvenCode]] = []
        now = self.clock()
        skew = self._prover.skew
        proofs: dict[str, ProvenCode | str] = {}
        scanned: list[tuple[Tap, tuple[str, float]]] = []
        for tap in batch:
            if tap.tap_id in known:
                continue
            at = tap.tapped_at.timestamp()
            if at > now + skew:
                proofs[tap.tap_id] = "future"
            elif at < now - MAX_UPLOAD_DELAY:
                proofs[tap.tap_id] = "too-late"
            elif tap.code is not None:
                scanned.append((tap, (tap.code, at)))
            else:
                assert tap.verification_id is not None  # one of them, checked above
                proofs[tap.tap_id] = await self._prover.prove_transit_verification(
                    conn, operator, tap.verification_id, at
                )
        # The scanned codes together: their holders in one statement, not one per tap.
        verified = await self._prover.prove_transit_codes(conn, [code for _, code in scanned])
        for (tap, _), proof in zip(scanned, verified, strict=True):
            proofs[tap.tap_id] = proof
        for tap in batch:
            if tap.tap_id in known:
                continue
            proof = proofs[tap.tap_id]
            if isinstance(proof, str):
                refused[tap.tap_id] = proof
            else:
                proven.append((tap, proof))
        proven = await self._not_denied(conn, proven, refused)
        proven = await self._not_shown_elsewhere(conn, operator, proven, refused)
        proven = await self._first_per_slot(conn, operator, proven, refused)
        inserted = set(
            await self._repo.insert_many(
                conn,
                operator,
                [
                    (
                        t.tap_id,
                        t.gate_id,
                        t.line,
                        t.station,
                        t.direction,
                        t.tapped_at,
                        t.rider_token,
                        p.replay_id,
                        p.credential_id,
                        p.resident_id,
                        t.verification_id,
                    )
                    for t, p in proven
                ],
            )
        )
        skipped = [(t, p) for t, p in proven if t.tap_id not in inserted]
        if skipped:  # a concurrent upload took the tap id (the same tap) or the code's slot (a replay)
            ids = [t.tap_id for t, _ in skipped]
            again = {r.tap_id for r in await self._repo.known(conn, operator, ids) if r.reason is None}
            lost = [(t, p) for t, p in skipped if t.tap_id not in again]
            for tap_id in again:
                outcomes[tap_id] = TapOutcome(tap_id, "duplicate")
            # The same reasons as before storing, now that the concurrent upload's tap is visible.
            await self._first_per_slot(conn, operator, lost, refused)
            for tap, _ in lost:
                refused.setdefault(tap.tap_id, "replayed")
        for tap_id in inserted:
            outcomes[tap_id] = TapOutcome(tap_id, "accepted")
        await self._repo.forget_refused(conn, operator, list(inserted & retried))
        if refused:
            by_id = {t.tap_id: t for t in batch}
            await self._repo.insert_refused(
                conn,
                operator,
                [
                    (
                        t.tap_id,
                        t.gate_id,
                        t.line,
                        t.station,
                        t.direction,
                        t.tapped_at,
                        t.verification_id,
                        reason,
                    )
                    for t, reason in ((by_id[tap_id], reason) for tap_id, reason in refused.items())
                ],
            )
            for tap_id, reason in refused.items():
                outcomes[tap_id] = TapOutcome(tap_id, "refused", reason)
                REFUSED_TAPS.labels(reason).inc()
            _log.warning("taps refused", organisation_id=str(operator), count=len(refused))
        answer = [outcomes[t.tap_id] for t in batch]
        return TapReceipt(
            accepted=len(inserted),
            duplicates=sum(1 for o in answer if o.status == "duplicate") + len(taps) - len(batch),
            refused=len(refused),
            taps=answer,
        )

    async def _not_denied(
        self, conn: Connection, proven: list[tuple[Tap, ProvenCode]], refused: dict[str, str]
    ) -> list[tuple[Tap, ProvenCode]]:
        """Drops (as refused) taps of a code whose account or phone credential was on the deny list at the tap's
        time: a gate with a stale list let it through, but its holder did not ride (a lost phone, a closed
        account). A debtor did ride: that tap stands and is billed like any other."""
        entries = [
            (n, kind, entry, tap.tapped_at)
            for n, (tap, proof) in enumerate(proven)
            for kind, entry in proof.deny_entries
            if kind in ("account", "credential")
        ]
        denied = await self._repo.denied_at(conn, entries)
        for n in denied:
            refused[proven[n][0].tap_id] = "denied"
        return [p for n, p in enumerate(proven) if n not in denied]

    async def _not_shown_elsewhere(
        self,
        conn: Connection,
        operator: uuid.UUID,
        proven: list[tuple[Tap, ProvenCode]],
        refused: dict[str, str],
    ) -> list[tuple[Tap, ProvenCode]]:
        """A code proves that its holder showed it, not to whom. Where the platform saw it verified online, that
        says to whom: a code another operator's gate let through in transit is that operator's ride
        (`shown-to-another-operator`). (A scan in another scene says nothing against a ride: a metro that checks
        health codes at its entrance sees the same code at its gate a moment later. Operators without
        `verify:transit`, such as hospitals, cannot upload taps at all.) Taps proven by the operator's own
        verification_id are that verification."""
        by_code = [(tap, proof) for tap, proof in proven if tap.verification_id is None]
        if by_code:
            await self._prover.flush_scans()
        shown: dict[bytes, list[tuple[uuid.UUID, str, str]]] = {}
        for row in await self._repo.shown_online(conn, list({p.replay_id for _, p in by_code})):
            shown.setdefault(row.replay_id, []).append((row.organisation_id, row.scene, row.verdict))
        kept = []
        for tap, proof in proven:
            seen = shown.get(proof.replay_id, []) if tap.verification_id is None else []
            if any(
                org != operator and scene == "transit" and verdict == "allowed"
                for org, scene, verdict in seen
            ):
                refused[tap.tap_id] = "shown-to-another-operator"
            else:
                kept.append((tap, proof))
        return kept

    async def _first_per_slot(
        self,
        conn: Connection,
        operator: uuid.UUID,
        proven: list[tuple[Tap, ProvenCode]],
        refused: dict[str, str],
    ) -> list[tuple[Tap, ProvenCode]]:
        """Drops (as replayed) a tap whose code already has its entry, exit or single tap, stored or earlier in
        this batch, at any gate of any operator; `claimed-by-another-operator` when another operator's tap holds
        it (two operators each claim one showing of a code: billed once, and the refused operator is told whose
        claim came first by the reason, not by name)."""
        held: dict[bytes, dict[str, uuid.UUID]] = {}  # the code's directions taken, and by which operator
        for row in await self._repo.replay_slots(conn, list({p.replay_id for _, p in proven})):
            held.setdefault(row.code_id, {})[row.direction] = row.organisation_id
        kept = []
        for tap, proof in proven:
            taken = held.setdefault(proof.replay_id, {})
            if _holds(set(taken), tap.direction):
                blocking = (
                    taken
                    if tap.direction == "single"
                    else {d: org for d, org in taken.items() if d in (tap.direction, "single")}
                )
                others = set(blocking.values()) - {operator}
                refused[tap.tap_id] = "claimed-by-another-operator" if others else "replayed"
            else:
                taken[tap.direction] = operator
                kept.append((tap, proof))
        return kept

    async def refused(self, conn: Connection, scanner: Scanner, since: int, limit: int) -> RefusedTaps:
        rows = await self._repo.refused_since(conn, scanner.organisation_id, since, limit)
        return RefusedTaps(
            refused=[
                RefusedTap(
                    seq=r.seq,
                    tap_id=r.tap_id,
                    gate_id=r.gate_id,
                    line=r.line,
                    station=r.station,
                    direction=r.direction,
                    tapped_at=r.tapped_at,
                    received_at=r.received_at,
                    reason=r.reason,
                    verification_id=r.verification_id,
                )
                for r in rows
            ],
            next=rows[-1].seq if rows else since,
        )


class TransitGates:
    """What the fare side (payments' transit) asks of the gates: proven taps to price (with the rider the platform
    derived from each verified code), and riders in debt on the gates' deny list (kind debtor: every live credential
    of the rider; new credentials and codes carry may-ride 0 while the debt lasts)."""

    def __init__(self, deny: DenyListService) -> None:
        self._deny = deny
        self._taps = TapRepository()
        self._subjects = SubjectRepository()

    async def untaken(self, conn: Connection, limit: int) -> list[GateTap]:
        """Proven taps not yet taken over, oldest upload first (and locked for this transaction). Refused taps are
        kept apart and never come here."""
        return [_gate_tap(r) for r in await self._taps.untaken(conn, limit)]

    async def mark_taken(self, conn: Connection, keys: list[tuple[uuid.UUID, str]]) -> None:
        """(organisation_id, tap_id) of taps now taken over; in the caller's transaction."""
        await self._taps.mark_taken(conn, keys)

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
        resident_id=row.resident_id,
    )
