from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

Scene = Literal["transit", "health", "medical", "enterprise", "event"]


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    scene: Scene
    # The event scene only (and required there): the occasion the gate admits to (a session or a booked slot) and
    # the entrance it stands at.
    occasion_id: uuid.UUID | None = None
    entrance: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class VerifyAnswer(msgspec.Struct, omit_defaults=True):
    """Only the scene's fields are ever set: a gate learns may-ride and a rider token, a checkpoint the colour and
    a masked name, a hospital insured and a voucher, an inspector the enterprise's public facts, a venue's gate the
    ticket's section and seat (never the attendee's name)."""

    allowed: bool
    reason: str
    scene: str
    code_type: str = ""
    degraded: bool = False
    rider_token: str | None = None
    colour: str | None = None
    masked_name: str | None = None
    insured: bool | None = None
    voucher: str | None = None
    voucher_expires_in: int | None = None
    enterprise_name: str | None = None
    uscc: str | None = None
    standing: str | None = None
    # An accepted transit verification's id: a gate may upload it as the proof of its tap instead of the code.
    verification_id: str | None = None
    section: str | None = None
    seat: str | None = None
    re_entry: bool | None = None  # admitted again under the occasion's re-entry rule


class VoucherRedeem(msgspec.Struct, forbid_unknown_fields=True):
    voucher: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class VoucherRedeemed(msgspec.Struct):
    insured: bool
    masked_name: str
    settlement_ref: str


class ScanRecord(msgspec.Struct):
    at: dt.datetime
    scene: str
    verdict: str
    reason: str
    organisation: str


class ScanHistory(msgspec.Struct):
    scans: list[ScanRecord]


class ProvenCode(msgspec.Struct, frozen=True):
    """What the platform derives from a transit code it verified at a tap's time: the rider, never a claim."""

    resident_id: uuid.UUID
    replay_id: bytes  # at most one entry and one exit (or one single tap) per replay id
    credential_id: bytes | None  # a device code's credential
    code_type: str  # personal | device
    # (kind, entry) pairs of the deny list that must not have been denied at the tap's time
    deny_entries: tuple[tuple[str, bytes], ...]


class VerifiedCode(msgspec.Struct, frozen=True):
    """A scanned code checked by the platform for one scene at one time (VerificationService.verify_code): the
    seam for other paths that hold a code text, such as uploaded taps."""

    valid: bool  # genuine and in date (steps 1-5 of docs/code-format.md section 6)
    reason: str  # "ok", or the first reason of section 6 that refused it (no deny list, no replay store)
    code_type: str = ""  # personal | enterprise | device | ticket
    holder_kind: str = ""  # resident | enterprise ("" when the code is not genuine)
    holder_id: uuid.UUID | None = None  # the resident's (or enterprise's) id
    subject: bytes = b""  # the platform's 8-byte holder id (codes.subjects), never shown to verifiers
    replay_id: bytes = b""  # code_id (server code) or credential_id || shown_at || counter (device code)
    credential_id: bytes | None = None  # device codes only
    flags: int = 0  # the entitlements the code carried, in the clear (Flags.from_byte)
    ticket_id: uuid.UUID | None = None  # a printed ticket's (code_type "ticket")
    occasion_id: uuid.UUID | None = None  # the occasion a printed ticket names

    @property
    def allowed(self) -> bool:
        return self.valid and self.reason == "ok"
