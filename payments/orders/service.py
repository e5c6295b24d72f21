"""Orders: idempotent creation, the monotonic state machine, ledger postings when money arrives, and settling
orders whose outcome is unknown by asking the channel."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec
import structlog

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, conflict, invalid_field, not_found
from app_backend.organisations.service import OrganisationService
from payments.channels.base import (
    ChannelOrder,
    ChannelRefused,
    ChannelTrade,
    ChannelUnavailable,
    PaymentChannel,
    TradeStatus,
)
from payments.ledger.service import Ledger, Share, channel_fee, split_order
from payments.orders.repository import IdempotencyRepository, OrderRepository, OrderRow, ShareRow
from payments.orders.schemas import (
    OrderCreate,
    OrderRefund,
    OrderView,
    PayeeOrderView,
    PayInstructions,
    ShareView,
)
from payments.settings import PaymentSettings
from payments.webhooks.service import WebhookService

_log = structlog.get_logger("payments")
BodyT = TypeVar("BodyT", bound=msgspec.Struct)
# (the request's connection, the payer, the channel's name, the app id its mini-program payments are made for) ->
# the payer's id at the channel in that app, None when the payer has linked no identity of it (mini_programs).
MiniProgramPayers = Callable[[Connection, uuid.UUID, str, str], Awaitable[str | None]]


class ChannelDown(DomainError):
    """The channel's gateway did not answer: the client retries (with the same idempotency key)."""

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(503, "service-unavailable", detail, headers=headers)


class Answer(msgspec.Struct, Generic[BodyT], frozen=True):
    """What an idempotent creation answers: its body and status, given again for every repeat of the key
    (`replayed` then says so)."""

    status_code: int
    body: BodyT
    replayed: bool = False


def request_hash(*parts: object) -> bytes:
    return hashlib.sha256(msgspec.json.encode(parts)).digest()


def order_view(row: OrderRow, pay: PayInstructions | None = None) -> OrderView:
    """`pay`: the instructions just stored, when `row` was read before they were."""
    if pay is None and row.pay_params:
        pay = msgspec.convert(row.pay_params, PayInstructions)
    return OrderView(
        id=row.id,
        out_trade_no=row.out_trade_no,
        status=row.status,
        purpose=row.purpose,
        subject=row.subject,
        amount_fen=row.amount_fen,
        refunded_fen=row.refunded_fen,
        payee_id=row.payee_id,
        channel=row.channel,
        method=row.method,
        created_at=row.created_at,
        expires_at=row.expires_at,
        paid_at=row.paid_at,
        pay=pay,
    )


def paying_app_id(channel: PaymentChannel) -> str | None:
    """The app id a channel's mini-program payments are made for: the WeChat Pay merchant's appid, the Alipay
    mini-program's op_app_id or else the Alipay app id."""
    config = getattr(channel, "config", None)
    for name in ("mini_app_id", "appid", "app_id"):
        value = getattr(config, name, None)
        if value:
            return str(value)
    return None


def ready_to_call(channel: str, method: str, params: dict[str, object]) -> dict[str, object]:
    """Pay parameters as the client passes them on: my.tradePay takes the Alipay trade number as `tradeNO`
    (wx.requestPayment's arguments come from the WeChat channel as they are)."""
    if channel == "alipay" and method == "mini" and "trade_no" in params:
        return {**params, "tradeNO": params["trade_no"]}
    return params


def payer_scope(payer_id: uuid.UUID) -> str:
    """Where a payer's idempotency keys live."""
    return f"resident:{payer_id}"


def new_out_trade_no() -> str:
    """32 characters at most (WeChat's limit), date first so bills and logs sort by day."""
    return "TZT" + dt.datetime.now(BUSINESS_TZ).strftime("%Y%m%d") + secrets.token_hex(8).upper()


