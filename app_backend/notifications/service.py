"""One notification service: the platform's domains and departments send a resident a message; it always lands in
the resident's inbox, and goes out on one more channel the resident can receive on, in this order: a WeChat
subscribe message, an Alipay subscribe message (each needs a usable grant of the app's template for the kind), or
app push to the resident's registered devices (docs/decisions/0024-one-notification-service.md).

A one-time grant is spent when the message is written (a compare-and-set in the sender's transaction), so
concurrent sends spend it once; the channel is called later by the delivery job, outside any transaction, and a
retry uses the delivery's own grant, never another. What the channel answered decides the grant: sent, it stays
spent (as WeChat and Alipay count it); refused for want of a grant, the grant is marked revoked; refused for
another reason (a template or data the channel rejects), a one-time grant is given back (WeChat spends grants on
successful sends only); a delivery that gives up after faults keeps it spent (whether the channel used it cannot
be known).

Departments reach only the residents they may address (`may_address`: who used their service, who lives in a
region operations allow them); a broadcast to regions, or to the users of one of the department's tiles, is queued
by the request and written by `write_broadcasts` in batches. A resident's deleted message keeps its row, without
content, and its pending deliveries are cancelled.

Callers own the transaction for everything but `deliver_due` and `write_broadcasts`, which are their own
boundaries."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import msgspec
import structlog

from app_backend.audit.service import AuditTrail
from app_backend.identity.service import ResidentDirectory
from app_backend.kernel.actors import Actor
from app_backend.kernel.clock import business_day, now
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from app_backend.kernel.messages import PlatformMessage
from app_backend.kernel.regions import CITY, REGIONS, UNKNOWN_REGION, covers
from app_backend.notifications.push import PushProvider, PushResult
from app_backend.notifications.repository import (
    AudienceRepository,
    BroadcastRepository,
    BroadcastRow,
    DeliveryRepository,
    DeliveryRow,
    DeviceRepository,
    GrantRepository,
    GrantRow,
    MessageRepository,
    MessageRow,
)
from app_backend.notifications.schemas import (
    KINDS,
    Broadcast,
    BroadcastRequest,
    Delivery,
    DepartmentMessage,
    GrantReport,
    Inbox,
    InboxMessage,
    MessageDraft,
    MessageRegions,
    PushDevice,
    PushDeviceRegistration,
    PushDevices,
    RegionGrant,
    ResidentRef,
    SentMessage,
    SubscribeGrant,
    SubscribeGrants,
)
from app_backend.oidc.service import OidcService
from app_backend.organisations.service import OrganisationService
from mini_programs.config import Template
from mini_programs.schemas import SendOutcome
from mini_programs.service import MiniProgramService
from payments.orders.service import OrderRow, OrderService

_log = structlog.get_logger("notifications")
# Told after a resident's own change to their inbox committed (see `on_inbox_change`).
InboxListener = Callable[[uuid.UUID], Awaitable[None]]
# A claimed delivery is not claimed again before this: longer than any channel call (three timeouts and a token).
LEASE = dt.timedelta(minutes=5)
# After the n-th failed attempt the next one waits RETRY_AFTER[n-1]; after the last, the delivery gives up.
RETRY_AFTER = (
    dt.timedelta(minutes=1),
    dt.timedelta(minutes=5),
    dt.timedelta(minutes=15),
    dt.timedelta(hours=1),
    dt.timedelta(hours=3),
)
MAX_ATTEMPTS = len(RETRY_AFTER) + 1
# A broadcast is written this many residents per transaction, by job runs of about this many seconds each.
BROADCAST_BATCH = 500
BROADCAST_BUDGET = 50.0
_THING_MAX = 20  # WeChat's `thing` keywords take at most 20 characters


def organisation_sender(organisation_id: uuid.UUID) -> str:
    return f"organisation:{organisation_id}"


class TileUsers(Protocol):
    """Who used a department's tile, as tiles' usage tells it (`UsageService`). A port, handed over by the tiles
    module when it starts (`use_tile_users`): tiles imports this service to report opens, so this one cannot
    import tiles'."""

    async def is_tile_of(self, conn: Connection, organisation_id: uuid.UUID, tile_id: uuid.UUID) -> bool: ...

    async def users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
        after_resident_id: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]: ...

    async def count_users_of(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        tile_id: uuid.UUID,
        since: dt.date,
        until: dt.datetime,
    ) -> int: ...


def opened_since(created_at: dt.datetime, days: int) -> dt.date:
    """The first business day of a tile broadcast's period: `days` days ending on the day it was accepted."""
    return business_day(created_at) - dt.timedelta(days=days - 1)


