"""Ticket sales: the organiser's set-up, the fair queue, holds that never oversell, payment through payments'
orders, returns and the refunds of a cancelled session (docs/decisions/0028-ticket-sales.md).

What is left of a class is decided by PostgreSQL alone: a hold takes its tickets with one conditional UPDATE of the
class row (`sold + held + n <= quota`, also a CHECK), in the hold's transaction, after everything else the hold
writes, so the row is locked for the shortest time. Redis answers a sold-out class sooner and runs the queue; it is
never asked whether a ticket is free.

A hold is paid by one payment order for life (purpose `ticket`, payee the session's organiser), claimed in the
transaction that links it to the hold, the channel asked afterwards. The order's payment confirms the hold
(`on_paid`, in the payment's transaction); its close releases it (`on_closed`, in the closing transaction). A hold
whose time is up is released only through its order's close at the channel: a payment racing the expiry then
either confirms the hold (the close fails because the trade is paid) or, when it arrives after the release, takes
the tickets again if any are left, else its order is refunded whole. Money never stays without a ticket."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
import structlog

from app_backend.events.schemas import SessionFacts
from app_backend.events.service import EventsService
from app_backend.identity.service import ResidentDirectory
from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.db import Connection, Pool, pooled_connection
from app_backend.kernel.errors import DomainError, conflict, forbidden, invalid_field, not_found
from app_backend.kernel.messages import PlatformMessage
from app_backend.kernel.redis_batch import CallerChecks
from app_backend.kernel.settings import Settings
from app_backend.tickets.admissions import TicketAdmissions
from app_backend.tickets.queue import Queue
from app_backend.tickets.repository import (
    ChangeRepository,
    ChangeRow,
    ClassRow,
    HoldRepository,
    HoldRow,
    NewTicket,
    PersonLimit,
    RefundDue,
    SaleRepository,
    SaleRow,
    TicketRepository,
    TicketRow,
)
from app_backend.tickets.schemas import (
    HoldCreate,
    HoldView,
    PayCreate,
    PrintedTicket,
    QueueView,
    SaleSetup,
    SaleView,
    TicketClassView,
    TicketView,
)
from payments.channels.base import ChannelRefused, ChannelUnavailable
from payments.orders.schemas import OrderCreate
from payments.orders.service import ChannelDown, OrderService
from payments.refunds.schemas import RefundCreate
from payments.refunds.service import RefundService

_log = structlog.get_logger("tickets")
# (ticket, session, valid until) -> the printed code's text (code_service's ticket_codes.issue).
PrintCode = Callable[[uuid.UUID, uuid.UUID, dt.datetime], Awaitable[str]]
SendMessage = Callable[[Connection, uuid.UUID, PlatformMessage], Awaitable[bool]]
# A printed code stays valid this long after the session is due to end: a session delayed after the code was
# printed (the paper is in a grandparent's drawer) still admits at its new time; the gates' window (the provider,
# by the session's times) still decides when a ticket enters. A delay beyond it needs the code printed again.
PRINTED_GRACE = dt.timedelta(days=7)
# Printed codes live at most 400 days (docs/code-format.md 4.5): a day's margin under it.
PRINTED_AT_MOST = dt.timedelta(days=399)
# The public read of a sale is served from each worker's memory for this long (rush traffic polls it).
SALE_VIEW_SECONDS = 1.0
_NAME_MARKS = " ·.-'"


class PaidOrder(Protocol):
    """What tickets reads of an order payments tells it about."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def purpose(self) -> str: ...


class Resident(Protocol):
    @property
    def resident_id(self) -> uuid.UUID: ...

    @property
    def level(self) -> int: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sale_state(sale: SaleRow, classes: list[ClassRow], now: dt.datetime) -> str:
    if sale.session_status == "cancelled":
        return "cancelled"
    if now < sale.opens_at:
        return "scheduled"
    if now >= sale.closes_at or sale.session_status == "finished":
        return "closed"
    if all(c.sold + c.held >= c.quota for c in classes):
        return "sold_out"
    return "open"


def _name(raw: str, field: str) -> str:
    value = " ".join(raw.split())
    if not 1 <= len(value) <= 64 or any(not (c.isalpha() or c in _NAME_MARKS) for c in value):
        raise invalid_field(field, "may contain letters, spaces and the separators · . - ' only")
    return value