class OrderService:
    def __init__(
        self,
        channels: dict[str, PaymentChannel],
        payees: OrganisationService,
        ledger: Ledger,
        settings: PaymentSettings,
        events: WebhookService,
    ) -> None:
        self.events = events
        self._channels = channels
        self._payees = payees
        self._ledger = ledger
        self._settings = settings
        self._orders = OrderRepository()
        self._keys = IdempotencyRepository()
        self._paid_listeners: list[Callable[[Connection, OrderRow], Awaitable[None]]] = []
        self._closed_listeners: list[Callable[[Connection, uuid.UUID], Awaitable[None]]] = []
        self._mini_payers: MiniProgramPayers | None = None

    def use_mini_program_payers(self, lookup: MiniProgramPayers) -> None:
        """Where a `mini` order's payer comes from: the identity the resident linked for the channel's app."""
        self._mini_payers = lookup

    async def payer_channel_id(
        self, conn: Connection, payer_id: uuid.UUID, channel_name: str, method: str, given: str | None
    ) -> str | None:
        """Who pays at the channel. `mini`: the payer's linked mini-program identity, never one a client names
        (docs/decisions/0023-mini-program-accounts.md); `jsapi`: the openid or buyer id the client gives (H5)."""
        if method == "jsapi" and not given:
            raise invalid_field("payer_channel_id", "required for this method")
        if method != "mini":
            return given
        if given:
            raise invalid_field(
                "payer_channel_id",
                "not accepted with method mini: the payer is the mini-program identity linked to your account",
            )
        app_id = paying_app_id(self.channel(channel_name))
        found = None
        if self._mini_payers is not None and app_id is not None:
            found = await self._mini_payers(conn, payer_id, channel_name, app_id)
        if found is None:
            message = f"no {channel_name} mini-program identity of app {app_id} is linked to your account"
            raise DomainError(
                422,
                "mini-program-identity-required",
                f"method: {message}; log in through that mini-program (or link it) first",
                extra={"errors": [{"field": "method", "message": message}]},
            )
        return found

    def on_paid(self, listener: Callable[[Connection, OrderRow], Awaitable[None]]) -> None:
        """`listener(conn, paid_row)` runs in mark_paid's transaction, once per order that becomes paid."""
        self._paid_listeners.append(listener)

    def on_closed(self, listener: Callable[[Connection, uuid.UUID], Awaitable[None]]) -> None:
        """`listener(conn, order_id)` runs in the closing transaction, once per order that becomes closed unpaid
        (by the payer, the payee, the channel's notification or the stale-order job): what it held can go."""
        self._closed_listeners.append(listener)

    async def _mark_closed(self, conn: Connection, order_id: uuid.UUID) -> bool:
        if not await self._orders.mark_closed(conn, order_id):
            return False
        for listener in self._closed_listeners:
            await listener(conn, order_id)
        return True

    async def _split(self, conn: Connection, data: OrderCreate, purpose: str) -> list[ShareRow]:
        """The shares of an order with splits (none without): each split payee exists, appears once and is not
        the order's payee, and the order's payee keeps at least a fen."""
        if not data.splits:
            return []
        seen = {data.payee_id}
        for n, split in enumerate(data.splits):
            if split.payee_id in seen:
                raise invalid_field(f"splits[{n}].payee_id", "each payee may have one share only")
            if await self._payees.payee(conn, split.payee_id) is None:
                raise invalid_field(f"splits[{n}].payee_id", "no such payee")
            seen.add(split.payee_id)
        if sum(split.amount_fen for split in data.splits) >= data.amount_fen:
            raise invalid_field("splits", "the shares must leave the order's payee at least 1 fen")
        shares = split_order(
            data.payee_id,
            data.amount_fen,
            self._settings.fee_bp.get(purpose, 0),
            [(split.payee_id, split.amount_fen) for split in data.splits],
        )
        return [ShareRow(s.payee_id, s.amount_fen, s.fee_fen) for s in shares]

    async def shares(self, conn: Connection, row: OrderRow) -> list[Share]:
        """Who is owed what of an order: its payee's share first, then the splits (an order without splits is
        one share, all its payee's)."""
        split = await self._orders.shares_of(conn, row.id)
        if not split:
            return [Share(row.payee_id, row.amount_fen, row.fee_fen)]
        mine = [s for s in split if s.payee_id == row.payee_id]
        others = [s for s in split if s.payee_id != row.payee_id]
        return [Share(s.payee_id, s.amount_fen, s.fee_fen) for s in (*mine, *others)]

    def channel_fee_ppm(self, name: str) -> int | None:
        """What the channel keeps per payment (parts per million), None when not configured."""
        return self._settings.channel_fee_ppm.get(name)

    def channel(self, name: str) -> PaymentChannel:
        channel = self._channels.get(name)
        if channel is None:
            raise invalid_field("channel", "not configured")
        return channel

    async def claim(
        self, conn: Connection, payer_id: uuid.UUID, data: OrderCreate, *, purpose: str | None = None
    ) -> OrderRow:
        """Checks an order and stores it with its out_trade_no, `waiting` and not yet instructed; the channel is
        not asked (ask_channel, once this is committed). `purpose` replaces data.purpose for orders other parts
        of payments open (a transit repayment)."""
        purpose = purpose or data.purpose
        # What the payer's bill and the payee's statement show: one line, no edge whitespace (WeChat Pay signs
        # the body's text as sent, and XML readers trim it, so an edge space broke the signature).
        subject = " ".join(data.subject.split())
        if not subject:
            raise invalid_field("subject", "must contain text")
        if await self._payees.payee(conn, data.payee_id) is None:
            raise invalid_field("payee_id", "no such payee")
        self.channel(data.channel)
        # Refuses here a payer the method does not take (a client-named payer of a mini payment, none for jsapi).
        await self.payer_channel_id(conn, payer_id, data.channel, data.method, data.payer_channel_id)
        shares = await self._split(conn, data, purpose)
        row = await self._orders.insert(
            conn,
            out_trade_no=new_out_trade_no(),
            payer_id=payer_id,
            payee_id=data.payee_id,
            purpose=purpose,
            subject=subject,
            amount_fen=data.amount_fen,
            fee_fen=data.amount_fen * self._settings.fee_bp.get(purpose, 0) // 10_000,
            channel=data.channel,
            method=data.method,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._settings.order_ttl_seconds),
        )
        if shares:
            await self._orders.insert_shares(conn, row.id, shares)
        return row

    async def ask_channel(
        self, row: OrderRow, client_ip: str, payer_channel_id: str | None
    ) -> PayInstructions:
        """The channel's pay instructions for a claimed order, under its own out_trade_no: asked again after no
        answer, the channel gives back the trade it holds for that number. Call it with no transaction open (a
        slow gateway must not hold a connection). Raises ChannelUnavailable (no answer: the outcome is unknown)
        and ChannelRefused (a definite no)."""
        pay = await self.channel(row.channel).create(
            ChannelOrder(
                out_trade_no=row.out_trade_no,
                amount_fen=row.amount_fen,
                subject=row.subject,
                method=row.method,
                notify_url=f"{self._settings.notify_base_url}/api/v1/payments/notify/{row.channel}",
                expires_at=row.expires_at,
                client_ip=client_ip,
                payer_id=payer_channel_id,
            )
        )
        return PayInstructions(
            channel=pay.channel, method=pay.method, params=ready_to_call(pay.channel, pay.method, pay.params)
        )

    async def place(
        self, pool: Pool, payer_id: uuid.UUID, key: str, data: OrderCreate, client_ip: str
    ) -> Answer[OrderView]:
        """A payer's order, one out_trade_no for life (decision 0018): the order and its number are committed
        under the key first, the channel is asked outside any transaction, and its pay instructions are stored in
        a second short transaction. When the channel does not answer, the order stays `waiting` without
        instructions and the payer gets a 503: the retry with the same key asks the channel again with the same
        out_trade_no (both channels give back the same trade for a repeated number and the same parameters), never
        a new one; an order nobody pays is closed by settle_stale after asking the channel. (Other parts of
        payments open their orders the same way, with claim and ask_channel: a transit debt repayment.)"""
        scope = f"resident:{payer_id}"
        purpose = data.purpose
        digest = request_hash("orders.create", {**msgspec.to_builtins(data), "purpose": purpose})
        async with pool.acquire() as conn, conn.transaction():
            row, replayed = await self._open(conn, scope, key, digest, payer_id, data)
            payer = None
            if row.pay_params is None:
                payer = await self.payer_channel_id(
                    conn, payer_id, row.channel, row.method, data.payer_channel_id
                )
        if row.pay_params is not None:
            return Answer(201, order_view(row), replayed=replayed)
        if row.status != "waiting":
            raise DomainError(409, "conflict", f"this order is {row.status}; use a new Idempotency-Key")
        try:
            instructions = await self.ask_channel(row, client_ip, payer)
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {row.channel} gateway did not answer; retry with the same Idempotency-Key",
                headers={"Retry-After": "2"},
            ) from None
        except ChannelRefused as refused:
            _log.warning("channel refused an order", channel=row.channel, refusal=str(refused)[:200])
            async with pool.acquire() as conn, conn.transaction():
                if replayed:
                    # An earlier ask may have opened this number at the channel: keep the order, closed (the
                    # stale-order job does not see it then, and the channel's own expiry ends its trade).
                    await self._mark_closed(conn, row.id)
                else:
                    # A number nobody has asked for before: the channel holds no trade under it, so nothing is
                    # kept and the key may be used afresh.
                    await self._orders.delete_refused(conn, row.id)
                    await self._keys.forget(conn, scope, key)
            raise DomainError(
                502, "channel-refused", f"the {row.channel} gateway refused this order; it was not created"
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            await self._orders.set_pay_params(conn, row.id, instructions)
            answer = Answer(201, order_view(row, instructions), replayed=replayed)
            await self._keys.store(conn, scope, key, answer.status_code, answer.body)
        return answer

    async def _open(
        self, conn: Connection, scope: str, key: str, digest: bytes, payer_id: uuid.UUID, data: OrderCreate
    ) -> tuple[OrderRow, bool]:
        """(the order, whether the key was used before): a new key stores a new order with its number and an
        answer naming it (202 until the channel has given instructions); a used key finds that order."""
        if not await self._keys.claim(conn, scope, key, digest):
            stored = await self._keys.get(conn, scope, key)
            assert stored is not None  # claimed keys are never deleted
            if stored.request_hash != digest:
                raise DomainError(
                    422,
                    "unprocessable-content",
                    "Idempotency-Key: this key was used with a different request",
                    extra={
                        "errors": [{"field": "Idempotency-Key", "message": "reused with a different body"}]
                    },
                )
            assert stored.response is not None
            found = await self._orders.get(conn, uuid.UUID(str(stored.response["id"])))
            if found is None:  # refused by the channel meanwhile, and forgotten
                raise DomainError(
                    502, "channel-refused", "the gateway refused this order; it was not created"
                )
            return found, True
        row = await self.claim(conn, payer_id, data)
        await self._keys.store(conn, scope, key, 202, order_view(row))
        return row, False

    async def order(self, conn: Connection, order_id: uuid.UUID) -> OrderRow | None:
        """An order as stored: for the domains that open orders with claim (a venue booking), to ask the channel
        again for an order whose first ask went unanswered."""
        return await self._orders.get(conn, order_id)

    async def get_for_payer(self, conn: Connection, order_id: uuid.UUID, payer_id: uuid.UUID) -> OrderView:
        row = await self._orders.get(conn, order_id)
        if row is None or row.payer_id != payer_id:
            raise not_found("order not found")
        return order_view(row)

    async def mark_paid(
        self, conn: Connection, row: OrderRow, channel_trade_no: str | None, paid_at: dt.datetime | None
    ) -> bool:
        """The one place money arrives: a compare-and-set transition and its ledger entry, exactly once."""
        kept = channel_fee(row.amount_fen, self._settings.channel_fee_ppm.get(row.channel))
        paid = await self._orders.mark_paid(conn, row.id, channel_trade_no, paid_at, kept)
        if paid is None:
            return False
        amount, fee = paid.amount_fen, paid.fee_fen
        # The channel holds the amount less its fee; the payee is owed the amount less the platform's fee, out of
        # which the platform pays the channel's (decision 0019). Valued at the channel's payment time: the day
        # the channel's bill lists it.
        shares = await self.shares(conn, paid)
        await self._ledger.post(
            conn,
            f"payment:{paid.id}",
            "payment",
            [
                (f"channel_clearing:{paid.channel}", amount - kept),
                (f"channel_fees:{paid.channel}", kept),
                *((f"payee_payable:{s.payee_id}", -(s.amount_fen - s.fee_fen)) for s in shares),
                ("platform_fees", -fee),
            ],
            memo=paid.out_trade_no,
            value_at=paid.paid_at,
        )
        await self.events.enqueue(
            conn,
            paid.payee_id,
            "order.paid",
            {
                "order_id": str(paid.id),
                "out_trade_no": paid.out_trade_no,
                "amount_fen": amount,
                "fee_fen": fee,
                "subject": paid.subject,
                "channel": paid.channel,
            },
        )
        for listener in self._paid_listeners:
            await listener(conn, paid)
        _log.info("order paid", order=str(paid.id), amount_fen=amount, channel=paid.channel)
        return True

    async def apply_channel_state(
        self,
        conn: Connection,
        row: OrderRow,
        status: TradeStatus,
        channel_trade_no: str | None,
        paid_at: dt.datetime | None,
    ) -> str:
        """Moves the order forward only: a late 'waiting' never undoes 'paid'."""
        if status in (TradeStatus.PAID, TradeStatus.FINISHED):
            moved = await self.mark_paid(conn, row, channel_trade_no, paid_at)
            if status == TradeStatus.FINISHED:
                await self._orders.mark_finished(conn, row.id)
            return "paid" if moved else "already"
        if status == TradeStatus.CLOSED:
            return "closed" if await self._mark_closed(conn, row.id) else "already"
        return "ignored"

    async def _record_if_paid(self, conn: Connection, row: OrderRow, trade: ChannelTrade | None) -> bool:
        """True when the channel's trade is paid: the payment is then recorded through mark_paid (once). A paid
        trade whose amount differs from ours is logged and left for reconciliation (raises ChannelUnavailable,
        as its outcome is not known to us)."""
        if trade is None or trade.status not in (TradeStatus.PAID, TradeStatus.FINISHED):
            return False
        if trade.amount_fen != row.amount_fen:
            _log.error("channel amount differs", order=str(row.id))
            raise ChannelUnavailable("the channel's amount differs from the order's")
        await self.apply_channel_state(conn, row, trade.status, trade.channel_trade_no, trade.paid_at)
        return True

    async def settle_stale(self, pool: Pool, limit: int = 100) -> dict[str, int]:
        """For orders past their expiry whose outcome we never heard: ask the channel about the order's number,
        then record the payment or close the order. The channel is asked outside any transaction, each answer
        recorded in a short one of its own (compare-and-set, so a notification racing this is recorded once)."""
        counts = {"paid": 0, "closed": 0, "unknown": 0}
        async with pool.acquire() as conn:
            stale = await self._orders.stale_waiting(conn, dt.datetime.now(dt.UTC), limit)
        for row in stale:
            channel = self._channels.get(row.channel)
            if channel is None:
                continue
            try:
                trade = await channel.query(row.out_trade_no)
                if trade is not None and trade.status in (TradeStatus.PAID, TradeStatus.FINISHED):
                    async with pool.acquire() as conn, conn.transaction():
                        await self._record_if_paid(conn, row, trade)
                    counts["paid"] += 1
                    continue
                await channel.close(row.out_trade_no)
            except ChannelUnavailable:
                counts["unknown"] += 1
                continue
            except ChannelRefused as refused:
                # Most likely paid between the query and the close (WeChat ORDERPAID): the next run's query says.
                _log.warning("channel refused a stale close", channel=row.channel, refusal=str(refused)[:200])
                counts["unknown"] += 1
                continue
            async with pool.acquire() as conn, conn.transaction():
                if await self._mark_closed(conn, row.id):
                    counts["closed"] += 1
        return counts

    # -- closing on demand and the payee's view ---------------------------------------------------------------

    async def payee_order(self, conn: Connection, order_id: uuid.UUID, payee_id: uuid.UUID) -> PayeeOrderView:
        """Another organisation's order is not found, as one that does not exist: ids are no oracle."""
        row = await self._orders.get(conn, order_id)
        if row is None:
            raise not_found("order not found")
        shares = await self.shares(conn, row)
        if payee_id not in {s.payee_id for s in shares}:  # its payee, or one a split names
            raise not_found("order not found")
        refunds = await self._orders.refunds_of(conn, row.id)
        return PayeeOrderView(
            id=row.id,
            out_trade_no=row.out_trade_no,
            status=row.status,
            purpose=row.purpose,
            subject=row.subject,
            amount_fen=row.amount_fen,
            fee_fen=row.fee_fen,
            refunded_fen=row.refunded_fen,
            channel=row.channel,
            method=row.method,
            channel_trade_no=row.channel_trade_no,
            created_at=row.created_at,
            expires_at=row.expires_at,
            paid_at=row.paid_at,
            refunds=[msgspec.convert(r, OrderRefund, from_attributes=True) for r in refunds],
            shares=[
                ShareView(payee_id=s.payee_id, amount_fen=s.amount_fen, fee_fen=s.fee_fen) for s in shares
            ],
        )

    async def payer_for_payee(
        self, conn: Connection, order_id: uuid.UUID, payee_id: uuid.UUID
    ) -> uuid.UUID | None:
        """The resident paying (or who paid) an order, for its payee or a payee its splits name: how a payee
        refers to a resident it never learns the id of (notifications). None for another organisation's order
        or one no resident pays."""
        row = await self._orders.get(conn, order_id)
        if row is None or row.payer_id is None:
            return None
        if payee_id not in {s.payee_id for s in await self.shares(conn, row)}:
            return None
        return row.payer_id

    async def close_for_payer(self, pool: Pool, order_id: uuid.UUID, payer_id: uuid.UUID) -> OrderView:
        async with pool.acquire() as conn:
            row = await self._orders.get(conn, order_id)
        if row is None or row.payer_id != payer_id:
            raise not_found("order not found")
        return order_view(await self._close(pool, row))

    async def close_for_payee(self, pool: Pool, order_id: uuid.UUID, payee_id: uuid.UUID) -> PayeeOrderView:
        async with pool.acquire() as conn:
            row = await self._orders.get(conn, order_id)
        if row is None or row.payee_id != payee_id:
            raise not_found("order not found")
        await self._close(pool, row)
        async with pool.acquire() as conn:
            return await self.payee_order(conn, order_id, payee_id)

    async def _close(self, pool: Pool, row: OrderRow) -> OrderRow:
        """Closes a waiting order at the channel, then at our side; the ledger is untouched (no money moved).
        The channel is asked outside any transaction so that no connection waits on a slow gateway. A trade the
        channel reports paid (or refuses to close because it is paid) is recorded through mark_paid and answered
        with a 409: the payer's money is never lost to a close racing a payment."""
        if row.status == "closed":
            return row  # closing twice is the same close
        if row.status != "waiting":
            raise conflict(f"this order is {row.status} and cannot be closed", "order-paid")
        channel = self.channel(row.channel)
        try:
            try:
                await channel.close(row.out_trade_no)
            except ChannelRefused as refused:
                # WeChat ORDERPAID / Alipay ACQ.TRADE_STATUS_ERROR: the trade was most likely paid meanwhile.
                trade = await channel.query(row.out_trade_no)
                async with pool.acquire() as conn, conn.transaction():
                    paid = await self._record_if_paid(conn, row, trade)
                if paid:  # raised after the commit, so that the payment stays recorded
                    raise conflict(
                        "this order was paid meanwhile and cannot be closed", "order-paid"
                    ) from None
                _log.warning("channel refused a close", channel=row.channel, refusal=str(refused)[:200])
                raise DomainError(
                    502, "channel-refused", f"the {row.channel} gateway refused to close this order"
                ) from None
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {row.channel} gateway did not answer; retry the close", headers={"Retry-After": "2"}
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            await self._mark_closed(conn, row.id)
            now = await self._orders.get(conn, row.id)
        if now is None:  # refused by the channel when opened, and forgotten
            raise not_found("order not found")
        if now.status != "closed":
            # A payment notification recorded before our compare-and-set: it stands.
            raise conflict(f"this order was {now.status} meanwhile and cannot be closed", "order-paid")
        return now