def _walk_order(regions: list[str]) -> list[str]:
    """The regions a broadcast walks, one after another: the city alone when it names the city (its residents
    are every resident), otherwise each district (districts share no resident)."""
    return [CITY] if CITY in regions else sorted(regions)


def _broadcast_view(row: BroadcastRow) -> Broadcast:
    return Broadcast(
        id=row.id,
        broadcast_key=row.broadcast_key,
        audience=row.audience,  # type: ignore[arg-type]
        regions=row.regions,
        tile_id=row.tile_id,
        opened_within_days=row.opened_days,
        opened_since=None if row.opened_days is None else opened_since(row.created_at, row.opened_days),
        kind=row.kind,
        title=row.title,
        status=row.status,  # type: ignore[arg-type]
        stopped_reason=row.stopped_reason,
        total=row.total,
        written=row.written,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _not_addressable(field: str) -> DomainError:
    """The one answer for a person nobody here is and for a resident the organisation may not message."""
    message = (
        "this organisation may not message this person: only residents who used its services (paid one of its "
        "orders, logged in to one of its apps) or who live in a region it may address"
    )
    return DomainError(
        403,
        "not-addressable",
        f"{field}: {message}",
        extra={"errors": [{"field": field, "message": message}]},
    )


def check_template_kinds(templates: Iterable[tuple[str, str, str]]) -> None:
    """(channel, app id, kind) of every configured template: each kind must be one messages are sent as."""
    for channel, app_id, kind in templates:
        if kind not in KINDS:
            raise ValueError(
                f"mini-program config: {channel} app {app_id} has a template for {kind!r}, which is not a kind of "
                f"message ({', '.join(KINDS)})"
            )


def _values(template: Template, message: MessageRow) -> dict[str, str] | str:
    """The template's keyword values from the message, or the first keyword the message has no value for."""
    values = {}
    for keyword, source in template.fields.items():
        value = {"title": message.title, "body": message.body}.get(source, message.params.get(source))
        if value is None:
            return keyword
        if keyword.startswith("thing") and len(value) > _THING_MAX:
            value = value[: _THING_MAX - 1] + "…"
        values[keyword] = value
    return values


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(
        channel=row.channel,  # type: ignore[arg-type]
        app_id=row.app_id,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        error=row.error,
        sent_at=row.sent_at,
    )


class NotificationService:
    def __init__(
        self,
        pool: Pool,
        mini: MiniProgramService,
        orders: OrderService,
        cipher: FieldCipher,
        push: PushProvider | None,
        *,
        residents: ResidentDirectory,
        organisations: OrganisationService,
        audit: AuditTrail,
        one_login: OidcService | None = None,
        tile_days: int = 90,
        tile_max_days: int = 90,
    ) -> None:
        self.pool = pool
        self._mini = mini
        self._orders = orders
        self._cipher = cipher
        self.push = push
        self._residents = residents
        self._organisations = organisations
        self._audit = audit
        self._one_login = one_login
        self._tile_days = tile_days
        self._tile_max_days = tile_max_days
        self._tile_users: TileUsers | None = None
        self._grants = GrantRepository()
        self._devices = DeviceRepository()
        self._messages = MessageRepository()
        self._deliveries = DeliveryRepository()
        self._audience = AudienceRepository()
        self._broadcasts = BroadcastRepository()
        self._inbox_listeners: list[InboxListener] = []

    def on_inbox_change(self, listener: InboxListener) -> None:
        """`listener(resident_id)` hears that a resident changed their inbox (read or deleted messages), once it
        is committed: what shows the unread count (the home) forgets it."""
        self._inbox_listeners.append(listener)

    async def inbox_changed(self, resident_id: uuid.UUID) -> None:
        """Called by the HTTP side after the resident's change committed."""
        for listener in self._inbox_listeners:
            await listener(resident_id)

    # -- grants -----------------------------------------------------------------------------------------------

    def _grant_view(self, row: GrantRow) -> SubscribeGrant:
        kinds = [
            kind
            for kind, template in self._mini.templates(row.channel, row.app_id).items()
            if template.template_id == row.template_id
        ]
        return SubscribeGrant(
            id=row.id,
            identity_id=row.identity_id,
            channel=row.channel,
            app_id=row.app_id,
            app_name=self._mini.app_name(row.channel, row.app_id),
            template_id=row.template_id,
            kinds=kinds,
            grant=row.grant_kind,  # type: ignore[arg-type]
            status=row.status,  # type: ignore[arg-type]
            remaining=row.remaining,
            updated_at=row.updated_at,
        )

    async def report_grants(
        self, conn: Connection, resident_id: uuid.UUID, report: GrantReport
    ) -> SubscribeGrants:
        """Records what the mini-program's subscribe request answered, for the identity the resident has linked
        in that app; every template must be one the app sends messages with."""
        identity_id = await self._mini.identity_in_app(conn, resident_id, report.channel, report.app_id)
        if identity_id is None:
            raise invalid_field(
                "app_id",
                "no identity of this mini-program is linked to this account: log in from it first",
                422,
            )
        known = {t.template_id: t for t in self._mini.templates(report.channel, report.app_id).values()}
        for template_id in report.results:
            if template_id not in known:
                raise invalid_field(
                    f"results.{template_id}", "not a subscribe-message template of this mini-program", 422
                )
        rows = [
            await self._grants.record(
                conn,
                identity_id=identity_id,
                resident_id=resident_id,
                channel=report.channel,
                app_id=report.app_id,
                template_id=template_id,
                grant_kind=known[template_id].grant,
                result=result,
            )
            for template_id, result in sorted(report.results.items())
        ]
        return SubscribeGrants(grants=[self._grant_view(r) for r in rows])

    async def grants(self, conn: Connection, resident_id: uuid.UUID) -> SubscribeGrants:
        return SubscribeGrants(
            grants=[self._grant_view(r) for r in await self._grants.of_resident(conn, resident_id)]
        )

    # -- push devices -----------------------------------------------------------------------------------------

    async def register_device(
        self, conn: Connection, resident_id: uuid.UUID, data: PushDeviceRegistration
    ) -> tuple[PushDevice, bool]:
        row, new = await self._devices.register(
            conn,
            resident_id,
            data.platform,
            self._cipher.lookup_hash("notifications.push_token", data.token),
            self._cipher.encrypt("notifications.push_token", data.token),
        )
        return PushDevice(id=row.id, platform=row.platform, registered_at=row.registered_at), new

    async def devices(self, conn: Connection, resident_id: uuid.UUID) -> PushDevices:
        rows = await self._devices.of_resident(conn, resident_id)
        return PushDevices(
            devices=[PushDevice(id=r.id, platform=r.platform, registered_at=r.registered_at) for r in rows]
        )

    async def remove_device(self, conn: Connection, resident_id: uuid.UUID, device_id: uuid.UUID) -> None:
        if not await self._devices.remove(conn, device_id, resident_id):
            raise not_found("device_id: no such device registered to this account")

    # -- sending ----------------------------------------------------------------------------------------------

    async def send(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        draft: MessageDraft,
        *,
        sender: str,
        sender_name: str,
        sender_key: str | None = None,
    ) -> tuple[SentMessage, bool]:
        """(the message, whether it is new): a message in the resident's inbox and at most one more delivery,
        pending until the job sends it. The same `sender_key` from the same sender is the same message. Called
        inside the sender's transaction: a message rolled back was never sent."""
        row = await self._messages.add(
            conn,
            resident_id=resident_id,
            kind=draft.kind,
            title=draft.title,
            body=draft.body,
            params=dict(draft.params),
            sender=sender,
            sender_name=sender_name,
            sender_key=sender_key,
        )
        if row is None:
            assert sender_key is not None
            existing = await self._messages.by_sender_key(conn, sender, sender_key)
            assert existing is not None
            return await self._sent(conn, existing), False
        await self._deliveries.add(conn, row.id, "inbox", status="sent")
        await self._beyond_inbox(conn, row)
        return await self._sent(conn, row), True

    async def _beyond_inbox(self, conn: Connection, row: MessageRow) -> None:
        """The one more channel a message goes out on: a subscribe message, else push to every device."""
        if not await self._subscribe_message(conn, row) and self.push is not None:
            for device in await self._devices.of_resident(conn, row.resident_id):
                await self._deliveries.add(conn, row.id, "push", status="pending", device_id=device.id)

    async def send_platform(self, conn: Connection, resident_id: uuid.UUID, message: PlatformMessage) -> bool:
        """A platform domain's message (the kernel's SendMessage port, handed to payments' transit and to
        code_service when this module starts): `send` under the domain's name, the message's key as the sender's
        key. Whether it was written now. A message the draft's rules refuse (a kind, a length) is logged, without
        its content, and not sent: what the domain records (a debt) must not fail for the want of a message."""
        try:
            draft = msgspec.convert(
                {
                    "kind": message.kind,
                    "title": message.title,
                    "body": message.body,
                    "params": message.params,
                },
                MessageDraft,
            )
        except msgspec.ValidationError as exc:
            _log.error("platform message refused", sender=message.sender, kind=message.kind, error=str(exc))
            return False
        _, new = await self.send(
            conn,
            resident_id,
            draft,
            sender=message.sender,
            sender_name=message.sender_name,
            sender_key=message.key,
        )
        return new

    async def _subscribe_message(self, conn: Connection, message: MessageRow) -> bool:
        """Claims the first usable grant of the kind's template among the resident's linked identities and
        queues the delivery on it; false when there is none."""
        for target in await self._mini.message_targets(conn, message.resident_id):
            template = self._mini.template(target.channel, target.app_id, message.kind)
            if template is None:
                continue
            grant = await self._grants.usable(conn, target.identity_id, template.template_id)
            if grant is None:
                continue
            values = _values(template, message)
            if isinstance(values, str):
                # Visible to the sender; the grant is not spent on a message the template cannot carry.
                await self._deliveries.add(
                    conn,
                    message.id,
                    target.channel,
                    status="failed",
                    app_id=target.app_id,
                    error=f"the template's keyword {values} has no value in the message (params)",
                )
                continue
            if grant.grant_kind == "one_time" and not await self._grants.spend_one(conn, grant.id):
                continue  # a concurrent message spent it first
            await self._deliveries.add(
                conn,
                message.id,
                target.channel,
                status="pending",
                app_id=target.app_id,
                identity_id=target.identity_id,
                grant_id=grant.id,
                template_id=template.template_id,
            )
            return True
        return False

    async def _sent(self, conn: Connection, row: MessageRow) -> SentMessage:
        deliveries = await self._deliveries.of_messages(conn, [row.id])
        return SentMessage(
            id=row.id, kind=row.kind, created_at=row.created_at, deliveries=[_delivery(d) for d in deliveries]
        )

    async def send_for_organisation(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        organisation_name: str,
        data: DepartmentMessage,
        actor: Actor,
    ) -> tuple[SentMessage, bool]:
        """A department's (or merchant's) message to a resident it names by what it holds (an order it is paid,
        the `sub` one login gave its app, the person's ID number): it never learns the platform's resident id,
        and it reaches only residents it may address."""
        resident_id = await self._resident_of(conn, organisation_id, data.resident_ref, actor)
        return await self.send(
            conn,
            resident_id,
            data.message,
            sender=organisation_sender(organisation_id),
            sender_name=organisation_name,
            sender_key=data.message_key,
        )

    async def _resident_of(
        self, conn: Connection, organisation_id: uuid.UUID, ref: ResidentRef, actor: Actor
    ) -> uuid.UUID:
        if sum(v is not None for v in (ref.order_id, ref.sub, ref.id_number)) != 1:
            raise invalid_field("resident_ref", "give exactly one of order_id, sub and id_number")
        if ref.id_number is not None:
            return await self._resident_by_id_number(conn, organisation_id, ref.id_number, actor)
        if ref.sub is not None:
            field, message = "resident_ref.sub", "no resident who logged in to this organisation's apps"
            found = (
                await self._one_login.resident_for_subject(conn, organisation_id, ref.sub)
                if self._one_login
                else None
            )
        else:
            assert ref.order_id is not None
            field, message = (
                "resident_ref.order_id",
                "no order of this organisation with a resident paying it",
            )
            found = await self._orders.payer_for_payee(conn, ref.order_id, organisation_id)
        if found is None:
            raise DomainError(
                404,
                "not-found",
                f"{field}: {message}",
                extra={"errors": [{"field": field, "message": message}]},
            )
        return found

    async def _resident_by_id_number(
        self, conn: Connection, organisation_id: uuid.UUID, id_number: str, actor: Actor
    ) -> uuid.UUID:
        """The resident holding the ID number, when the organisation may address them. Unknown and not
        addressable get the same refusal after the same work (the addressing rules run for a random id when
        nobody holds the number), so an organisation cannot learn who has an account by trying numbers. Each
        lookup is audited under the number's keyed hash, refusals on a connection of their own."""
        try:
            person = self._residents.person_key(id_number)
        except ValueError as exc:
            raise invalid_field("resident_ref.id_number", str(exc)) from None
        found = await self._residents.resident_of_person(conn, person)
        allowed = await self.may_address(conn, organisation_id, found or uuid.uuid4())
        action, target = "messages.address_by_id_number", person.hex()[:16]
        if found is None or not allowed:
            await self._audit.record_detached(
                actor, action, target_type="person", target_id=target, outcome="denied"
            )
            raise _not_addressable("resident_ref.id_number")
        await self._audit.record(conn, actor, action, target_type="person", target_id=target)
        return found

    async def may_address(self, conn: Connection, organisation_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        """Whether the organisation may message the resident: the resident used its service (paid one of its
        orders, logged in to one of its apps through one login) or lives in a region it may address."""
        if await self._audience.used(conn, organisation_id, resident_id):
            return True
        allowed = [g.region for g in await self._audience.regions(conn, organisation_id)]
        if allowed and covers(allowed, await self._residents.region_of(conn, resident_id)):
            return True
        return await self._logged_in(conn, organisation_id, resident_id)

    async def _logged_in(self, conn: Connection, organisation_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        """Whether the resident gave one of the organisation's one-login clients a grant: a consent to its
        claims, or (a login asking for `openid` alone records none) a subject one login gave it."""
        if self._one_login is None:
            return False
        clients = await self._one_login.clients(conn, organisation_id)
        ids = {c.client_id for c in clients}
        if any(c.client_id in ids for c in await self._one_login.consents_of(conn, resident_id)):
            return True
        for sector in sorted({c.sector for c in clients}):
            subject = self._one_login.subject(sector, resident_id)
            if await self._one_login.resident_for_subject(conn, organisation_id, subject) == resident_id:
                return True
        return False

    async def record_paid_order(self, conn: Connection, order: OrderRow) -> None:
        """payments' `on_paid` listener, in the paying transaction: the payer used the service of the order's
        payee and of every payee its splits name."""
        if order.payer_id is None:
            return
        payees = [share.payee_id for share in await self._orders.shares(conn, order)]
        await self._audience.record_use(conn, payees, order.payer_id, "paid_order")

    async def record_service_use(
        self, conn: Connection, organisation_id: uuid.UUID, resident_id: uuid.UUID, via: str
    ) -> None:
        """A resident used an organisation's service in a way another domain saw (`tile`: opened one of its
        tiles, reported by tiles' usage): from now on the organisation may message them."""
        await self._audience.record_use(conn, [organisation_id], resident_id, via)

    # -- broadcasts -------------------------------------------------------------------------------------------

    def use_tile_users(self, tile_users: TileUsers) -> None:
        """Tiles' usage, handed over by the tiles module at start: broadcasts to the users of a tile page it."""
        self._tile_users = tile_users

    async def broadcast(
        self, conn: Connection, organisation_id: uuid.UUID, organisation_name: str, data: BroadcastRequest
    ) -> tuple[Broadcast, bool]:
        """(the broadcast, whether it is new): accepted and queued for `write_broadcasts`; nothing is written to
        any inbox here. The same key with the same content is the same broadcast, with other content a 409."""
        if (data.regions is None) == (data.tile_id is None):
            raise invalid_field("regions", "name one audience: either regions or tile_id")
        if data.tile_id is not None:
            days = data.opened_within_days or self._tile_days
            if days > self._tile_max_days:
                raise invalid_field("opened_within_days", f"at most {self._tile_max_days} days")
            if self._tile_users is None or not await self._tile_users.is_tile_of(
                conn, organisation_id, data.tile_id
            ):
                message = "no tile of this organisation with this id"
                raise DomainError(
                    404,
                    "not-found",
                    f"tile_id: {message}",
                    extra={"errors": [{"field": "tile_id", "message": message}]},
                )
            return await self._queue(conn, organisation_id, organisation_name, data, [], data.tile_id, days)
        if data.opened_within_days is not None:
            raise invalid_field("opened_within_days", "only for a broadcast to the users of a tile (tile_id)")
        assert data.regions is not None
        regions = list(dict.fromkeys(data.regions))
        for index, region in enumerate(data.regions):
            if region not in REGIONS:
                raise invalid_field(f"regions[{index}]", UNKNOWN_REGION)
        allowed = [g.region for g in await self._audience.regions(conn, organisation_id)]
        for index, region in enumerate(data.regions):
            if not covers(allowed, region):
                message = f"this organisation may not address {REGIONS[region]} ({region})"
                raise DomainError(
                    403,
                    "not-addressable",
                    f"regions[{index}]: {message}",
                    extra={"errors": [{"field": f"regions[{index}]", "message": message}]},
                )
        return await self._queue(conn, organisation_id, organisation_name, data, regions, None, None)

    async def _queue(
        self,
        conn: Connection,
        organisation_id: uuid.UUID,
        organisation_name: str,
        data: BroadcastRequest,
        regions: list[str],
        tile_id: uuid.UUID | None,
        opened_days: int | None,
    ) -> tuple[Broadcast, bool]:
        draft = data.message
        row = await self._broadcasts.add(
            conn,
            organisation_id=organisation_id,
            sender_name=organisation_name,
            broadcast_key=data.broadcast_key,
            regions=regions,
            kind=draft.kind,
            title=draft.title,
            body=draft.body,
            params=dict(draft.params),
            tile_id=tile_id,
            opened_days=opened_days,
        )
        if row is not None:
            return _broadcast_view(row), True
        existing = await self._broadcasts.by_key(conn, organisation_id, data.broadcast_key)
        assert existing is not None
        same = (
            existing.regions,
            existing.tile_id,
            existing.opened_days,
            existing.kind,
            existing.title,
            existing.body,
            existing.params,
        ) == (regions, tile_id, opened_days, draft.kind, draft.title, draft.body, dict(draft.params))
        if not same:
            message = "this key was used for another broadcast (another audience or another message)"
            raise DomainError(
                409,
                "broadcast-key-reused",
                f"broadcast_key: {message}",
                extra={"errors": [{"field": "broadcast_key", "message": message}]},
            )
        return _broadcast_view(existing), False

    async def broadcast_of(
        self, conn: Connection, organisation_id: uuid.UUID, broadcast_id: uuid.UUID
    ) -> Broadcast:
        row = await self._broadcasts.get(conn, broadcast_id)
        if row is None or row.organisation_id != organisation_id:
            raise not_found("broadcast_id: no broadcast of this organisation")
        return _broadcast_view(row)

    async def write_broadcasts(
        self, pool: Pool, *, batch: int = BROADCAST_BATCH, budget: float = BROADCAST_BUDGET
    ) -> dict[str, int]:
        """The broadcast job: writes the open broadcasts' messages, a batch per transaction, oldest broadcast
        first, for about `budget` seconds (the next run goes on from where this one stopped). Runs at once share
        the work: each batch is written under the broadcast's row lock, from the cursor the last batch left."""
        deadline = time.monotonic() + budget
        counts = {"written": 0, "finished": 0}
        async with pool.acquire() as conn:
            open_ids = await self._broadcasts.open_ids(conn, 100)
        for broadcast_id in open_ids:
            while time.monotonic() < deadline:
                async with pool.acquire() as conn, conn.transaction():
                    step = await self._write_batch(conn, broadcast_id, batch)
                if step is None:
                    break
                written, finished = step
                counts["written"] += written
                if finished:
                    counts["finished"] += 1
                    break
        return counts

    async def _write_batch(
        self, conn: Connection, broadcast_id: uuid.UUID, size: int
    ) -> tuple[int, bool] | None:
        """One batch of a broadcast, in the caller's transaction: (messages written, whether it is finished);
        None when it is not open (finished by another run)."""
        row = await self._broadcasts.lock_open(conn, broadcast_id)
        if row is None:
            return None
        if row.audience == "tile":
            return await self._write_tile_batch(conn, row, size)
        regions = _walk_order(row.regions)
        allowed = [g.region for g in await self._audience.regions(conn, row.organisation_id)]
        refused = [r for r in regions if not covers(allowed, r)]
        if refused:
            reason = f"the organisation may no longer address {', '.join(refused)}"
            await self._broadcasts.finish(conn, row.id, "stopped", reason)
            return 0, True
        if row.status == "queued":
            total = 0
            for region in regions:
                total += await self._residents.count_of_region(conn, region, joined_by=row.created_at)
            await self._broadcasts.start(conn, row.id, total)
        region = row.cursor_region or regions[0]
        residents = await self._residents.residents_of_region(
            conn, region, joined_by=row.created_at, after=row.cursor_resident, limit=size
        )
        if not residents:
            following = regions.index(region) + 1
            if following == len(regions):
                await self._broadcasts.finish(conn, row.id, "done")
                return 0, True
            await self._broadcasts.advance(conn, row.id, regions[following], None, 0)
            return 0, False
        written = await self._write_messages(conn, row, residents)
        await self._broadcasts.advance(conn, row.id, region, residents[-1], written)
        return written, False

    async def _write_tile_batch(
        self, conn: Connection, row: BroadcastRow, size: int
    ) -> tuple[int, bool] | None:
        """One batch of a broadcast to the users of a tile: the next page of the residents who opened it in its
        period (by the time it was accepted), in id order from the cursor; blocked accounts are skipped (counted
        in `total`, never written). None while tiles are not started (the broadcast waits for a run that has
        them)."""
        users = self._tile_users
        if users is None:
            return None
        assert row.tile_id is not None and row.opened_days is not None
        since = opened_since(row.created_at, row.opened_days)
        if row.status == "queued":
            total = await users.count_users_of(conn, row.organisation_id, row.tile_id, since, row.created_at)
            await self._broadcasts.start(conn, row.id, total)
        residents = await users.users_of(
            conn, row.organisation_id, row.tile_id, since, row.created_at, row.cursor_resident, size
        )
        if not residents:
            await self._broadcasts.finish(conn, row.id, "done")
            return 0, True
        active = await self._residents.active_among(conn, residents)
        written = await self._write_messages(conn, row, active) if active else 0
        await self._broadcasts.advance(conn, row.id, None, residents[-1], written)
        return written, False

    async def _write_messages(self, conn: Connection, row: BroadcastRow, residents: list[uuid.UUID]) -> int:
        """The broadcast's message to each of these residents who has none yet (inbox and one more channel, as
        `send`); how many were written now."""
        messages = await self._messages.add_for_broadcast(
            conn, row, organisation_sender(row.organisation_id), residents
        )
        await self._deliveries.add_inbox(conn, [m.id for m in messages])
        for message in messages:
            await self._beyond_inbox(conn, message)
        return len(messages)

    # -- the regions an organisation may address (operations) ------------------------------------------------

    async def message_regions(self, conn: Connection, organisation_id: uuid.UUID) -> MessageRegions:
        if await self._organisations.organisation(conn, organisation_id) is None:
            raise not_found("organisation_id: no such organisation")
        return MessageRegions(
            organisation_id=organisation_id,
            regions=[
                RegionGrant(
                    code=g.region, name=REGIONS[g.region], granted_at=g.granted_at, granted_by=g.granted_by
                )
                for g in await self._audience.regions(conn, organisation_id)
            ],
        )

    async def set_message_regions(
        self, conn: Connection, organisation_id: uuid.UUID, regions: list[str], actor: Actor
    ) -> MessageRegions:
        """Operations grant (or take back) the regions an organisation may address; the staff dependency audits
        the call with the regions asked for."""
        for index, region in enumerate(regions):
            if region not in REGIONS:
                raise invalid_field(f"regions[{index}]", UNKNOWN_REGION)
        if await self._organisations.organisation(conn, organisation_id) is None:
            raise not_found("organisation_id: no such organisation")
        await self._audience.set_regions(
            conn, organisation_id, list(dict.fromkeys(regions)), f"{actor.type}:{actor.id}"
        )
        return await self.message_regions(conn, organisation_id)

    async def sent_by(self, conn: Connection, sender: str, message_id: uuid.UUID) -> SentMessage:
        row = await self._messages.get(conn, message_id)
        if row is None or row.sender != sender:
            raise not_found("message not found")
        return await self._sent(conn, row)

    # -- the inbox --------------------------------------------------------------------------------------------

    async def inbox(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        *,
        before: dt.datetime | None = None,
        unread_only: bool = False,
        limit: int = 20,
    ) -> Inbox:
        rows = await self._messages.inbox(conn, resident_id, before, unread_only, limit + 1)
        page = rows[:limit]
        deliveries: dict[uuid.UUID, list[Delivery]] = {r.id: [] for r in page}
        for d in await self._deliveries.of_messages(conn, [r.id for r in page]):
            deliveries[d.message_id].append(_delivery(d))
        return Inbox(
            messages=[
                InboxMessage(
                    id=r.id,
                    kind=r.kind,
                    title=r.title,
                    body=r.body,
                    params=r.params,
                    sender_name=r.sender_name,
                    created_at=r.created_at,
                    read_at=r.read_at,
                    deliveries=deliveries[r.id],
                )
                for r in page
            ],
            unread=await self._messages.unread(conn, resident_id),
            next_before=page[-1].created_at if len(rows) > limit else None,
        )

    async def mark_read(self, conn: Connection, resident_id: uuid.UUID, message_id: uuid.UUID) -> None:
        if not await self._messages.mark_read(conn, message_id, resident_id):
            raise not_found("message_id: no such message in this inbox")

    async def mark_all_read(self, conn: Connection, resident_id: uuid.UUID) -> int:
        return await self._messages.mark_all_read(conn, resident_id)

    async def delete(self, conn: Connection, resident_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """The resident deletes a message: gone from the inbox and the unread count, its content erased, its
        pending deliveries cancelled."""
        if not await self._messages.delete(conn, message_id, resident_id):
            raise not_found("message_id: no such message in this inbox")
        await self._cancel_deliveries(conn, [message_id])

    async def delete_read(self, conn: Connection, resident_id: uuid.UUID) -> int:
        """Deletes every message the resident has read, as `delete` does; how many."""
        deleted = await self._messages.delete_read(conn, resident_id)
        if deleted:
            await self._cancel_deliveries(conn, deleted)
        return len(deleted)

    async def _cancel_deliveries(self, conn: Connection, message_ids: list[uuid.UUID]) -> None:
        """A one-time grant claimed by a delivery never tried is given back (no channel saw it); one tried
        already (a fault, or a job run sending it now) stays spent, as for a delivery that gives up."""
        for cancelled in await self._deliveries.cancel_pending(conn, message_ids):
            if cancelled.grant_id is not None and cancelled.attempts == 0:
                await self._grants.give_back(conn, cancelled.grant_id)

    # -- the delivery job -------------------------------------------------------------------------------------

    async def deliver_due(
        self, pool: Pool, *, at: dt.datetime | None = None, limit: int = 200
    ) -> dict[str, int]:
        """Sends the pending deliveries due by `at` (now): each is claimed (committed) first, sent with no
        transaction open, and its outcome recorded with compare-and-set on the claimed attempt."""
        at = at or now()
        async with pool.acquire() as conn, conn.transaction():
            claimed = await self._deliveries.claim_due(conn, at, LEASE, limit)
        counts = {"sent": 0, "failed": 0, "retrying": 0, "cancelled": 0}
        for delivery in claimed:
            outcome = await self._attempt(pool, delivery)
            if outcome is None:
                counts["cancelled"] += 1  # deleted since it was claimed: its delivery is cancelled already
                continue
            async with pool.acquire() as conn, conn.transaction():
                counts[await self._record(conn, delivery, outcome, at)] += 1
        return counts

    async def _attempt(self, pool: Pool, delivery: DeliveryRow) -> SendOutcome | PushResult | None:
        """What the channel answered; None, without asking it, for a message the resident has deleted."""
        async with pool.acquire() as conn:
            message = await self._messages.get(conn, delivery.message_id)
            target = (
                await self._mini.message_target(conn, delivery.identity_id) if delivery.identity_id else None
            )
            device = await self._devices.get(conn, delivery.device_id) if delivery.device_id else None
        assert message is not None
        if message.deleted_at is not None:
            return None
        if delivery.channel == "push":
            if device is None or self.push is None:
                return PushResult("refused", code="device-removed")
            token = self._cipher.decrypt("notifications.push_token", device.token_enc)
            data = {"kind": message.kind, "message_id": str(message.id), **message.params}
            try:
                return await self.push.push(token, device.platform, message.title, message.body, data)
            except Exception as exc:  # a provider's bug or outage is a fault to retry, never a lost job run
                _log.warning("push provider failed", error=type(exc).__name__)
                return PushResult("fault", code=type(exc).__name__)
        if target is None:
            return SendOutcome("refused", code="identity-unlinked")
        template = self._mini.template(target.channel, target.app_id, message.kind)
        if template is None or template.template_id != delivery.template_id:
            return SendOutcome("refused", code="template-not-configured")
        values = _values(template, message)
        if isinstance(values, str):
            return SendOutcome("refused", code=f"missing-{values}")
        return await self._mini.send_subscribe(target, template, values)

    async def _record(
        self, conn: Connection, delivery: DeliveryRow, outcome: SendOutcome | PushResult, at: dt.datetime
    ) -> str:
        n = delivery.attempts
        if outcome.status == "sent":
            await self._deliveries.finish(conn, delivery.id, n, "sent", None, outcome.message_id)
            return "sent"
        grant_gone = isinstance(outcome, SendOutcome) and outcome.grant_gone
        if outcome.status == "refused":
            error = f"refused ({outcome.code})" + (
                ": the resident holds no grant of the template" if grant_gone else ""
            )
            if await self._deliveries.finish(conn, delivery.id, n, "failed", error) and delivery.grant_id:
                if grant_gone:
                    await self._grants.revoke(conn, delivery.grant_id)
                else:
                    await self._grants.give_back(conn, delivery.grant_id)
            return "failed"
        if n >= MAX_ATTEMPTS:
            await self._deliveries.finish(
                conn, delivery.id, n, "failed", f"gave up after {n} faults ({outcome.code})"
            )
            return "failed"
        await self._deliveries.retry_at(
            conn, delivery.id, n, at + RETRY_AFTER[n - 1], f"fault ({outcome.code})"
        )
        return "retrying"
