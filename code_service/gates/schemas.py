from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

Hex16 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]


class Tap(msgspec.Struct, forbid_unknown_fields=True):
    tap_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    gate_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    line: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    station: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    direction: Literal["in", "out", "single"]
    tapped_at: dt.datetime
    subject: Hex16
    code_id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}([0-9a-f]{12})?$")]
    credential_id: Hex16 | None = None
    rider_token: Annotated[str, msgspec.Meta(max_length=64)] = ""


class TapBatch(msgspec.Struct, forbid_unknown_fields=True):
    taps: Annotated[list[Tap], msgspec.Meta(min_length=1, max_length=5000)]


class TapReceipt(msgspec.Struct):
    accepted: int
    duplicates: int


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
    subject: bytes | None
