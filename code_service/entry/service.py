"""Entry with the one code (docs/code-format.md 7.1, decision 0029): the domains that sell entry (tickets, bookings)
answer through the kernel's Admissions port; this part asks them in turn, builds a gate's signed attendee list for
offline admission, takes gates' uploads of what they admitted offline, and signs printed ticket codes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import asyncpg
import structlog

from app_backend.kernel.admissions import Admission, Admissions, Attendee
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden, invalid_field, not_found
from code_service.auth import Scanner
from code_service.codes.repository import CREDENTIAL_GRACE
from code_service.codes.service import SCENE_MIN_LEVEL
from code_service.entry.repository import EntryRepository
from code_service.entry.schemas import (
    AdmissionOutcome,
    AdmissionReceipt,
    AttendeeListDocument,
    OfflineAdmission,
)
from code_service.keys.service import KeyService, Signer
from code_service.verification.schemas import VerifiedCode
from code_service.verifier.attendees import ATTENDEES_TYP
from code_service.verifier.format import (
    EVENT_SCENE,
    MAX_TICKET_LIFETIME,
    encode_ticket_code,
    sign_raw,
)

_log = structlog.get_logger("entry")
EVENT_SCOPE = "verify:event"
# How long after a scan a gate may upload the admission it made offline (as for taps: an outage over a weekend).
MAX_UPLOAD_DELAY = 72 * 3600
_RECORDABLE_YEARS = (2000, 2999)
# Gates re-sync their attendee list at least this often (new tickets, returned ones, new phone credentials).
ATTENDEES_REFRESH_WITHIN = 300
NO_TICKET = Admission(admitted=False, reason="no-ticket")


def require_event_scope(scanner: Scanner) -> None:
    if EVENT_SCOPE not in scanner.scopes:
        raise forbidden(f"this credential lacks the scope {EVENT_SCOPE}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed_document(signer: Signer, typ: str, body: dict[str, object]) -> str:
    """A compact JWS (ES256) of `body`, as the deny list is signed (docs/code-format.md 8.1)."""
    header = _b64url(json.dumps({"alg": "ES256", "kid": signer.kid, "typ": typ}).encode())
    payload = _b64url(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    signature = _b64url(sign_raw(signer.private_key, f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


class AdmissionDesk:
    """The Admissions providers (tickets, bookings), handed over as their modules start (CodeServices.use_admissions)
    and asked in turn: the first that knows the occasion answers, the others answer None. With none that knows it,
    the answer is `no-ticket`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._providers: list[Admissions] = []

    def use(self, provider: Admissions) -> None:
        if provider not in self._providers:
            self._providers.append(provider)

    async def admit(
        self,
        occasion_id: uuid.UUID,
        entrance: str,
        verifier_id: uuid.UUID,
        at: dt.datetime,
        *,
        resident_id: uuid.UUID | None = None,
        ticket_id: uuid.UUID | None = None,
        conn: Connection | None = None,
    ) -> Admission:
        """The provider's answer, in `conn`'s transaction, or in a transaction of its own (online verification):
        the provider records the admission there, once per ticket."""
        if conn is not None:
            return await self._ask(conn, occasion_id, entrance, verifier_id, at, resident_id, ticket_id)
        if not self._providers:
            return NO_TICKET
        async with self._pool.acquire() as own, own.transaction():
            return await self._ask(own, occasion_id, entrance, verifier_id, at, resident_id, ticket_id)

    async def _ask(
        self,
        conn: Connection,
        occasion_id: uuid.UUID,
        entrance: str,
        verifier_id: uuid.UUID,
        at: dt.datetime,
        resident_id: uuid.UUID | None,
        ticket_id: uuid.UUID | None,
    ) -> Admission:
        for provider in self._providers:
            answer = await provider.admit(
                conn, occasion_id, entrance, verifier_id, at, resident_id=resident_id, ticket_id=ticket_id
            )
            if answer is not None:
                return answer
        return NO_TICKET

    async def attendees(
        self, conn: Connection, occasion_id: uuid.UUID, verifier_id: uuid.UUID
    ) -> list[Attendee] | None:
        for provider in self._providers:
            found = await provider.attendees(conn, occasion_id, verifier_id)
            if found is not None:
                return found
        return None


