from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

Entrance = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class AttendeeListDocument(msgspec.Struct):
    """GET /api/v1/gates/attendees: the signed list (`jws`, docs/code-format.md 7.1) and a convenience copy of
    what it is about; a gate acts on the signed payload only."""

    occasion_id: uuid.UUID
    tickets: int
    issued_at: int
    jws: str


class OfflineAdmission(msgspec.Struct, forbid_unknown_fields=True):
    """An admission a gate made offline in the event scene, with its proof: the code it scanned."""

    admission_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    occasion_id: uuid.UUID
    entrance: Entrance
    scanned_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class AdmissionBatch(msgspec.Struct, forbid_unknown_fields=True):
    admissions: Annotated[list[OfflineAdmission], msgspec.Meta(min_length=1, max_length=5000)]


class AdmissionOutcome(msgspec.Struct, omit_defaults=True):
    admission_id: str
    status: Literal["admitted", "duplicate", "refused"]
    # Why it was refused (the verification's reason, or the provider's: no-ticket, already-admitted, ...).
    reason: str | None = None
    section: str | None = None
    seat: str | None = None


class AdmissionReceipt(msgspec.Struct):
    admitted: int
    duplicates: int
    refused: int
    # One per admission id of the batch, in the batch's order.
    admissions: list[AdmissionOutcome]
