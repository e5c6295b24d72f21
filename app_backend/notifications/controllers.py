"""HTTP for messages to residents: the resident's subscribe-message grants, push devices and inbox (bearer token),
and a department's message to a resident (signed machine request, scope messages:send)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import after_commit, client_ip, problems, request_id
from app_backend.notifications.schemas import (
    Broadcast,
    BroadcastRequest,
    Deleted,
    DepartmentMessage,
    GrantReport,
    Inbox,
    MessageRegions,
    MessageRegionsChange,
    PushDevice,
    PushDeviceRegistration,
    PushDevices,
    SentMessage,
    SubscribeGrants,
)
from app_backend.notifications.service import organisation_sender
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import MachinePrincipal

if TYPE_CHECKING:
    from app_backend.notifications.service import NotificationService

SEND_SCOPE = "messages:send"
AnyRequest = Request[Any, Any, Any]


def _inbox_changed(
    request: AnyRequest, notifications: NotificationService, resident: ResidentPrincipal
) -> None:
    """Listeners (the home's cached unread count) hear of the resident's change once it is committed."""
    after_commit(request, lambda: notifications.inbox_changed(resident.resident_id))


_DEVICE_KNOWN = ResponseSpec(
    data_container=PushDevice, description="the token was registered already", generate_examples=False
)
_SAME_BROADCAST = ResponseSpec(
    data_container=Broadcast,
    description="the same broadcast_key and content again: the first broadcast, not a second one",
    generate_examples=False,
)
_SAME_MESSAGE = ResponseSpec(
    data_container=SentMessage,
    description="the same message_key again: the first message, not a second one",
    generate_examples=False,
)


class ResidentMessagesController(Controller):
    path = "/api/v1/me"
    tags = ["notifications"]

    @post(
        "/subscribe-grants",
        status_code=HTTP_200_OK,
        summary="Report what the mini-program's subscribe request answered (template id -> accept/reject/ban)",
        description=(
            "For the identity linked in that mini-program: an accepted one-time template allows one more message, "
            "an accepted long-term one every message until rejected. 422 naming `app_id` when no identity of the "
            "app is linked, or `results.<template id>` for a template the app does not send."
        ),
        opt=problems(422),
    )
    async def report_grants(
        self,
        data: GrantReport,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> SubscribeGrants:
        return await notifications.report_grants(db, resident.resident_id, data)

    @get("/subscribe-grants", summary="My subscribe-message grants, per linked identity and template")
    async def grants(
        self, notifications: NotificationService, db: Connection, resident: ResidentPrincipal
    ) -> SubscribeGrants:
        return await notifications.grants(db, resident.resident_id)

    @post(
        "/push-devices",
        summary="Register this app install for push (the push provider's token); 200 when registered already",
        status_code=HTTP_201_CREATED,
        responses={HTTP_200_OK: _DEVICE_KNOWN},
    )
    async def register_device(
        self,
        data: PushDeviceRegistration,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Response[PushDevice]:
        device, new = await notifications.register_device(db, resident.resident_id, data)
        return Response(device, status_code=HTTP_201_CREATED if new else HTTP_200_OK)

    @get("/push-devices", summary="My devices registered for push")
    async def devices(
        self, notifications: NotificationService, db: Connection, resident: ResidentPrincipal
    ) -> PushDevices:
        return await notifications.devices(db, resident.resident_id)

    @delete(
        "/push-devices/{device_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Stop push to a device",
        opt=problems(404),
    )
    async def remove_device(
        self,
        device_id: uuid.UUID,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await notifications.remove_device(db, resident.resident_id, device_id)

    @get(
        "/inbox",
        summary="My messages, newest first, with where each was delivered",
        description="Page with `before` = the answer's `next_before`; `unread` counts all unread messages.",
    )
    async def inbox(
        self,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
        before: dt.datetime | None = None,
        unread_only: bool = False,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> Inbox:
        return await notifications.inbox(
            db, resident.resident_id, before=before, unread_only=unread_only, limit=limit
        )

    @post(
        "/inbox/{message_id:uuid}/read",
        status_code=HTTP_204_NO_CONTENT,
        summary="Mark a message read (again: no change)",
        opt=problems(404),
    )
    async def mark_read(
        self,
        request: AnyRequest,
        message_id: uuid.UUID,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await notifications.mark_read(db, resident.resident_id, message_id)
        _inbox_changed(request, notifications, resident)

    @post("/inbox/read", status_code=HTTP_204_NO_CONTENT, summary="Mark every message read")
    async def mark_all_read(
        self,
        request: AnyRequest,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await notifications.mark_all_read(db, resident.resident_id)
        _inbox_changed(request, notifications, resident)

    @delete(
        "/inbox/{message_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a message (gone from the inbox; deliveries not sent yet are cancelled)",
        opt=problems(404),
    )
    async def delete_message(
        self,
        request: AnyRequest,
        message_id: uuid.UUID,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await notifications.delete(db, resident.resident_id, message_id)
        _inbox_changed(request, notifications, resident)

    @delete(
        "/inbox/read",
        status_code=HTTP_200_OK,
        summary="Delete every message I have read; how many",
    )
    async def delete_read(
        self,
        request: AnyRequest,
        notifications: NotificationService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Deleted:
        deleted = await notifications.delete_read(db, resident.resident_id)
        _inbox_changed(request, notifications, resident)
        return Deleted(deleted=deleted)


class MachineMessagesController(Controller):
    """A department's, operator's or merchant's system messaging a resident it knows (by an order it is paid, the
    `sub` one login gave its app, an ID number) or broadcasting to the residents of regions it may address or to
    the residents who opened one of its tiles."""

    path = "/api/v1/messages"
    tags = ["notifications"]
    dependencies = MACHINE

    @post(
        "",
        summary="Send a message to a resident I know by an order, my one-login sub or an ID number (signed)",
        description=(
            "Scope messages:send. The message is in the resident's inbox at once; a WeChat or Alipay subscribe "
            "message (when the resident granted the kind's template) or app push follows from the delivery job. "
            "201 for a new message, 200 for the same `message_key` again (the first message, not a second). 404 "
            "naming `resident_ref.order_id` for an order that is not this organisation's, or `resident_ref.sub` "
            "for a subject none of its apps was given; by `resident_ref.id_number`, 403 `not-addressable` for a "
            "person who did not use this organisation's services and lives in no region it may address, the "
            "same answer as for a number no resident holds; 400 naming it for a number that is not one."
        ),
        status_code=HTTP_201_CREATED,
        responses={HTTP_200_OK: _SAME_MESSAGE},
        opt=problems(403, 404),
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        data: DepartmentMessage,
        notifications: NotificationService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Response[SentMessage]:
        _may_send(machine)
        sent, new = await notifications.send_for_organisation(
            db, machine.organisation_id, machine.organisation_name, data, _actor(request, machine)
        )
        return Response(sent, status_code=HTTP_201_CREATED if new else HTTP_200_OK)

    @post(
        "/broadcasts",
        summary=(
            "Broadcast a message to every resident of regions I may address, or to the users of my tile "
            "(signed; messages:send)"
        ),
        description=(
            "Accepted and written by a job, in batches, within a minute or so (follow it with GET "
            "/api/v1/messages/broadcasts/{id}): one message per resident of the `regions` whose account exists "
            "now, or with `tile_id` per resident who opened that tile of yours in the last `opened_within_days` "
            "days (default and maximum set by operations, 90 unless changed) and before now; the inbox always "
            "and one more channel as for any message. 201 for a new broadcast, 200 for the same `broadcast_key` "
            "with the same content (the first broadcast), 409 naming `broadcast_key` with other content. 400 "
            "naming `regions` unless exactly one of `regions` and `tile_id` is given, `regions[i]` for a code "
            "that is not a region of Taizhou, `opened_within_days` over the maximum or without `tile_id`; 403 "
            "`not-addressable` naming `regions[i]` for a region operations have not allowed this organisation; "
            "404 naming `tile_id` for a tile that is not this organisation's (the same for one that does not "
            "exist)."
        ),
        status_code=HTTP_201_CREATED,
        responses={HTTP_200_OK: _SAME_BROADCAST},
        opt=problems(403, 404, 409),
    )
    async def broadcast(
        self,
        data: BroadcastRequest,
        notifications: NotificationService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Response[Broadcast]:
        _may_send(machine)
        broadcast, new = await notifications.broadcast(
            db, machine.organisation_id, machine.organisation_name, data
        )
        return Response(broadcast, status_code=HTTP_201_CREATED if new else HTTP_200_OK)

    @get(
        "/broadcasts/{broadcast_id:uuid}",
        summary="How my broadcast stands: its status, residents to write to, messages written (signed)",
        opt=problems(403, 404),
    )
    async def broadcast_progress(
        self,
        broadcast_id: uuid.UUID,
        notifications: NotificationService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> Broadcast:
        _may_send(machine)
        return await notifications.broadcast_of(db, machine.organisation_id, broadcast_id)

    @get(
        "/regions",
        summary="The regions I may address: broadcast to, and message residents of (signed; messages:send)",
        opt=problems(403),
    )
    async def regions(
        self, notifications: NotificationService, db: Connection, machine: MachinePrincipal
    ) -> MessageRegions:
        _may_send(machine)
        return await notifications.message_regions(db, machine.organisation_id)

    @get(
        "/{message_id:uuid}",
        summary="A message I sent and how each delivery stands (signed; messages:send)",
        opt=problems(403, 404),
    )
    async def get_one(
        self,
        message_id: uuid.UUID,
        notifications: NotificationService,
        db: Connection,
        machine: MachinePrincipal,
    ) -> SentMessage:
        _may_send(machine)
        return await notifications.sent_by(db, organisation_sender(machine.organisation_id), message_id)


class MessageRegionsAdminController(Controller):
    """Operations decide which regions an organisation may address (broadcasts, and messages to residents who
    never used its services)."""

    path = "/api/v1/admin/organisations/{organisation_id:uuid}/message-regions"
    tags = ["admin"]
    guards = [staff_only()]
    dependencies = STAFF
    opt = problems(404)

    @get(
        "",
        summary="The regions an organisation may address",
        guards=[staff_only(OPS_ADMIN, AUDITOR)],
        opt=audited("admin.message_regions_view", target_type="organisation", target="organisation_id"),
    )
    async def regions(
        self, organisation_id: uuid.UUID, notifications: NotificationService, db: Connection, staff: Staff
    ) -> MessageRegions:
        return await notifications.message_regions(db, organisation_id)

    @put(
        "",
        summary="Set the regions an organisation may address (all of them; [] for none; audited)",
        guards=[staff_only(OPS_ADMIN)],
        description=(
            "Region codes of Taizhou (GET /api/v1/tiles/taxonomy); the city's code (321200) reaches every "
            "resident. 400 naming `regions[i]` for a code that is not one; 404 for an unknown organisation."
        ),
        opt=audited(
            "admin.message_regions", target_type="organisation", target="organisation_id", detail=("regions",)
        ),
    )
    async def set_regions(
        self,
        organisation_id: uuid.UUID,
        data: MessageRegionsChange,
        notifications: NotificationService,
        db: Connection,
        staff: Staff,
    ) -> MessageRegions:
        return await notifications.set_message_regions(db, organisation_id, data.regions, staff.actor)


def _may_send(machine: MachinePrincipal) -> None:
    if SEND_SCOPE not in machine.scopes:
        raise forbidden(f"this credential lacks the scope {SEND_SCOPE}")


def _actor(request: Request[Any, Any, Any], machine: MachinePrincipal) -> Actor:
    return Actor("organisation", str(machine.organisation_id), request_id(request), client_ip(request))
