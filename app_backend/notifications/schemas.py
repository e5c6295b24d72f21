from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

# What the platform and departments message residents about; each kind maps to a subscribe-message template per
# mini-program app in the mini-program configuration (docs/operations.md).
# `public_notice` is a department's notice to the residents of a region (an outage, a closure, an event), the
# kind broadcasts are usually sent as. `event_changed` tells a ticket or booking holder that what they hold moved:
# a session delayed or cancelled, a ticket refunded, a booking cancelled.
MessageKind = Literal[
    "code_status_changed",
    "fare_debt",
    "ticket_reminder",
    "complaint_answered",
    "bill_due",
    "public_notice",
    "event_changed",
]
KINDS: tuple[str, ...] = (
    "code_status_changed",
    "fare_debt",
    "ticket_reminder",
    "complaint_answered",
    "bill_due",
    "public_notice",
    "event_changed",
)
GrantResult = Literal["accept", "reject", "ban", "filter"]
Channel = Literal["wechat", "alipay"]
AppId = Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="the mini-program's app id")]
TemplateId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ParamName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ParamValue = Annotated[str, msgspec.Meta(max_length=200)]


class GrantReport(msgspec.Struct, forbid_unknown_fields=True):
    """What `wx.requestSubscribeMessage` answered (template id -> accept, reject, ban or filter), or for Alipay's
    `my.requestSubscribeMessage` each template of `subscribeEntityIds` as accept and of `unsubscribedEntityIds`
    as reject, for the mini-program the resident is in."""

    channel: Channel
    app_id: AppId
    results: Annotated[dict[TemplateId, GrantResult], msgspec.Meta(min_length=1, max_length=20)]


class SubscribeGrant(msgspec.Struct):
    """A grant of one template to one linked identity. `remaining` is the one-time messages not yet sent (a
    long-term grant has none: it is used every time while `status` is accepted)."""

    id: uuid.UUID
    identity_id: uuid.UUID
    channel: str
    app_id: str
    app_name: str
    template_id: str
    kinds: list[str]
    grant: Literal["one_time", "long_term"]
    status: Literal["accepted", "rejected", "banned", "revoked"]
    remaining: int
    updated_at: dt.datetime


class SubscribeGrants(msgspec.Struct):
    grants: list[SubscribeGrant]


class PushDeviceRegistration(msgspec.Struct, forbid_unknown_fields=True):
    platform: Literal["ios", "android", "harmony"]
    token: Annotated[str, msgspec.Meta(min_length=8, max_length=512, description="the push provider's token")]


class PushDevice(msgspec.Struct):
    id: uuid.UUID
    platform: str
    registered_at: dt.datetime


class PushDevices(msgspec.Struct):
    devices: list[PushDevice]


class MessageDraft(msgspec.Struct, forbid_unknown_fields=True):
    """A message to one resident. `title` and `body` are what the inbox shows; `params` the values a template's
    keywords may be filled with (docs/operations.md), besides the title and body."""

    kind: MessageKind
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    params: Annotated[dict[ParamName, ParamValue], msgspec.Meta(max_length=10)] = {}


class ResidentRef(msgspec.Struct, forbid_unknown_fields=True):
    """Who a department's message is for, in what the department already holds: an order it was paid (or is
    being paid) by the resident, as its payee; the `sub` one login gave its app for the resident; or the
    person's ID number (a resident who used the organisation's service or lives in a region it may address).
    Exactly one of the three."""

    order_id: uuid.UUID | None = None
    sub: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    id_number: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="GB 11643, 18 characters")]
        | None
    ) = None


class DepartmentMessage(msgspec.Struct, forbid_unknown_fields=True):
    resident_ref: ResidentRef
    message: MessageDraft
    message_key: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=64,
                description="the sender's own id: the same key is the same message",
            ),
        ]
        | None
    ) = None


class Delivery(msgspec.Struct):
    channel: Literal["inbox", "wechat", "alipay", "push"]
    app_id: str | None
    # cancelled: the resident deleted the message before this channel sent it.
    status: Literal["pending", "sent", "failed", "cancelled"]
    attempts: int
    error: str | None
    sent_at: dt.datetime | None


class InboxMessage(msgspec.Struct):
    id: uuid.UUID
    kind: str
    title: str
    body: str
    params: dict[str, str]
    sender_name: str
    created_at: dt.datetime
    read_at: dt.datetime | None
    deliveries: list[Delivery]


class Deleted(msgspec.Struct):
    deleted: int


class Inbox(msgspec.Struct):
    messages: list[InboxMessage]
    unread: int
    next_before: dt.datetime | None = None


class SentMessage(msgspec.Struct):
    """A message as its sender sees it: where it went (the inbox always) and how each delivery stands."""

    id: uuid.UUID
    kind: str
    created_at: dt.datetime
    deliveries: list[Delivery]


RegionCode = Annotated[str, msgspec.Meta(min_length=1, max_length=12, description="a region code of Taizhou")]


class MessageRegionsChange(msgspec.Struct, forbid_unknown_fields=True):
    """The regions an organisation may address from now on (empty: none; the city's code: every resident)."""

    regions: Annotated[list[RegionCode], msgspec.Meta(max_length=16)]


class RegionGrant(msgspec.Struct):
    code: str
    name: str
    granted_at: dt.datetime
    granted_by: str


class MessageRegions(msgspec.Struct):
    """The regions an organisation may address: broadcasts to them, and messages to the residents who live there
    whether or not they used its service."""

    organisation_id: uuid.UUID
    regions: list[RegionGrant]


class BroadcastRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One message to an audience: every resident of the `regions` (those whose accounts exist when it is
    accepted), regions the organisation may address; or, with `tile_id`, every resident who opened that tile of
    the organisation in the last `opened_within_days` business days (today included; the default and the maximum
    are operations' settings). One of `regions` and `tile_id`. The same `broadcast_key` again is the same
    broadcast."""

    broadcast_key: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="the sender's own id of this broadcast")
    ]
    regions: Annotated[list[RegionCode], msgspec.Meta(min_length=1, max_length=16)] | None = None
    tile_id: uuid.UUID | None = None
    opened_within_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] | None = None
    message: MessageDraft


class Broadcast(msgspec.Struct):
    """A broadcast as its sender follows it. `total` (counted when the job starts, null until then) is how many
    residents it goes to, `written` how many messages are written so far; `status` queued, writing, done, or
    stopped (with `stopped_reason`: the organisation may no longer address one of the regions). `audience`
    `regions` names its `regions`; `tile` its `tile_id` and the first business day of the opens it counts
    (`opened_since`, `opened_within_days` days back from the day it was accepted), `regions` empty."""

    id: uuid.UUID
    broadcast_key: str
    audience: Literal["regions", "tile"]
    regions: list[str]
    tile_id: uuid.UUID | None
    opened_within_days: int | None
    opened_since: dt.date | None
    kind: str
    title: str
    status: Literal["queued", "writing", "done", "stopped"]
    stopped_reason: str | None
    total: int | None
    written: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