class TicketService:
    def __init__(
        self,
        pool: Pool,
        cipher: FieldCipher,
        settings: Settings,
        directory: ResidentDirectory,
        orders: OrderService,
        refunds: RefundService,
        queue: Queue,
        send: SendMessage,
        events: EventsService,
    ) -> None:
        self.pool = pool
        self.queue = queue
        self._cipher = cipher
        self._settings = settings
        self._directory = directory
        self._orders = orders
        self._refunds = refunds
        self._send = send
        self._sales = SaleRepository()
        self._holds = HoldRepository()
        self._tickets = TicketRepository()
        self._changes = ChangeRepository()
        self._views: dict[uuid.UUID, tuple[float, SaleView]] = {}
        self._buyer_keys: dict[uuid.UUID, bytes] = {}
        # The tickets' Admissions provider (app_backend/kernel/admissions.py), for code_service's event scene.
        self.admissions = TicketAdmissions(events)
        self._print: PrintCode | None = None

    # -- the organiser's set-up --------------------------------------------------------------------------------------

    async def set_up_sale(
        self, conn: Connection, organiser_id: uuid.UUID, facts: SessionFacts | None, data: SaleSetup
    ) -> SaleView:
        """Creates or changes a session's sale. Classes are matched by name: one with tickets sold or held keeps
        its price and section and cannot lose more quota than is taken, nor be removed."""
        if facts is None or facts.organiser_id != organiser_id:
            raise not_found("no such session of yours")
        if facts.status in ("cancelled", "finished"):
            raise conflict(f"the session is {facts.status}", "session-" + facts.status)
        for field in ("opens_at", "closes_at"):
            if getattr(data, field).tzinfo is None:
                raise invalid_field(field, "must carry its offset (RFC 3339)")
        if data.closes_at <= data.opens_at:
            raise invalid_field("closes_at", "must be after opens_at")
        if data.closes_at > facts.ends_at:
            raise invalid_field("closes_at", "must not be after the session ends")
        names: set[str] = set()
        for n, klass in enumerate(data.classes):
            if klass.name.strip() != klass.name or klass.name in names:
                raise invalid_field(
                    f"classes[{n}].name", "must be unique in the session, without edge spaces"
                )
            names.add(klass.name)
            if klass.section not in facts.sections:
                raise invalid_field(f"classes[{n}].section", "not a section of the session's venue")
            for entrance in klass.entrances:
                if entrance not in facts.entrances:
                    raise invalid_field(
                        f"classes[{n}].entrances", f"{entrance} is not an entrance of the venue"
                    )
        before = await self._sales.get(conn, facts.id, lock=True)
        await self._sales.upsert(
            conn,
            SaleRow(
                session_id=facts.id,
                organiser_id=organiser_id,
                venue_id=facts.venue_id,
                title=facts.title,
                opens_at=data.opens_at,
                closes_at=data.closes_at,
                per_person=data.per_person,
                hold_seconds=data.hold_minutes * 60,
                return_cutoff_minutes=data.return_cutoff_hours * 60,
                re_entry_minutes=data.re_entry_minutes,
                admit_per_minute=data.admit_per_minute,
                starts_at=facts.starts_at,
                ends_at=facts.ends_at,
                session_status=facts.status,
            ),
        )
        existing = {c.name: c for c in await self._sales.classes(conn, facts.id, lock=True)} if before else {}
        for n, klass in enumerate(data.classes):
            had = existing.pop(klass.name, None)
            if had is not None and had.sold + had.held > 0:
                if had.price_fen != klass.price_fen or had.section != klass.section:
                    raise invalid_field(
                        f"classes[{n}].price_fen", "tickets of this class are sold: price and section stay"
                    )
                if klass.quota < had.sold + had.held:
                    raise invalid_field(
                        f"classes[{n}].quota", f"{had.sold + had.held} tickets are sold or held"
                    )
            await self._sales.put_class(
                conn, facts.id, klass.name, klass.price_fen, klass.section, klass.entrances, klass.quota, n
            )
        for gone in existing.values():
            if await self._sales.has_tickets(conn, gone.id):
                raise invalid_field("classes", f"class {gone.name} has tickets and cannot be removed")
            await self._sales.delete_class(conn, gone.id)
        self._views.pop(facts.id, None)
        for klass_row in await self._sales.classes(conn, facts.id):
            await self.queue.tickets_back(klass_row.id)
        view = await self._sale_view(conn, facts.id, _now())
        assert view is not None
        return view

    # -- the public read ----------------------------------------------------------------------------------------------

    async def _sale_view(self, conn: Connection, session_id: uuid.UUID, now: dt.datetime) -> SaleView | None:
        sale = await self._sales.get(conn, session_id)
        if sale is None:
            return None
        classes = await self._sales.classes(conn, session_id)
        return SaleView(
            session_id=sale.session_id,
            title=sale.title,
            state=sale_state(sale, classes, now),  # type: ignore[arg-type]
            opens_at=sale.opens_at,
            closes_at=sale.closes_at,
            starts_at=sale.starts_at,
            per_person=sale.per_person,
            hold_minutes=sale.hold_seconds // 60,
            return_cutoff_hours=sale.return_cutoff_minutes // 60,
            re_entry_minutes=sale.re_entry_minutes,
            queue=sale.admit_per_minute > 0,
            admit_per_minute=sale.admit_per_minute,
            classes=[
                TicketClassView(
                    id=c.id,
                    name=c.name,
                    price_fen=c.price_fen,
                    section=c.section,
                    entrances=c.entrances,
                    quota=c.quota,
                    remaining=max(0, c.quota - c.sold - c.held),
                )
                for c in classes
            ],
        )

    async def sale(self, pool: Pool, session_id: uuid.UUID) -> SaleView:
        """A session's sale with what is left, at most SALE_VIEW_SECONDS old (one worker's memory)."""
        cached = self._views.get(session_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with pool.acquire() as conn:
            return await self._kept_view(conn, session_id)

    def _fresh_view(self, session_id: uuid.UUID) -> SaleView | None:
        cached = self._views.get(session_id)
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    async def _kept_view(self, conn: Connection, session_id: uuid.UUID) -> SaleView:
        clock = time.monotonic()
        cached = self._fresh_view(session_id)
        if cached is not None:
            return cached
        view = await self._sale_view(conn, session_id, _now())
        if view is None:
            raise not_found("this session has no ticket sale")
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[session_id] = (clock + SALE_VIEW_SECONDS, view)
        return view

    # -- the queue ----------------------------------------------------------------------------------------------------

    async def queue_place(
        self, pool: Pool, resident: Resident, session_id: uuid.UUID, *, join: bool
    ) -> QueueView:
        """A join or a poll: Redis alone once this worker knows the buyer's key and holds the sale's view (at most
        SALE_VIEW_SECONDS old); PostgreSQL only to learn them. In a rush every waiting buyer polls, and a
        transaction per poll took the database's and the workers' time from the holds and payments."""
        view = self._fresh_view(session_id)
        if view is None or resident.resident_id not in self._buyer_keys:
            async with pooled_connection(pool, self._settings.db_acquire_timeout) as conn:
                await self._buyer_key(conn, resident)
                view = await self._kept_view(conn, session_id)
        now = _now()
        if view.state == "cancelled":
            raise conflict("the session is cancelled", "session-cancelled")
        if now >= view.closes_at:
            raise conflict("the sale is closed", "sale-closed")
        if view.state == "sold_out":
            # Waiting for a place in a queue whose every ticket is sold or held gains nothing: say so now, not
            # when the place comes up (a rush of 100,000 for 20,000 would otherwise wait out 80,000 places).
            raise DomainError(
                409,
                "sold-out",
                "every ticket is sold or held; held tickets that are not paid come back on sale",
                headers={"Retry-After": "30"},
            )
        place = await self.queue.place(
            session_id, resident.resident_id, view.opens_at, max(view.admit_per_minute, 1), now, join=join
        )
        if place is None:
            raise not_found("you have not joined this session's queue")
        admitted = place.position == 0
        token, expires = (
            self.queue.issue_pass(session_id, resident.resident_id, now) if admitted else (None, None)
        )
        return QueueView(
            session_id=session_id,
            admitted=admitted,
            position=place.position,
            admitted_at=place.slot,
            estimate_seconds=max(0, int((place.slot - now).total_seconds() + 0.999)),
            pass_token=token,
            pass_expires_at=expires,
        )

    # -- holds --------------------------------------------------------------------------------------------------------

    async def _buyer_key(self, conn: Connection, resident: Resident) -> bytes:
        """The keyed ID number of a real-named buyer (kept per worker: it never changes once verified); 403 below
        L2. The token's level can lag behind a verification just made, so the key itself is the proof."""
        key = self._buyer_keys.get(resident.resident_id)
        if key is None:
            key = await self._directory.person_key_of(conn, resident.resident_id)
            if key is None:
                raise forbidden(
                    "tickets are sold to real-name (L2) accounts: verify your name and ID number first",
                    "real-name-required",
                )
            if len(self._buyer_keys) > 100_000:
                self._buyer_keys.clear()
            self._buyer_keys[resident.resident_id] = key
        return key

    async def _attendees(
        self, conn: Connection, resident: Resident, data: HoldCreate
    ) -> tuple[list[NewTicket], list[tuple[str, str] | None]]:
        """The hold's tickets to write, and each attendee's name and ID number in the clear (None: the buyer)."""
        if resident.level < 2:
            await self._buyer_key(conn, resident)
        found: list[NewTicket] = []
        plain: list[tuple[str, str] | None] = []
        seen: set[bytes] = set()
        for n, attendee in enumerate(data.attendees):
            field = f"attendees[{n}]"
            if attendee.name is None and attendee.id_number is None:
                ticket = NewTicket(resident.resident_id, None, None, await self._buyer_key(conn, resident))
                plain.append(None)
            elif attendee.name is None or attendee.id_number is None:
                missing = "name" if attendee.name is None else "id_number"
                raise invalid_field(f"{field}.{missing}", "required with the other (both absent: yourself)")
            else:
                name = _name(attendee.name, f"{field}.name")
                try:
                    key = self._directory.person_key(attendee.id_number)
                except ValueError as exc:
                    raise invalid_field(f"{field}.id_number", str(exc)) from None
                number = attendee.id_number.strip().upper()
                ticket = NewTicket(
                    await self._directory.resident_of_person(conn, key),
                    self._cipher.encrypt("tickets.attendee_name", name),
                    self._cipher.encrypt("tickets.attendee_id_number", number),
                    key,
                )
                plain.append((name, number))
            if ticket.person_key in seen:
                raise invalid_field(field, "names a person already named in this hold")
            seen.add(ticket.person_key)
            found.append(ticket)
        return found, plain

    async def hold(
        self, pool: Pool, resident: Resident, data: HoldCreate, checks: CallerChecks | None = None
    ) -> HoldView:
        """Holds one ticket per attendee of a class for the buyer while they pay (the sale's hold time). A class
        marked sold out is refused before any connection is taken: under a rush most buyers get their answer from
        Redis alone. The hold itself is one statement (no BEGIN or COMMIT around it): the class row is locked for
        that statement only. When it takes nothing, a second read says why. `checks`: the caller's Redis checks
        still to be settled, folded into the gate's round trip."""
        if checks is not None:
            sold_out = await self.queue.checked_and_sold_out(checks, data.class_id)
        else:
            sold_out = await self.queue.sold_out(data.class_id)
        if sold_out:
            raise self._sold_out()
        now = _now()
        passed = self.queue.pass_ok(data.pass_token, data.session_id, resident.resident_id, now)
        async with pooled_connection(pool, self._settings.db_acquire_timeout) as conn:
            tickets, plain = await self._attendees(conn, resident, data)
            try:
                held = await self._holds.hold(
                    conn, data.session_id, data.class_id, resident.resident_id, passed, tickets
                )
            except PersonLimit:
                raise await self._over_limit(conn, data.session_id, tickets) from None
            if held is None:
                raise await self._why_not(conn, data, passed, now)
        by_key = {bytes(k): i for i, k in zip(held.ticket_ids, held.ticket_keys, strict=True)}
        views = []
        for ticket, person in zip(tickets, plain, strict=True):
            name = number = None
            if person is not None:
                name = mask(person[0], self._settings.mask_name.head, self._settings.mask_name.tail)
                number = mask(
                    person[1], self._settings.mask_id_number.head, self._settings.mask_id_number.tail
                )
            views.append(
                TicketView(
                    id=by_key[ticket.person_key],
                    session_id=data.session_id,
                    class_id=data.class_id,
                    class_name=held.class_name,
                    section=held.section,
                    seat=None,
                    price_fen=held.price_fen,
                    status="held",
                    attendee_name=name,
                    attendee_id_number=number,
                    attendee_is_buyer=person is None,
                    admitted_at=None,
                )
            )
        return HoldView(
            id=held.id,
            session_id=data.session_id,
            class_id=data.class_id,
            status="held",
            quantity=len(tickets),
            amount_fen=held.amount_fen,
            expires_at=held.expires_at,
            tickets=views,
        )

    async def _over_limit(
        self, conn: Connection, session_id: uuid.UUID, tickets: list[NewTicket]
    ) -> DomainError:
        sale = await self._sales.get(conn, session_id)
        limit = sale.per_person if sale is not None else 0
        counts = await self._holds.counts(conn, session_id, [t.person_key for t in tickets])
        n = next((i for i, t in enumerate(tickets) if counts.get(t.person_key, 0) >= limit), 0)
        return DomainError(
            409,
            "per-person-limit",
            f"attendees[{n}]: this person already holds {limit} tickets for this session",
            extra={"errors": [{"field": f"attendees[{n}]", "message": "per-person limit reached"}]},
        )

    async def _why_not(
        self, conn: Connection, data: HoldCreate, passed: bool, now: dt.datetime
    ) -> DomainError:
        """Why the hold's statement took nothing, in the order a buyer can act on."""
        sale = await self._sales.get(conn, data.session_id)
        if sale is None:
            return invalid_field("session_id", "this session has no ticket sale", 404)
        if sale.session_status in ("cancelled", "finished"):
            return conflict(f"the session is {sale.session_status}", "session-" + sale.session_status)
        if now < sale.opens_at:
            wait = int((sale.opens_at - now).total_seconds()) + 1
            return DomainError(
                409, "sale-not-open", "the sale has not opened yet", headers={"Retry-After": str(wait)}
            )
        if now >= sale.closes_at:
            return conflict("the sale is closed", "sale-closed")
        if len(data.attendees) > sale.per_person:
            return invalid_field(
                "attendees", f"at most {sale.per_person} tickets per person for this session"
            )
        if await self._sales.class_of(conn, sale.session_id, data.class_id) is None:
            return invalid_field("class_id", "not a ticket class of this session", 404)
        if sale.admit_per_minute > 0 and not passed:
            return DomainError(
                403,
                "queue-pass-required",
                "pass_token: join the queue (POST /api/v1/tickets/sessions/{id}/queue) and hold with the pass "
                "it gives once you are admitted",
                headers={"Retry-After": "5"},
                extra={"errors": [{"field": "pass_token", "message": "missing, expired or not yours"}]},
            )
        await self.queue.mark_sold_out(data.class_id)
        return self._sold_out()

    @staticmethod
    def _sold_out() -> DomainError:
        return DomainError(
            409,
            "sold-out",
            "no tickets of this class are left; held tickets that are not paid come back on sale",
            headers={"Retry-After": "30"},
        )

    async def _own_hold(
        self, conn: Connection, buyer_id: uuid.UUID, hold_id: uuid.UUID, *, lock: bool
    ) -> HoldRow:
        hold = await self._holds.get(conn, hold_id, lock=lock)
        if hold is None or hold.buyer_id != buyer_id:
            raise not_found("hold not found")
        return hold

    async def hold_view(self, conn: Connection, buyer_id: uuid.UUID, hold_id: uuid.UUID) -> HoldView:
        return await self._hold_view(conn, await self._own_hold(conn, buyer_id, hold_id, lock=False))

    async def _hold_view(self, conn: Connection, hold: HoldRow) -> HoldView:
        return HoldView(
            id=hold.id,
            session_id=hold.session_id,
            class_id=hold.class_id,
            status=hold.status,
            quantity=hold.quantity,
            amount_fen=hold.amount_fen,
            expires_at=hold.expires_at,
            tickets=[self._ticket_view(t) for t in await self._tickets.of_hold(conn, hold.id)],
            order_id=hold.order_id,
            pay=hold.pay,
        )

    # -- payment ------------------------------------------------------------------------------------------------------

    async def pay(
        self, pool: Pool, buyer_id: uuid.UUID, hold_id: uuid.UUID, data: PayCreate, client_ip: str
    ) -> HoldView:
        """The hold's one payment order (claimed with the hold locked, the channel asked after the commit) and
        what the client pays with. Asked again, it answers the same order; no answer from the channel is a 503
        and the retry asks the channel again under the same out_trade_no."""
        async with pool.acquire() as conn, conn.transaction():
            hold = await self._own_hold(conn, buyer_id, hold_id, lock=True)
            if hold.order_id is None:
                if hold.status != "held" or hold.expires_at <= _now():
                    raise conflict("this hold has ended; hold tickets again", "hold-ended")
                sale = await self._sales.get(conn, hold.session_id)
                assert sale is not None
                order = await self._orders.claim(
                    conn,
                    buyer_id,
                    OrderCreate(
                        purpose="ticket",
                        amount_fen=hold.amount_fen,
                        subject=f"{sale.title} 门票{hold.quantity}张"[:128],
                        payee_id=sale.organiser_id,
                        channel=data.channel,
                        method=data.method,
                        payer_channel_id=data.payer_channel_id,
                    ),
                    purpose="ticket",
                )
                await self._holds.set_order(conn, hold.id, order.id)
            else:
                found = await self._orders.order(conn, hold.order_id)
                assert found is not None  # holds.order_id names an order claimed with it
                order = found
            if hold.pay is not None:
                return await self._hold_view(conn, hold)
            if order.status != "waiting":
                raise conflict(f"this hold's order is {order.status}", "hold-ended")
            payer = await self._orders.payer_channel_id(
                conn, buyer_id, order.channel, order.method, data.payer_channel_id
            )
        try:
            pay = await self._orders.ask_channel(order, client_ip, payer)
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {order.channel} gateway did not answer; retry", headers={"Retry-After": "2"}
            ) from None
        except ChannelRefused as refused:
            _log.warning("channel refused a ticket order", channel=order.channel, refusal=str(refused)[:200])
            raise DomainError(
                502, "channel-refused", f"the {order.channel} gateway refused this order"
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            await self._holds.set_pay(conn, hold_id, msgspec.to_builtins(pay))
            hold = await self._own_hold(conn, buyer_id, hold_id, lock=False)
            return await self._hold_view(conn, hold)

    async def order_paid(self, conn: Connection, order: PaidOrder) -> None:
        """payments' on_paid, in the payment's transaction: the hold's tickets become valid; a hold released
        meanwhile takes its tickets again when they are left, else it is unfilled and its order refunded whole."""
        if order.purpose != "ticket":
            return
        hold = await self._holds.by_order(conn, order.id)
        if hold is None:
            return
        if hold.status == "held":
            await self._holds.confirm(conn, hold)
            sale = await self._sales.get(conn, hold.session_id)
            if sale is not None and sale.session_status == "cancelled":
                await self._tickets.cancel_session(conn, hold.session_id)  # paid too late: refunded
        elif hold.status == "released" and not await self._holds.refill(conn, hold):
            _log.warning("ticket order paid after its hold ended; refunding", hold=str(hold.id))

    async def order_closed(self, conn: Connection, order_id: uuid.UUID) -> None:
        """payments' on_closed, in the closing transaction: the hold's tickets go back on sale."""
        hold = await self._holds.by_order(conn, order_id)
        if hold is not None and await self._holds.release(conn, hold):
            await self.queue.tickets_back(hold.class_id)

    async def expire_holds(self, pool: Pool, limit: int = 200) -> dict[str, int]:
        """Ends the holds whose time is up: one without an order is released at once; one with an order is closed
        at the channel first (payments' close), whose on_closed releases it; a trade found paid confirms it."""
        counts = {"released": 0, "paid": 0, "unknown": 0}
        async with pool.acquire() as conn:
            due = await self._holds.expired(conn, _now(), limit)
        for hold in due:
            if hold.order_id is None:
                async with pool.acquire() as conn, conn.transaction():
                    locked = await self._holds.get(conn, hold.id, lock=True)
                    if locked is None or locked.status != "held":
                        continue
                    if locked.order_id is None:
                        if await self._holds.release(conn, locked):
                            counts["released"] += 1
                            await self.queue.tickets_back(hold.class_id)
                        continue
                    hold = locked  # its order was claimed meanwhile: closed at the channel first
            assert hold.order_id is not None
            try:
                await self._orders.close_for_payer(pool, hold.order_id, hold.buyer_id)
                counts["released"] += 1
            except DomainError as refused:
                counts["paid" if refused.status == 409 else "unknown"] += 1
        return counts

    # -- tickets, returns and refunds ---------------------------------------------------------------------------------

    def _ticket_view(self, row: TicketRow) -> TicketView:
        name = id_number = None
        if row.attendee_name_enc is not None and row.attendee_id_enc is not None:
            rule = self._settings.mask_name
            name = mask(
                self._cipher.decrypt("tickets.attendee_name", row.attendee_name_enc), rule.head, rule.tail
            )
            rule = self._settings.mask_id_number
            id_number = mask(
                self._cipher.decrypt("tickets.attendee_id_number", row.attendee_id_enc), rule.head, rule.tail
            )
        refund = None
        if row.status in ("returned", "cancelled"):
            refund = "refund_sent" if row.refund_id else "refunding"
        return TicketView(
            id=row.id,
            session_id=row.session_id,
            class_id=row.class_id,
            class_name=row.class_name,
            section=row.section,
            seat=row.seat,
            price_fen=row.price_fen,
            status=row.status,  # type: ignore[arg-type]
            attendee_name=name,
            attendee_id_number=id_number,
            attendee_is_buyer=row.attendee_name_enc is None,
            admitted_at=row.admitted_at,
            refund_status=refund,
        )

    async def tickets_of(self, conn: Connection, buyer_id: uuid.UUID, limit: int) -> list[TicketView]:
        return [self._ticket_view(t) for t in await self._tickets.of_buyer(conn, buyer_id, limit)]

    def use_printed_codes(self, issue: PrintCode) -> None:
        """How a ticket's printed code is signed: code_service's `ticket_codes.issue`, handed over at start."""
        self._print = issue

    async def printed(self, conn: Connection, buyer_id: uuid.UUID, ticket_id: uuid.UUID) -> PrintedTicket:
        """The buyer prints a paid ticket's own code for its attendee; valid until PRINTED_GRACE after the session
        is due to end (a delay does not void the paper). Asked again, a new code for the same ticket: the ticket,
        not the code, is admitted once."""
        row = await self._tickets.get(conn, ticket_id)
        if row is None or row.buyer_id != buyer_id or row.status == "released":
            raise not_found("ticket not found")
        if row.status != "valid":
            raise conflict(f"a {row.status} ticket has no code to print", "ticket-not-valid")
        sale = await self._sales.get(conn, row.session_id)
        assert sale is not None
        if sale.session_status in ("finished", "cancelled") or sale.ends_at <= _now():
            raise conflict(f"the session is {sale.session_status}: nothing to enter", "ticket-not-valid")
        if self._print is None:
            raise DomainError(
                503, "unavailable", "printed codes are not available", headers={"Retry-After": "5"}
            )
        valid_until = min(sale.ends_at + PRINTED_GRACE, _now() + PRINTED_AT_MOST)
        code = await self._print(ticket_id, row.session_id, valid_until)
        return PrintedTicket(
            ticket_id=ticket_id,
            session_id=row.session_id,
            section=row.section,
            seat=row.seat,
            code=code,
            valid_until=valid_until,
        )

    async def ticket_of(self, conn: Connection, buyer_id: uuid.UUID, ticket_id: uuid.UUID) -> TicketView:
        row = await self._tickets.get(conn, ticket_id)
        if row is None or row.buyer_id != buyer_id or row.status == "released":
            raise not_found("ticket not found")
        return self._ticket_view(row)

    async def give_back(self, pool: Pool, buyer_id: uuid.UUID, ticket_id: uuid.UUID) -> TicketView:
        """The buyer returns a paid ticket before the sale's cut-off: the seat goes back on sale and the price is
        refunded through payments (under the ticket's own key: asked again, the same refund)."""
        async with pool.acquire() as conn, conn.transaction():
            row = await self._tickets.get(conn, ticket_id)
            if row is None or row.buyer_id != buyer_id or row.status == "released":
                raise not_found("ticket not found")
            sale = await self._sales.get(conn, row.session_id)
            assert sale is not None
            if row.status in ("returned", "cancelled"):
                return self._ticket_view(row)
            if row.status != "valid":
                raise conflict("only a paid ticket can be returned", "ticket-not-paid")
            if row.admitted_at is not None:
                raise conflict("this ticket was used to enter", "ticket-used")
            cutoff = sale.starts_at - dt.timedelta(minutes=sale.return_cutoff_minutes)
            if _now() >= cutoff or sale.session_status not in ("scheduled", "delayed"):
                raise conflict(
                    f"returns closed at {cutoff.isoformat()} ({sale.return_cutoff_minutes // 60} h before the start)",
                    "return-closed",
                )
            returned = await self._tickets.give_back(conn, ticket_id, buyer_id)
            if returned is None:
                raise conflict("this ticket cannot be returned now", "ticket-not-paid")
        await self.queue.tickets_back(row.class_id)
        await self.refund_due(pool, only=ticket_id)
        async with pool.acquire() as conn:
            return await self.ticket_of(conn, buyer_id, ticket_id)

    async def _refund(self, pool: Pool, due: RefundDue, key: str, reason: str) -> uuid.UUID | None:
        try:
            answer = await self._refunds.refund(
                pool, due.payee_id, due.order_id, key, RefundCreate(amount_fen=due.amount_fen, reason=reason)
            )
        except DomainError as refused:
            _log.error("ticket refund refused", key=key, status=refused.status, detail=refused.detail[:200])
            return None
        return answer.body.id

    async def refund_due(self, pool: Pool, limit: int = 100, only: uuid.UUID | None = None) -> dict[str, int]:
        """Refunds the returned and cancelled tickets not refunded yet, and the unfilled holds' orders. Each refund
        is keyed by the ticket (or hold): a retry or a second run is the same refund (decision 0018)."""
        counts = {"tickets": 0, "holds": 0, "failed": 0}
        async with pool.acquire() as conn:
            tickets = await self._tickets.to_refund(conn, limit, only)
            holds = await self._holds.unfilled(conn, limit) if only is None else []
        for due in tickets:
            refund_id = await self._refund(pool, due, f"ticket:{due.id}", "门票退票退款")
            if refund_id is None:
                counts["failed"] += 1
                continue
            async with pool.acquire() as conn, conn.transaction():
                await self._tickets.set_refund(conn, due.id, refund_id)
                await self._send(conn, due.buyer_id, self._refunded_message(due))
            counts["tickets"] += 1
        for due in holds:
            refund_id = await self._refund(pool, due, f"ticket-hold:{due.id}", "门票已售罄，款项原路退回")
            if refund_id is None:
                counts["failed"] += 1
                continue
            async with pool.acquire() as conn, conn.transaction():
                await self._holds.set_refund(conn, due.id, refund_id)
                await self._send(conn, due.buyer_id, self._refunded_message(due))
            counts["holds"] += 1
        return counts

    @staticmethod
    def _refunded_message(due: RefundDue) -> PlatformMessage:
        return PlatformMessage(
            kind="event_changed",
            title="门票退款",
            body=f"您购买的“{due.title[:60]}”门票款{due.amount_fen / 100:.2f}元已原路退回，请留意到账。",
            sender="tickets",
            sender_name="泰州通票务",
            key=f"ticket-refund:{due.id}",
        )

    # -- the schedule's changes ---------------------------------------------------------------------------------------

    async def session_changed(self, conn: Connection, facts: SessionFacts, previous: str) -> None:
        """events' on_session_changed, in the publishing transaction: the sale follows the session; a cancelled
        session's tickets are to be refunded (the refund job) and its holds end (the expiry job); the holders
        are messaged by the change job."""
        sale = await self._sales.get(conn, facts.id, lock=True)
        if sale is None:
            return
        await self._sales.sync_session(
            conn, facts.id, facts.title, facts.starts_at, facts.ends_at, facts.status
        )
        self._views.pop(facts.id, None)
        if facts.status == "cancelled" and previous != "cancelled":
            await self._tickets.cancel_session(conn, facts.id)
            await self._holds.expire_session(conn, facts.id)
            await self._changes.insert(conn, facts.id, "cancelled", facts.starts_at)
        elif facts.status == "delayed" or facts.starts_at != sale.starts_at:
            await self._changes.insert(conn, facts.id, "delayed", facts.starts_at)

    async def tell_holders(self, pool: Pool, limit: int = 20, page: int = 500) -> dict[str, int]:
        """The change job: messages every holder of a delayed or cancelled session once (keyed by the change)."""
        counts = {"changes": 0, "messages": 0}
        async with pool.acquire() as conn:
            changes = await self._changes.pending(conn, limit)
        for change in changes:
            after: uuid.UUID | None = None
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    buyers = await self._tickets.holders(conn, change.session_id, after, page)
                    for buyer in buyers:
                        counts["messages"] += await self._send(
                            conn, buyer, self._change_message(change, buyer)
                        )
                if len(buyers) < page:
                    break
                after = buyers[-1]
            async with pool.acquire() as conn:
                await self._changes.done(conn, change.id)
            counts["changes"] += 1
        return counts

    @staticmethod
    def _change_message(change: ChangeRow, buyer: uuid.UUID) -> PlatformMessage:
        title = change.title[:60]
        starts = change.starts_at.astimezone(BUSINESS_TZ).strftime("%m月%d日 %H:%M")
        if change.kind == "cancelled":
            head, body = "赛事取消", f"您购票的“{title}”已取消，门票款将原路全额退回，无需操作。"
        else:
            head, body = "赛事延期", f"您购票的“{title}”已延期，新的开始时间为{starts}，门票继续有效。"
        return PlatformMessage(
            kind="event_changed",
            title=head,
            body=body,
            sender="tickets",
            sender_name="泰州通票务",
            key=f"session-change:{change.id}:{buyer}",  # a sender's key is one message
        )
