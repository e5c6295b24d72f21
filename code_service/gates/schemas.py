from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec


class Tap(msgspec.Struct, forbid_unknown_fields=True):
    """A tap as a gate recorded it, with its proof: the scanned code's text, or the id of the operator's own online
    transit verification that let the rider through. Who rode is what the platform derives from the proof."""

    tap_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    gate_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    line: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    station: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    direction: Literal["in", "out", "single"]
    tapped_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    verification_id: uuid.UUID | None = None
    rider_token: Annotated[str, msgspec.Meta(max_length=64)] = ""


class TapBatch(msgspec.Struct, forbid_unknown_fields=True):
    taps: Annotated[list[Tap], msgspec.Meta(min_length=1, max_length=5000)]


class TapOutcome(msgspec.Struct, omit_defaults=True):
    tap_id: str
    status: Literal["accepted", "duplicate", "refused"]
    reason: str | None = None  # why a tap was refused


class TapReceipt(msgspec.Struct):
    accepted: int
    duplicates: int
    refused: int
    # One per tap id of the batch, in the batch's order.
    taps: list[TapOutcome]


class RefusedTap(msgspec.Struct):
    seq: int
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str
    tapped_at: dt.datetime
    received_at: dt.datetime
    reason: str
    verification_id: uuid.UUID | None = None


class RefusedTaps(msgspec.Struct):
    refused: list[RefusedTap]
    # Ask again with since=next for the ones after these (the same value when there are none yet).
    next: int


class DenyListDocument(msgspec.Struct):
    version: int
    full: bool
    jws: str


class GateTap(msgspec.Struct, frozen=True):
    """A tap a gate uploaded, as the fare side takes it over: the operator is the organisation whose gate it was."""

    organisation_id: uuid.UUID
    tap_id: str
    gate_id: str
    line: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime
    # The rider the platform derived from the tap's verified code (None: a tap uploaded before taps were
    # proven, which is never billed).
    resident_id: uuid.UUID | None