class AttendeeLists:
    """A gate's attendee list of one occasion (docs/code-format.md 7.1): every valid ticket by its id (a printed
    ticket admits by it), with the ids of the live device credentials of its attendee (a phone admits offline by its
    credential_id: the gate never learns who), only for an active account at the event scene's level."""

    def __init__(self, desk: AdmissionDesk, keys: KeyService, clock: Callable[[], float] = time.time) -> None:
        self._desk = desk
        self._keys = keys
        self._repo = EntryRepository()
        self.clock = clock

    async def document(
        self, conn: Connection, scanner: Scanner, occasion_id: uuid.UUID
    ) -> AttendeeListDocument:
        require_event_scope(scanner)
        attendees = await self._desk.attendees(conn, occasion_id, scanner.organisation_id)
        if attendees is None:
            raise not_found("occasion: no such session or slot, or this verifier is not one of its gates")
        residents = list({a.resident_id for a in attendees if a.resident_id is not None})
        credentials: dict[uuid.UUID, list[str]] = {}
        if residents:
            for row in await self._repo.admitting_credentials(
                conn, residents, SCENE_MIN_LEVEL[EVENT_SCENE], CREDENTIAL_GRACE
            ):
                credentials.setdefault(row.resident_id, []).append(row.credential_id.hex())
        issued_at = int(self.clock())
        tickets: list[dict[str, object]] = []
        for attendee in attendees:
            entry: dict[str, object] = {
                "ticket": str(attendee.ticket_id),
                "entrances": list(attendee.entrances),
            }
            if attendee.section:
                entry["section"] = attendee.section
            if attendee.seat:
                entry["seat"] = attendee.seat
            entry["credentials"] = (
                credentials.get(attendee.resident_id, []) if attendee.resident_id is not None else []
            )
            tickets.append(entry)
        body: dict[str, object] = {
            "occasion": str(occasion_id),
            "issued_at": issued_at,
            "refresh_within": ATTENDEES_REFRESH_WITHIN,
            "tickets": tickets,
        }
        jws = signed_document(await self._keys.signer(), ATTENDEES_TYP, body)
        return AttendeeListDocument(
            occasion_id=occasion_id, tickets=len(tickets), issued_at=issued_at, jws=jws
        )


