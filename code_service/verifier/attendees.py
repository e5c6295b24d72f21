"""A gate's attendee list for one occasion (a ticketed session or a booked slot), for admitting offline in the
`event` scene (docs/code-format.md 7.1): which device credentials and which printed tickets hold a ticket, for which
entrances, with the section and seat the gate may show, and the tickets this gate has admitted.

Documents come from GET /api/v1/gates/attendees?occasion=UUID as a compact JWS (ES256, typ `tzt-attendees+json`)
signed by a platform key in the JWKS. An entry names a ticket and the credential ids of its attendee's phones, never
the attendee."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.format import verify_raw

ATTENDEES_TYP = "tzt-attendees+json"


class AttendeeListError(ValueError):
    pass


class Ticket(NamedTuple):
    ticket_id: bytes  # 16 bytes of the uuid
    entrances: frozenset[str]  # empty: any entrance
    section: str
    seat: str


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AttendeeList:
    """One occasion's tickets, by ticket id and by device credential id; and the tickets admitted here (once per
    ticket: a second scan of any code of an admitted ticket is `already-admitted`)."""

    def __init__(self) -> None:
        self.occasion_id = b""
        self.issued_at = 0
        self.tickets: dict[bytes, Ticket] = {}
        self.by_credential: dict[bytes, list[bytes]] = {}
        self.admitted: set[bytes] = set()

    def apply_document(self, jws: str, key_for: Callable[[str], ec.EllipticCurvePublicKey | None]) -> None:
        """Verifies a signed attendee list and replaces what is held (tickets admitted here are kept when the list
        is of the same occasion). A refused document leaves the list as it was."""
        try:
            header_b64, payload_b64, sig_b64 = jws.split(".")
            header = json.loads(_b64url(header_b64))
            key = (
                key_for(header.get("kid", ""))
                if header.get("alg") == "ES256" and header.get("typ") == ATTENDEES_TYP
                else None
            )
            if key is None:
                raise AttendeeListError("attendee list signed by an unknown key, or not an attendee list")
            if not verify_raw(key, _b64url(sig_b64), f"{header_b64}.{payload_b64}".encode()):
                raise AttendeeListError("attendee list signature does not verify")
            body: dict[str, Any] = json.loads(_b64url(payload_b64))
            self.load(body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, AttendeeListError):
                raise
            raise AttendeeListError(f"malformed attendee list: {exc}") from None

    def load(self, body: dict[str, Any]) -> None:
        """The payload of a verified document (docs/code-format.md 7.1)."""
        occasion = uuid.UUID(body["occasion"]).bytes
        issued_at = int(body["issued_at"])
        if occasion == self.occasion_id and issued_at < self.issued_at:
            raise AttendeeListError("an older attendee list than the one held")
        tickets: dict[bytes, Ticket] = {}
        by_credential: dict[bytes, list[bytes]] = {}
        for entry in body["tickets"]:
            ticket_id = uuid.UUID(entry["ticket"]).bytes
            tickets[ticket_id] = Ticket(
                ticket_id,
                frozenset(str(e) for e in entry.get("entrances", [])),
                str(entry.get("section") or ""),
                str(entry.get("seat") or ""),
            )
            for credential in entry.get("credentials", []):
                raw = bytes.fromhex(credential)
                if len(raw) != 8:
                    raise AttendeeListError("a credential id is 8 bytes")
                by_credential.setdefault(raw, []).append(ticket_id)
        if occasion != self.occasion_id:
            self.admitted = set()
        self.occasion_id, self.issued_at = occasion, issued_at
        self.tickets, self.by_credential = tickets, by_credential

    def admit(
        self, entrance: str, *, credential_id: bytes = b"", ticket_id: bytes = b"", consume: bool = True
    ) -> tuple[str, Ticket | None]:
        """(reason, the ticket) for a device credential or a printed ticket of this occasion at `entrance`: `ok`
        (the ticket is now admitted here, unless not `consume`), `no-ticket`, `wrong-entrance` or
        `already-admitted`. A credential of an attendee with several tickets admits the first one that fits."""
        if ticket_id:
            found = [self.tickets[ticket_id]] if ticket_id in self.tickets else []
        else:
            found = [self.tickets[t] for t in self.by_credential.get(credential_id, ()) if t in self.tickets]
        if not found:
            return "no-ticket", None
        here = [t for t in found if not t.entrances or entrance in t.entrances]
        if not here:
            return "wrong-entrance", found[0]
        fresh = [t for t in here if t.ticket_id not in self.admitted]
        if not fresh:
            return "already-admitted", here[0]
        if consume:
            self.admitted.add(fresh[0].ticket_id)
        return "ok", fresh[0]