class TicketCodes:
    """Printed ticket codes (type 4, docs/code-format.md 4.5): for an attendee without a phone, signed with the
    platform's code keys, naming the occasion and the ticket, valid until the occasion ends, verifiable offline by
    any gate from the JWKS. The tickets domain (and bookings) call `issue`; returning the ticket ends it (the
    provider answers `returned`, and the attendee list no longer lists it)."""

    def __init__(self, pool: asyncpg.Pool, keys: KeyService, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._keys = keys
        self.clock = clock

    async def issue(
        self,
        ticket_id: uuid.UUID,
        occasion_id: uuid.UUID,
        not_after: dt.datetime,
        *,
        conn: Connection | None = None,
    ) -> str:
        """The printed code's text (`TZ2:` …, QR version 7 at level M), valid from now until `not_after` (the
        occasion's end). In `conn`'s transaction when given; the signing key stays published until `not_after`."""
        if not_after.tzinfo is None:
            raise invalid_field("not_after", "a time with a zone")
        now = int(self.clock())
        until = int(not_after.timestamp())
        if until <= now:
            raise invalid_field("not_after", "the occasion has ended: no ticket code can be printed for it")
        if until - now > MAX_TICKET_LIFETIME:
            raise invalid_field("not_after", "a printed ticket lives at most 400 days")
        if conn is not None:
            signer = await self._keys.ticket_signer(conn, ticket_id, occasion_id, not_after)
        else:
            async with self._pool.acquire() as own, own.transaction():
                signer = await self._keys.ticket_signer(own, ticket_id, occasion_id, not_after)
        return encode_ticket_code(
            signer.private_key, signer.kid_bytes, occasion_id.bytes, ticket_id.bytes, now, until
        )


class EventProver(Protocol):
    """How an uploaded admission's code is checked and its scan recorded (VerificationService)."""

    @property
    def skew(self) -> int: ...

    async def verify_codes(
        self, conn: Connection, scanned: list[tuple[str, float]], scene: str
    ) -> list[VerifiedCode]: ...

    def record_event_scan(
        self, scanner: Scanner, subject: bytes, at: dt.datetime, allowed: bool, reason: str, replay_id: bytes
    ) -> None: ...


class AdmissionUploads:
    """Admissions a gate made offline, uploaded later: each code verified again at its scan time (within
    MAX_UPLOAD_DELAY), then admitted through its provider once (the provider's compare-and-set: a ticket admitted at
    another gate, online or by another upload, is `already-admitted` and never counted twice). Idempotent per
    (organisation, admission_id)."""

    def __init__(
        self, prover: EventProver, desk: AdmissionDesk, clock: Callable[[], float] = time.time
    ) -> None:
        self._prover = prover
        self._desk = desk
        self._repo = EntryRepository()
        self.clock = clock

    async def upload(
        self, conn: Connection, scanner: Scanner, admissions: list[OfflineAdmission]
    ) -> AdmissionReceipt:
        require_event_scope(scanner)
        for i, item in enumerate(admissions):
            if not _RECORDABLE_YEARS[0] <= item.scanned_at.year <= _RECORDABLE_YEARS[1]:
                raise invalid_field(f"admissions[{i}].scanned_at", "not a time a gate could have recorded")
        operator = scanner.organisation_id
        batch = list({a.admission_id: a for a in admissions}.values())
        outcomes: dict[str, AdmissionOutcome] = {}
        # An admission id sent again keeps its first outcome: `duplicate` if it admitted, its refusal otherwise.
        for row in await self._repo.uploaded(conn, operator, [a.admission_id for a in batch]):
            outcomes[row.admission_id] = (
                AdmissionOutcome(row.admission_id, "duplicate", None, row.section, row.seat)
                if row.status == "admitted"
                else AdmissionOutcome(row.admission_id, "refused", row.reason)
            )
        now = self.clock()
        skew = self._prover.skew
        pending = [a for a in batch if a.admission_id not in outcomes]
        timely: list[OfflineAdmission] = []
        early: dict[str, str] = {}
        for item in pending:
            at = item.scanned_at.timestamp()
            if at > now + skew:
                early[item.admission_id] = "future"
            elif at < now - MAX_UPLOAD_DELAY:
                early[item.admission_id] = "too-late"
            else:
                timely.append(item)
        verified = await self._prover.verify_codes(
            conn, [(a.code, a.scanned_at.timestamp()) for a in timely], EVENT_SCENE
        )
        proofs: dict[str, VerifiedCode] = {a.admission_id: v for a, v in zip(timely, verified, strict=True)}
        for item in pending:
            if not await self._repo.claim_upload(
                conn, operator, item.admission_id, item.occasion_id, item.entrance, item.scanned_at
            ):
                outcomes[item.admission_id] = AdmissionOutcome(item.admission_id, "duplicate")
                continue
            answer = await self._admit(conn, scanner, item, early.get(item.admission_id), proofs)
            await self._repo.settle_upload(
                conn,
                operator,
                item.admission_id,
                "admitted" if answer.admitted else "refused",
                answer.reason,
                answer.ticket_id,
                answer.section,
                answer.seat,
            )
            outcomes[item.admission_id] = AdmissionOutcome(
                item.admission_id,
                "admitted" if answer.admitted else "refused",
                None if answer.admitted else answer.reason,
                answer.section,
                answer.seat,
            )
        answered = [outcomes[a.admission_id] for a in batch]
        refused = sum(1 for o in answered if o.status == "refused")
        if refused:
            _log.info("offline admissions refused", organisation_id=str(operator), count=refused)
        return AdmissionReceipt(
            admitted=sum(1 for o in answered if o.status == "admitted"),
            duplicates=sum(1 for o in answered if o.status == "duplicate") + len(admissions) - len(batch),
            refused=refused,
            admissions=answered,
        )

    async def _admit(
        self,
        conn: Connection,
        scanner: Scanner,
        item: OfflineAdmission,
        early: str | None,
        proofs: dict[str, VerifiedCode],
    ) -> Admission:
        if early is not None:
            return Admission(admitted=False, reason=early)
        proof = proofs[item.admission_id]
        if not proof.allowed:
            return Admission(admitted=False, reason=proof.reason)
        if proof.ticket_id is not None:  # a printed ticket: its occasion is signed into it
            if proof.occasion_id != item.occasion_id:
                return NO_TICKET
            return await self._desk.admit(
                item.occasion_id,
                item.entrance,
                scanner.organisation_id,
                item.scanned_at,
                ticket_id=proof.ticket_id,
                conn=conn,
            )
        if proof.holder_kind != "resident" or proof.holder_id is None:
            return Admission(admitted=False, reason="unknown-holder")
        answer = await self._desk.admit(
            item.occasion_id,
            item.entrance,
            scanner.organisation_id,
            item.scanned_at,
            resident_id=proof.holder_id,
            conn=conn,
        )
        # The holder sees the admission in their scan history, as an online scan.
        self._prover.record_event_scan(
            scanner, proof.subject, item.scanned_at, answer.admitted, answer.reason, proof.replay_id
        )
        return answer
