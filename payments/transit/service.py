"""Transit, ride first and pay later: withholding agreements, taps into trips, trips into fares, fares deducted in
batches, failed deductions as debts that put the rider on the gates' deny list until repaid.

Eligibility (code_service's TransitEligibility port, `RideEligibility.may_ride`): a rider may ride when they hold an
ACTIVE withholding agreement (else "no-agreement"), are not blocked by operations (else "blocked") and owe nothing
(else "in-debt"). Every change of that answer calls `eligibility_changed` inside the transaction (the code
side drops its cached facts, so online verification sees it at once); the jobs call it again after their commit.

Taps into trips (the trip job, one run at a time). Gates upload taps with their proof (the scanned code or an online
verification's id); code_service verifies each at its own time and refuses forged, back-dated and replayed ones.
Each run takes the new proven ones over (code_service's TransitGates) with the resident the platform derived from
the verified code, never a subject a gate claimed. Per rider and operator, in
time order: an entry followed by an exit within N hours (the fare policy's `open_tap_hours`) is one trip; a
single tap (buses) is a trip of its own. An entry with no exit after N hours is an `open_entry` trip and an exit
with no entry before it, once N hours old, an `open_exit` trip: both cost the line's maximum fare. Taps younger
than N hours wait for their pair (late uploads from offline gates still pair up). An exit that turns up more than
N hours after its entry was charged cannot pair any more and is charged as an open exit too.

Fares (payments.transit_fare_lines, seeded by the migration; '*' for any other line): a flat line costs its flat
fare; on a distance line an entry and exit on the same line cost base_fen up to base_m metres, then step_fen per
started step_m, never above max_fen; a transfer between lines, an unknown station, a single tap on a distance line,
an open entry or exit cost max_fen. The daily cap (transit_fare_policy.daily_cap_fen) bounds what one rider is
charged per Beijing calendar day (the day a trip began), over all operators: trips are charged in time order, the
one that reaches the cap pays the remainder and later ones are `waived` (charged 0).

Deductions (the deduction job): one per rider and operator per run, covering all their unbilled trips, as a
`transit_fare` order (payee: the operator, method `withhold`) deducted under the rider's most recently activated
agreement. The order and the deduction are committed before the channel is asked, so a crash can never leave a
deduction we do not know of, and each send is claimed first (sent_at), so one number is never asked for twice at
once. Accepted (WAITING) is not paid, and no answer is not refused: the check job queries by the deduction's number
until PAID or FAILED, and sends again (same number) only what the channel does not know once its last send is
resend_after old. Money arriving, by notification or query, goes through OrderService.mark_paid like any payment.

Debts: a deduction the channel refuses (FAILED or CLOSED), one still unanswered `deduction_window` after it was
made, or trips of a rider with no agreement left to deduct under, are a debt. The rider goes onto the gates' deny
list as a debtor (the DebtorList port, same transaction), `may_ride` answers "in-debt", and the rider is sent one
`fare_debt` message (the amount, the days and lines, where to repay) through the notification service in that
transaction too, keyed by the debt (`use_messages`, docs/decisions/0024). A repayment is a normal order for the
debts owed to one operator (POST .../debts/repay); once paid, every linked trip is cleared at once and, when nothing
is owed any more, the rider comes off the deny list (gates see it at their next sync).

Accounting (double entry, debits positive; settlement pays each payee what `payment` entries credit it):
  deduction paid     payment:<order>            Dr channel_clearing:<ch>           Cr payee_payable:<operator>
  debt               transit_debt:<deduction>   Dr rider_receivable:<resident>     Cr transit_uncollected:<operator>
  debt collected     payment:<order>            Dr channel_clearing:<ch>           Cr payee_payable:<operator>
  (repayment or      transit_collected:<order>  Dr transit_uncollected:<operator>  Cr rider_receivable:<resident>
   late money)
`transit_uncollected:<operator>` is the operator's share of fares not collected yet: the operator is owed it only
once the rider pays (the operator carries the credit risk, as every other payee does), so nothing reaches the
operator's payable, and settlement, before the money does. After collection both the receivable and the
uncollected balance are back to zero and the operator's payable holds the fare.

One repayment order per debt at a time: repay takes the rider's lock and, while a repayment order covering a debt
still owed can be paid (waiting, not past its expiry), answers that order to any new Idempotency-Key (a key used
before gets its first answer), so concurrent or repeated repays never open a second order for a debt. The lock is
held only while the order and its number are claimed; the channel is asked after that commit, and a retry after
no answer asks again with the same number (docs/decisions/0018).

Money for a debt already repaid (an order paid after its expiry, an order opened before there was one per debt, a
late deduction after a repayment) is a payment like any other (mark_paid credits the operator), and the paid-order
listener records what was paid too much once (payments.transit_overpayments, in the payment's transaction). The
money-back job refunds it through the refund service, as the platform, on the order it came with (so through the
channel it came from), the overpayment's id as the refund's idempotency key; the refund's ledger entry takes it
back out of the operator's payable, so the operator is credited once. The rider sees it under GET .../debts.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass

import msgspec
import structlog

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, not_found
from app_backend.kernel.messages import PlatformMessage, SendMessage
from code_service.codes.service import FactsService
from code_service.gates.service import TransitGates
from payments.channels.base import (
    Agreement,
    AgreementStatus,
    ChannelRefused,
    ChannelTrade,
    ChannelUnavailable,
    Notification,
    PaymentChannel,
    TradeStatus,
)
from payments.ledger.service import Ledger
from payments.notifications.service import NotificationRefused
from payments.orders.repository import IdempotencyRepository, OrderRepository, OrderRow
from payments.orders.schemas import OrderCreate, OrderView
from payments.orders.service import (
    Answer,
    ChannelDown,
    OrderService,
    new_out_trade_no,
    order_view,
    payer_scope,
    request_hash,
)
from payments.refunds.schemas import RefundCreate
from payments.refunds.service import RefundService
from payments.settings import PaymentSettings
from payments.transit.repository import (
    AgreementRow,
    DeductionRow,
    FareLineRow,
    NewTap,
    NewTrip,
    OpenTapRow,
    OverpaymentRow,
    PendingDeductionRow,
    RepaymentRow,
    TransitRepository,
    TripRow,
)
from payments.transit.schemas import (
    AgreementCreate,
    AgreementView,
    DebtSummary,
    DebtView,
    MoneyBack,
    RepayCreate,
    Repayment,
    TripView,
)

_log = structlog.get_logger("payments.transit")
PAID_STATES = (TradeStatus.PAID, TradeStatus.FINISHED)
REFUSED_STATES = (TradeStatus.FAILED, TradeStatus.CLOSED)
# Why a deduction became a debt, as the rider reads it (fare_debt_message).
_FAILURES = {
    "refused": "免密扣款被支付渠道拒绝",
    "unanswered": "免密扣款未获支付渠道确认",
    "no-agreement": "免密支付协议已解除，未能扣款",
}
_LINES_SHOWN = 3


@dataclass(frozen=True)
class TransitPolicy:
    # A deduction neither paid nor refused this long after it was made is a debt ("unanswered").
    deduction_window: dt.timedelta = dt.timedelta(hours=6)
    # A deduction the channel, asked, does not know is sent again (same number) only this long after it was last
    # handed over: a request still in flight (the deduction job's) is never doubled by the check job.
    resend_after: dt.timedelta = dt.timedelta(minutes=2)
    # A withholding order stays open past the window so the stale-order job never closes one we still watch.
    order_grace: dt.timedelta = dt.timedelta(days=1)
    # A pending agreement nobody signed within this is ended ("expired").
    agreement_ttl: dt.timedelta = dt.timedelta(days=2)
    tap_batch: int = 5000
    open_tap_batch: int = 50_000
    deduction_batch: int = 500
    agreement_batch: int = 200
    money_back_batch: int = 100


@dataclass(frozen=True)
class FareTable:
    lines: dict[str, FareLineRow]
    positions: dict[tuple[str, str], int]
    daily_cap_fen: int
    open_tap_hours: int

    def line(self, code: str | None) -> FareLineRow:
        found = self.lines.get(code or "") or self.lines.get("*")
        if found is None:
            raise LookupError(f"no fare for line {code!r} and no default ('*') line in the fare table")
        return found

    def paired(self, line_in: str, station_in: str, line_out: str, station_out: str) -> int:
        line = self.line(line_in)
        if line.kind == "flat":
            return line.flat_fen
        start = self.positions.get((line.line, station_in))
        end = self.positions.get((line.line, station_out))
        if line_out != line_in or start is None or end is None:
            return line.max_fen  # a transfer, or a station the table does not place
        distance = abs(end - start)
        if distance <= line.base_m:
            return min(line.base_fen, line.max_fen)
        steps = math.ceil((distance - line.base_m) / line.step_m)
        return min(line.base_fen + steps * line.step_fen, line.max_fen)

    def single(self, code: str) -> int:
        line = self.line(code)
        return line.flat_fen if line.kind == "flat" else line.max_fen

    def maximum(self, code: str) -> int:
        return self.line(code).max_fen


@dataclass
class _Trip:
    resident_id: uuid.UUID
    operator_id: uuid.UUID
    kind: str
    taps: list[OpenTapRow]
    started_at: dt.datetime
    fare_fen: int
    line_in: str | None = None
    station_in: str | None = None
    line_out: str | None = None
    station_out: str | None = None
    ended_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeductionRequest:
    deduction_id: uuid.UUID
    channel: str
    agreement_no: str
    out_trade_no: str
    amount_fen: int
    subject: str


def beijing_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(BUSINESS_TZ).date()


def new_agreement_no() -> str:
    """32 characters at most (WeChat's contract_code), date first."""
    return "TZTA" + dt.datetime.now(BUSINESS_TZ).strftime("%Y%m%d") + secrets.token_hex(8).upper()


def _pair(
    resident_id: uuid.UUID,
    operator_id: uuid.UUID,
    taps: list[OpenTapRow],
    fares: FareTable,
    open_before: dt.datetime,
    window: dt.timedelta,
) -> list[_Trip]:
    """One rider's open taps at one operator, in time order, into trips (the rules in the module docstring).
    Taps that may still find their pair are left open."""
    trips: list[_Trip] = []
    i = 0
    while i < len(taps):
        tap = taps[i]
        line, station, at = tap.line, tap.station, tap.tapped_at
        if tap.direction == "single":
            trips.append(
                _Trip(resident_id, operator_id, "single", [tap], at, fares.single(line), line, station)
            )
            i += 1
            continue
        if tap.direction == "in":
            following = taps[i + 1] if i + 1 < len(taps) else None
            if following is not None and following.direction == "out" and following.tapped_at - at <= window:
                fare = fares.paired(line, station, following.line, following.station)
                trips.append(
                    _Trip(
                        resident_id,
                        operator_id,
                        "paired",
                        [tap, following],
                        at,
                        fare,
                        line,
                        station,
                        following.line,
                        following.station,
                        following.tapped_at,
                    )
                )
                i += 2
                continue
            if at < open_before:  # no exit came in time
                trips.append(
                    _Trip(
                        resident_id, operator_id, "open_entry", [tap], at, fares.maximum(line), line, station
                    )
                )
            i += 1
            continue
        if at < open_before:  # an exit no entry came before
            trips.append(
                _Trip(
                    resident_id,
                    operator_id,
                    "open_exit",
                    [tap],
                    at,
                    fares.maximum(line),
                    line_out=line,
                    station_out=station,
                    ended_at=at,
                )
            )
        i += 1
    return trips


def _agreement_view(row: AgreementRow) -> AgreementView:
    return AgreementView(
        id=row.id,
        channel=row.channel,
        status=row.status,
        external_agreement_no=row.external_agreement_no,
        created_at=row.created_at,
        activated_at=row.activated_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        sign_params=dict(row.sign_params) if row.status == "pending" and row.sign_params else None,
    )


def _trip_view(row: TripRow) -> TripView:
    return TripView(
        id=row.id,
        operator_id=row.operator_id,
        kind=row.kind,
        started_at=row.started_at,
        ended_at=row.ended_at,
        line_in=row.line_in,
        station_in=row.station_in,
        line_out=row.line_out,
        station_out=row.station_out,
        day=row.day,
        fare_fen=row.fare_fen,
        charged_fen=row.charged_fen,
        status=row.status,
    )


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _date(day: dt.date) -> str:
    """A WeChat `date` keyword's form (年月日), which reads as it is in Chinese."""
    return f"{day.year}年{day.month}月{day.day}日"


def fare_debt_message(debt: DeductionRow, trips: list[TripRow]) -> PlatformMessage:
    """What a rider is told when a deduction becomes a debt: the amount in yuan, the days and lines of the trips
    (never the stations: whereabouts are sensitive and the message may leave for WeChat or Alipay), why, and where
    to repay. The debt's id is the message's key: one message per debt however often the debt is recorded."""
    days = sorted({t.day for t in trips})
    when = _date(days[0]) + (f"~{_date(days[-1])}" if len(days) > 1 else "") if days else ""
    lines = list(dict.fromkeys(line for t in trips for line in (t.line_in, t.line_out) if line))
    shown = "、".join(lines[:_LINES_SHOWN]) + ("等" if len(lines) > _LINES_SHOWN else "")
    trips_text = f"{when}乘坐线路{shown}的{len(trips)}次行程" if trips else "乘车行程"
    amount = _yuan(debt.amount_fen)
    why = _FAILURES.get(debt.failure, "未能扣款")
    return PlatformMessage(
        kind="fare_debt",
        title="乘车欠款待补缴",
        body=(
            f"您{trips_text}车费共{amount}元，{why}，已记为欠款。补缴前乘车码暂不能乘车，"
            "请打开泰州通，在乘车欠款中补缴。"
        ),
        sender="payments",
        sender_name="泰州通",
        key=f"transit-debt:{debt.id}",
        params={
            "amount": f"{amount}元",
            "amount_fen": str(debt.amount_fen),
            "date": when,
            "lines": shown,
            "trips": str(len(trips)),
            "failure": debt.failure,
            "debt_id": str(debt.id),
        },
    )


class RideEligibility:
    """code_service's TransitEligibility port: one query, on the cold path of the code side's facts cache."""

    def __init__(self) -> None:
        self._repo = TransitRepository()

    async def may_ride(self, conn: Connection, resident_id: uuid.UUID) -> tuple[bool, str]:
        row = await self._repo.eligibility(conn, resident_id)
        if not row.agreement:
            return False, "no-agreement"
        if row.blocked:
            return False, "blocked"
        if row.in_debt:
            return False, "in-debt"
        return True, ""


class TransitService:
    def __init__(
        self,
        channels: dict[str, PaymentChannel],
        orders: OrderService,
        refunds: RefundService,
        ledger: Ledger,
        settings: PaymentSettings,
        gates: TransitGates,
        facts: FactsService,
        policy: TransitPolicy | None = None,
    ) -> None:
        self._channels = channels
        self._orders = orders
        self._refunds = refunds
        self._ledger = ledger
        self._settings = settings
        self._gates = gates
        self._facts = facts
        self.policy = policy or TransitPolicy()
        self.eligibility = RideEligibility()
        self._repo = TransitRepository()
        self._order_rows = OrderRepository()
        self._keys = IdempotencyRepository()
        self._messages: SendMessage | None = None
        orders.on_paid(self.on_order_paid)

    def use_messages(self, send: SendMessage) -> None:
        """How a rider is told of a debt (notifications' send_platform, handed over when it starts); without it
        debts are recorded all the same and nobody is told."""
        self._messages = send

    def _notify_url(self, channel: str) -> str:
        return f"{self._settings.notify_base_url}/api/v1/payments/notify/{channel}"

    async def eligibility_changed(self, conn: Connection, resident_id: uuid.UUID) -> None:
        """The code side's cached facts of a rider whose eligibility changed are dropped (in the transaction)."""
        await self._facts.invalidate_resident(conn, resident_id)

    async def _changed(
        self, conn: Connection, resident_id: uuid.UUID, changed: set[uuid.UUID] | None
    ) -> None:
        await self.eligibility_changed(conn, resident_id)
        if changed is not None:
            changed.add(resident_id)

    async def may_ride(self, conn: Connection, resident_id: uuid.UUID) -> tuple[bool, str]:
        return await self.eligibility.may_ride(conn, resident_id)

    # -- agreements ------------------------------------------------------------------------------------------

    async def sign(self, pool: Pool, resident_id: uuid.UUID, data: AgreementCreate) -> AgreementView:
        """A pending agreement under a new number of ours, committed before the channel is asked for what the
        rider opens to sign (some channels register the number when asked): a contract the channel holds is
        always one we know, and no connection waits on a slow gateway. When the channel does not answer, the
        pending agreement stays without sign parameters (the poll job asks the channel about it and ends it
        unsigned after agreement_ttl); the rider asks again and gets a new one."""
        channel = self._orders.channel(data.channel)
        async with pool.acquire() as conn, conn.transaction():
            if await self._repo.has_active_on(conn, resident_id, data.channel):
                raise DomainError(
                    409,
                    "conflict",
                    f"channel: an active {data.channel} agreement exists; end it before signing another",
                    extra={"errors": [{"field": "channel", "message": "an active agreement exists"}]},
                )
            row = await self._repo.insert_agreement(
                conn, resident_id, data.channel, data.payer_channel_id, new_agreement_no(), {}
            )
        try:
            signed = await channel.agreement_sign(
                row.external_agreement_no, data.payer_channel_id, self._notify_url(data.channel)
            )
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {data.channel} gateway did not answer; try again", headers={"Retry-After": "2"}
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            stored = await self._repo.set_sign_params(conn, row.id, dict(signed.sign_params))
        assert stored is not None  # agreements are never deleted
        return _agreement_view(stored)

    async def agreements(self, conn: Connection, resident_id: uuid.UUID) -> list[AgreementView]:
        return [_agreement_view(r) for r in await self._repo.agreements_of(conn, resident_id)]

    async def end(self, conn: Connection, resident_id: uuid.UUID, agreement_id: uuid.UUID) -> None:
        """Ends one of the rider's agreements here (no deduction goes under it any more). The last active one
        cannot end while fares are still being settled. The channel's contract is left for the rider to end in
        Alipay / WeChat: the channel interface has no unsign call."""
        row = await self._repo.agreement(conn, agreement_id)
        if row is None or row.resident_id != resident_id:
            raise not_found("agreement not found")
        if row.status == "ended":
            return
        if (
            row.status == "active"
            and await self._repo.active_agreements(conn, resident_id) == 1
            and await self._repo.outstanding_trips(conn, resident_id) > 0
        ):
            raise DomainError(
                409,
                "conflict",
                "fares for recent trips are still being deducted under this agreement; try again later",
            )
        if await self._repo.end_agreement(conn, agreement_id, "ended by the rider") is not None:
            await self._changed(conn, resident_id, None)

    async def grant_agreement(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        channel: str = "wechat",
        agreement_no: str | None = None,
        external_agreement_no: str | None = None,
    ) -> AgreementView:
        """An agreement recorded as already active (demo seed, tests of the code side, migrations from another
        system): no channel is asked."""
        row = await self._repo.insert_active_agreement(
            conn,
            resident_id,
            channel,
            external_agreement_no or new_agreement_no(),
            agreement_no or "DEV" + secrets.token_hex(12),
        )
        await self._changed(conn, resident_id, None)
        return _agreement_view(row)

    async def apply_agreement_state(
        self, conn: Connection, row: AgreementRow, found: Agreement, changed: set[uuid.UUID] | None = None
    ) -> str:
        """Moves an agreement to what the channel says (notification or query); forward only."""
        if found.status == AgreementStatus.ACTIVE:
            if not found.agreement_no:
                _log.error("an active agreement without the channel's number", agreement=str(row.id))
                return "incomplete"
            if await self._repo.activate_agreement(conn, row.id, found.agreement_no) is None:
                return "already"
            _log.info("transit agreement active", agreement=str(row.id), channel=row.channel)
        elif found.status == AgreementStatus.ENDED:
            if await self._repo.end_agreement(conn, row.id, "ended at the channel") is None:
                return "already"
        else:
            return "ignored"
        await self._changed(conn, row.resident_id, changed)
        return found.status.value

    async def pending_agreements(self, conn: Connection, now: dt.datetime) -> list[AgreementRow]:
        return await self._repo.pending_agreements(
            conn, now - self.policy.agreement_ttl, self.policy.agreement_batch
        )

    async def expire_agreements(self, conn: Connection, now: dt.datetime) -> int:
        expired = 0
        for row in await self._repo.stale_pending_agreements(
            conn, now - self.policy.agreement_ttl, self.policy.agreement_batch
        ):
            if await self._repo.end_agreement(conn, row.id, "never signed") is not None:
                expired += 1
        return expired

    async def query_agreement(self, row: AgreementRow) -> Agreement | None:
        """The channel's view of a pending agreement (outside any transaction); None when it did not answer."""
        channel = self._channels.get(row.channel)
        if channel is None:
            return None
        try:
            return await channel.agreement_query(row.external_agreement_no)
        except ChannelUnavailable:
            return None
        except Exception:
            _log.exception("agreement query failed", agreement=str(row.id))
            return None

    # -- blocks ----------------------------------------------------------------------------------------------

    async def block(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> None:
        if await self._repo.block(conn, resident_id, reason):
            await self._changed(conn, resident_id, None)

    async def unblock(self, conn: Connection, resident_id: uuid.UUID) -> None:
        if await self._repo.unblock(conn, resident_id):
            await self._changed(conn, resident_id, None)

    # -- taps into trips -------------------------------------------------------------------------------------

    async def take_taps(self, conn: Connection) -> dict[str, int]:
        """Takes newly proven taps over, with the rider the platform derived from each verified code. Refused taps
        (forged, back-dated, replayed) never come here, so they are never billed."""
        taps = await self._gates.untaken(conn, self.policy.tap_batch)
        rows = [
            NewTap(
                organisation_id=tap.organisation_id,
                tap_id=tap.tap_id,
                resident_id=tap.resident_id,
                gate_id=tap.gate_id,
                line=tap.line,
                station=tap.station,
                direction=tap.direction,
                tapped_at=tap.tapped_at,
                state="open" if tap.resident_id is not None else "unknown_rider",
            )
            for tap in taps
        ]
        taken = await self._repo.insert_taps(conn, rows)
        await self._gates.mark_taken(conn, [(t.organisation_id, t.tap_id) for t in taps])
        unknown = sum(1 for r in rows if r.resident_id is None)
        if unknown:
            _log.warning("taps of no known rider", count=unknown)
        return {"taken": taken, "unknown_rider": unknown}

    async def fare_table(self, conn: Connection) -> FareTable:
        policy = await self._repo.fare_policy(conn)
        lines = {r.line: r for r in await self._repo.fare_lines(conn)}
        positions = {(r.line, r.station): r.position_m for r in await self._repo.fare_stations(conn)}
        return FareTable(lines, positions, policy.daily_cap_fen, policy.open_tap_hours)

    async def build_trips(self, conn: Connection, now: dt.datetime) -> dict[str, int]:
        """Pairs open taps into trips and prices them (one run at a time; a concurrent run skips)."""
        if not await self._repo.try_job_lock(conn, "build"):
            return {"skipped": 1}
        fares = await self.fare_table(conn)
        window = dt.timedelta(hours=fares.open_tap_hours)
        groups: dict[uuid.UUID, dict[uuid.UUID, list[OpenTapRow]]] = defaultdict(lambda: defaultdict(list))
        for tap in await self._repo.open_taps(conn, self.policy.open_tap_batch):
            groups[tap.resident_id][tap.organisation_id].append(tap)
        counts = {"trips": 0, "charged_fen": 0, "waived": 0}
        for resident_id, by_operator in groups.items():
            trips: list[_Trip] = []
            for operator_id, taps in by_operator.items():
                trips += _pair(resident_id, operator_id, taps, fares, now - window, window)
            if not trips:
                continue
            trips.sort(key=lambda t: t.started_at)
            spent: dict[dt.date, int] = {}
            rows: list[NewTrip] = []
            uses: list[tuple[uuid.UUID, str, uuid.UUID]] = []
            for trip in trips:
                day = beijing_day(trip.started_at)
                if day not in spent:
                    spent[day] = await self._repo.charged_on(conn, resident_id, day)
                charged = max(0, min(trip.fare_fen, fares.daily_cap_fen - spent[day]))
                spent[day] += charged
                trip_id = uuid.uuid4()
                rows.append(
                    NewTrip(
                        id=trip_id,
                        resident_id=resident_id,
                        operator_id=trip.operator_id,
                        kind=trip.kind,
                        line_in=trip.line_in,
                        station_in=trip.station_in,
                        started_at=trip.started_at,
                        line_out=trip.line_out,
                        station_out=trip.station_out,
                        ended_at=trip.ended_at,
                        day=day,
                        fare_fen=trip.fare_fen,
                        charged_fen=charged,
                        status="unbilled" if charged else "waived",
                    )
                )
                uses += [(t.organisation_id, t.tap_id, trip_id) for t in trip.taps]
                counts["trips"] += 1
                counts["charged_fen"] += charged
                counts["waived"] += 0 if charged else 1
            await self._repo.insert_trips(conn, rows)
            await self._repo.use_taps(conn, uses)
        return counts

    async def trips(self, conn: Connection, resident_id: uuid.UUID, limit: int = 100) -> list[TripView]:
        return [_trip_view(r) for r in await self._repo.trips_of(conn, resident_id, limit)]

    # -- deductions ------------------------------------------------------------------------------------------

    async def plan_deductions(
        self, conn: Connection, now: dt.datetime, changed: set[uuid.UUID] | None = None
    ) -> list[DeductionRequest]:
        """Opens one withholding order and deduction per rider and operator with unbilled trips; the caller
        commits, then for each request claims the send (claim_send), asks the channel (send_deduction) and records
        the answer (resolve)."""
        if not await self._repo.try_job_lock(conn, "deduct"):
            return []
        requests = []
        for group in await self._repo.unbilled_groups(conn, self.policy.deduction_batch):
            resident_id, operator_id = group.resident_id, group.operator_id
            amount = group.amount_fen
            agreement = await self._repo.active_agreement(conn, resident_id)
            if agreement is not None and agreement.channel not in self._channels:
                _log.error("transit agreement on an unconfigured channel", channel=agreement.channel)
                continue
            first, last = group.first_day, group.last_day
            days = f"{first:%Y-%m-%d}" + (f"~{last:%m-%d}" if last != first else "")
            subject = f"泰州通乘车 {days} {len(group.trip_ids)}次"
            order = None
            if agreement is not None:
                order = await self._order_rows.insert(
                    conn,
                    out_trade_no=new_out_trade_no(),
                    payer_id=resident_id,
                    payee_id=operator_id,
                    purpose="transit_fare",
                    subject=subject,
                    amount_fen=amount,
                    fee_fen=amount * self._settings.fee_bp.get("transit_fare", 0) // 10_000,
                    channel=agreement.channel,
                    method="withhold",
                    expires_at=now + self.policy.deduction_window + self.policy.order_grace,
                )
            deduction = await self._repo.insert_deduction(
                conn,
                resident_id=resident_id,
                payee_id=operator_id,
                agreement_id=agreement.id if agreement is not None else None,
                order_id=order.id if order is not None else None,
                out_trade_no=order.out_trade_no if order is not None else None,
                channel=agreement.channel if agreement is not None else "",
                amount_fen=amount,
            )
            await self._repo.bill_trips(conn, list(group.trip_ids), deduction.id)
            if agreement is None or order is None:
                await self._fail(conn, deduction, "no-agreement", changed)
                continue
            assert agreement.agreement_no is not None  # the table's CHECK: an active agreement has it
            requests.append(
                DeductionRequest(
                    deduction.id,
                    agreement.channel,
                    agreement.agreement_no,
                    order.out_trade_no,
                    amount,
                    subject,
                )
            )
        return requests

    async def claim_send(
        self, conn: Connection, deduction_id: uuid.UUID, now: dt.datetime, *, again: bool = False
    ) -> bool:
        """Whether the caller is the one to hand the deduction to the channel now (committed before it asks):
        the first send, or with `again` a send after the channel said it has no such trade, once the last send
        is `resend_after` old. At most one request per number is in flight, always with the same number."""
        before = now - self.policy.resend_after if again else None
        return await self._repo.claim_send(conn, deduction_id, before)

    async def send_deduction(self, request: DeductionRequest) -> ChannelTrade | None:
        """Asks the channel (outside any transaction; claim_send first). None: no answer, or an error on our
        side; the check job settles it by query."""
        channel = self._channels.get(request.channel)
        if channel is None:
            return None
        try:
            return await channel.deduct(
                request.agreement_no,
                request.out_trade_no,
                request.amount_fen,
                request.subject,
                self._notify_url(request.channel),
            )
        except ChannelUnavailable:
            return None
        except Exception:
            _log.exception("deduction request failed", out_trade_no=request.out_trade_no)
            return None

    async def pending_deductions(self, conn: Connection) -> list[PendingDeductionRow]:
        return await self._repo.pending_deductions(conn, self.policy.deduction_batch)

    async def query_deduction(self, row: PendingDeductionRow) -> tuple[bool, ChannelTrade | None]:
        """(answered, the channel's trade or None when it has no such trade), outside any transaction."""
        channel = self._channels.get(row.channel)
        if channel is None:
            return False, None
        try:
            return True, await channel.query(row.out_trade_no)
        except ChannelUnavailable:
            return False, None
        except Exception:
            _log.exception("deduction query failed", out_trade_no=row.out_trade_no)
            return False, None

    def request_of(self, row: PendingDeductionRow) -> DeductionRequest:
        return DeductionRequest(
            row.id,
            row.channel,
            row.agreement_no or "",
            row.out_trade_no,
            row.amount_fen,
            "泰州通乘车",
        )

    def past_window(self, row: PendingDeductionRow, now: dt.datetime) -> bool:
        return bool(now - row.created_at >= self.policy.deduction_window)

    async def resolve(
        self,
        conn: Connection,
        deduction_id: uuid.UUID,
        trade: ChannelTrade | None,
        now: dt.datetime,
        changed: set[uuid.UUID] | None = None,
    ) -> str:
        """What the channel said (None: nothing useful) decides a pending deduction: paid, a debt (refused, or
        unanswered past the window), or still pending. WAITING is not paid."""
        deduction = await self._repo.deduction(conn, deduction_id)
        if deduction is None or deduction.status != "pending":
            return "already"
        if trade is not None and trade.status in PAID_STATES:
            if trade.amount_fen != deduction.amount_fen:
                _log.error(
                    "deduction amount differs",
                    out_trade_no=deduction.out_trade_no,
                    channel_fen=trade.amount_fen,
                    ours=deduction.amount_fen,
                )
                return "mismatch"
            order = await self._order_of(conn, deduction)
            await self._orders.apply_channel_state(
                conn, order, trade.status, trade.channel_trade_no, trade.paid_at
            )
            return "paid"
        if trade is not None and trade.status in REFUSED_STATES:
            await self._fail(conn, deduction, "refused", changed)
            return "failed"
        if now - deduction.created_at >= self.policy.deduction_window:
            await self._fail(conn, deduction, "unanswered", changed)
            return "failed"
        return "pending"

    async def _fail(
        self, conn: Connection, deduction: DeductionRow, failure: str, changed: set[uuid.UUID] | None
    ) -> None:
        """A debt: the trips stay owed, the rider goes onto the deny list (once) and may not ride.

        Locks in the order money arriving takes them (the order row, then the rider), so a payment racing this
        never deadlocks with it: if the order turns out paid, there is no debt; if the money comes just after,
        mark_paid takes the closed order and clears the debt again."""
        resident_id = deduction.resident_id
        if deduction.order_id is not None:
            order = await self._order_of(conn, deduction)
            if (
                await self._orders.apply_channel_state(conn, order, TradeStatus.CLOSED, None, None)
                != "closed"
            ):
                current = await self._order_of(conn, deduction)
                if current.status in ("paid", "finished"):
                    return
        await self._repo.lock_rider(conn, resident_id)
        was_in_debt = await self._repo.in_debt(conn, resident_id)
        failed = await self._repo.deduction_failed(conn, deduction.id, failure)
        if failed is None:
            return
        await self._repo.move_trips(conn, failed.id, "billing", "debt")
        amount = failed.amount_fen
        await self._ledger.post(
            conn,
            f"transit_debt:{failed.id}",
            "transit_debt",
            [
                (f"rider_receivable:{resident_id}", amount),
                (f"transit_uncollected:{failed.payee_id}", -amount),
            ],
            memo=failed.out_trade_no or failure,
        )
        _log.info("transit debt", deduction=str(failed.id), amount_fen=amount, failure=failure)
        if self._messages is not None:
            # In the debt's transaction: a debt rolled back tells nobody; only the caller that moved the deduction
            # to failed gets here, and the debt's id keys the message besides.
            trips = await self._repo.trips_of_deductions(conn, [failed.id])
            await self._messages(conn, resident_id, fare_debt_message(failed, trips))
        if not was_in_debt:
            await self._gates.deny_debtor(conn, resident_id, f"transit fare deduction {failure}")
            await self._changed(conn, resident_id, changed)

    async def _order_of(self, conn: Connection, deduction: DeductionRow) -> OrderRow:
        """The withholding order of a deduction that has one (every deduction sent to a channel does)."""
        order = await self._order_rows.get(conn, deduction.order_id) if deduction.order_id else None
        assert order is not None, f"deduction {deduction.id} has no order"
        return order

    # -- money arriving --------------------------------------------------------------------------------------

    async def on_order_paid(self, conn: Connection, paid: OrderRow) -> None:
        """OrderService.mark_paid's listener: a deduction or a repayment has been paid."""
        if paid.purpose != "transit_fare":
            return
        deduction = await self._repo.deduction_by_order(conn, paid.id)
        if deduction is not None:
            await self._deduction_paid(conn, deduction, paid)
            return
        repayment = await self._repo.repayment_by_order(conn, paid.id)
        if repayment is not None:
            await self._repayment_paid(conn, repayment, paid)

    async def _deduction_paid(self, conn: Connection, deduction: DeductionRow, paid: OrderRow) -> None:
        resident_id = deduction.resident_id
        await self._repo.lock_rider(conn, resident_id)
        if await self._repo.deduction_paid(conn, deduction.id):
            await self._repo.move_trips(conn, deduction.id, "billing", "paid")
            return
        # Already a debt: the money came after all.
        cleared = await self._repo.clear_debts(conn, [deduction.id], f"late payment {paid.out_trade_no}")
        if not cleared:
            await self._repo.mark_overpaid(conn, deduction.id)
            await self._owe_back(conn, paid, resident_id, paid.amount_fen)
            return
        await self._repo.move_trips(conn, deduction.id, "debt", "paid")
        await self._collected(conn, paid, resident_id, cleared)

    async def _repayment_paid(self, conn: Connection, repayment: RepaymentRow, paid: OrderRow) -> None:
        resident_id = repayment.resident_id
        await self._repo.lock_rider(conn, resident_id)
        if not await self._repo.apply_repayment(conn, paid.id):
            return
        cleared = await self._repo.clear_debts(
            conn, list(repayment.deduction_ids), f"repayment {paid.out_trade_no}"
        )
        for debt in cleared:
            await self._repo.move_trips(conn, debt.id, "debt", "repaid")
        over = paid.amount_fen - sum(d.amount_fen for d in cleared)
        if over:
            await self._repo.repayment_overpaid(conn, paid.id, over)
            await self._owe_back(conn, paid, resident_id, over)
        await self._collected(conn, paid, resident_id, cleared)

    async def _owe_back(self, conn: Connection, paid: OrderRow, resident_id: uuid.UUID, amount: int) -> None:
        """Money for debts already cleared: recorded once, in the payment's transaction, for the money-back job
        (return_overpayments) to refund through the channel it came from. Until then it sits in the operator's
        payable, where the payment put it, and the refund's ledger entry takes it out again."""
        if await self._repo.insert_overpayment(conn, paid.id, resident_id, paid.payee_id, amount):
            _log.warning("paid for a debt already repaid: money back", order=str(paid.id), fen=amount)

    async def _collected(
        self, conn: Connection, paid: OrderRow, resident_id: uuid.UUID, cleared: list[DeductionRow]
    ) -> None:
        """Debts cleared by `paid`: receivable and uncollected back down; off the deny list when nothing is owed."""
        if cleared:
            postings: list[tuple[str, int]] = []
            for debt in cleared:
                amount = debt.amount_fen
                postings += [
                    (f"transit_uncollected:{debt.payee_id}", amount),
                    (f"rider_receivable:{resident_id}", -amount),
                ]
            await self._ledger.post(
                conn,
                f"transit_collected:{paid.id}",
                "transit_collected",
                postings,
                memo=paid.out_trade_no,
            )
        if cleared and not await self._repo.in_debt(conn, resident_id):
            await self._gates.allow_debtor(conn, resident_id, "transit debt repaid")
            await self._changed(conn, resident_id, None)

    # -- notifications ---------------------------------------------------------------------------------------

    async def apply_notification(self, conn: Connection, channel_name: str, note: Notification) -> str:
        """Agreement and deduction notifications (NotificationService dispatches them here)."""
        if note.kind == "agreement":
            row = await self._repo.agreement_by_external(conn, note.out_trade_no)
            if row is None or row.channel != channel_name:
                raise NotificationRefused(f"no {channel_name} agreement {note.out_trade_no}")
            if not isinstance(note.status, AgreementStatus):
                raise NotificationRefused("not an agreement status")
            if note.status == AgreementStatus.ACTIVE and not note.agreement_no:
                raise NotificationRefused("an active agreement without the channel's agreement number")
            return await self.apply_agreement_state(
                conn, row, Agreement(note.out_trade_no, note.status, note.agreement_no)
            )
        if note.kind == "deduction":
            deduction = await self._repo.deduction_by_out_trade_no(conn, note.out_trade_no)
            if deduction is None or deduction.channel != channel_name:
                raise NotificationRefused(f"no {channel_name} deduction {note.out_trade_no}")
            if not isinstance(note.status, TradeStatus):
                raise NotificationRefused("not a trade status")
            if note.status in PAID_STATES and note.amount_fen != deduction.amount_fen:
                _log.error("deduction notification amount differs", out_trade_no=note.out_trade_no)
                raise NotificationRefused("amount differs from the deduction")
            if note.status in PAID_STATES:
                # Paid also after it became a debt: the money is there, mark_paid takes a closed order too.
                order = await self._order_of(conn, deduction)
                return await self._orders.apply_channel_state(
                    conn, order, note.status, note.channel_trade_no, note.paid_at
                )
            if note.status in REFUSED_STATES and deduction.status == "pending":
                await self._fail(conn, deduction, "refused", None)
                return "failed"
            return "ignored"
        return "ignored"

    # -- debts and repayment ---------------------------------------------------------------------------------

    async def debts(self, conn: Connection, resident_id: uuid.UUID) -> DebtSummary:
        rows = await self._repo.debts_of(conn, resident_id)
        trips: dict[uuid.UUID | None, list[TripView]] = defaultdict(list)
        for trip in await self._repo.trips_of_deductions(conn, [r.id for r in rows]):
            trips[trip.deduction_id].append(_trip_view(trip))
        return DebtSummary(
            total_fen=sum(r.amount_fen for r in rows),
            debts=[
                DebtView(
                    id=r.id,
                    operator_id=r.payee_id,
                    amount_fen=r.amount_fen,
                    failure=r.failure,
                    created_at=r.created_at,
                    trips=trips[r.id],
                )
                for r in rows
            ],
            money_back=[
                MoneyBack(
                    order_id=r.order_id,
                    out_trade_no=r.out_trade_no,
                    amount_fen=r.amount_fen,
                    status=_money_back_status(r.status, r.refund_status),
                    created_at=r.created_at,
                )
                for r in await self._repo.overpayments_of(conn, resident_id)
            ],
        )

    async def repay(
        self,
        pool: Pool,
        resident_id: uuid.UUID,
        key: str,
        data: RepayCreate,
        client_ip: str,
        now: dt.datetime | None = None,
    ) -> Answer[Repayment]:
        """A normal order (purpose transit_fare) for everything owed to one operator (the one owed longest);
        debts to other operators are repaid with further orders. One order per debt at a time: while a repayment
        order covering a debt owed can still be paid, every repay with a new key answers it (200), so a debt is
        never collected twice.

        One out_trade_no for life (docs/decisions/0018): the order, its repayment and the key's answer (202,
        naming the order) are committed under the rider's lock first; the channel is asked afterwards, outside
        any transaction, and its instructions stored in a second short one (201). No answer from the channel is
        a 503: the retry with the same key (or any repay while the order is open) asks again with the same
        number, and the channel gives back the trade it holds for it."""
        scope = payer_scope(resident_id)
        digest = request_hash("transit.repay", msgspec.to_builtins(data))
        async with pool.acquire() as conn, conn.transaction():
            claim = await self._claim_repayment(conn, resident_id, scope, key, digest, data, now)
            payer = None
            if claim.order.pay_params is None:
                # A mini-program repayment is paid by the identity the rider linked, never one a client names.
                payer = await self._orders.payer_channel_id(
                    conn, resident_id, claim.order.channel, claim.order.method, data.payer_channel_id
                )
        row = claim.order
        if row.pay_params is not None:
            if claim.status_code != 202:
                return Answer(claim.status_code, claim.body, replayed=claim.keyed and not claim.fresh)
            # Instructed meanwhile (a repay with another key asked the channel): this key's answer catches up.
            answer = Answer(201, _with_order(claim.body, order_view(row)), replayed=True)
            async with pool.acquire() as conn, conn.transaction():
                await self._keys.store(conn, scope, key, answer.status_code, answer.body)
            return answer
        if row.status != "waiting":
            raise DomainError(
                409, "conflict", f"this repayment order is {row.status}; repay with a new Idempotency-Key"
            )
        try:
            pay = await self._orders.ask_channel(row, client_ip, payer)
        except ChannelUnavailable:
            raise ChannelDown(
                f"the {row.channel} gateway did not answer; retry with the same Idempotency-Key",
                headers={"Retry-After": "2"},
            ) from None
        except ChannelRefused as refused:
            _log.warning("channel refused a repayment order", channel=row.channel, refusal=str(refused)[:200])
            async with pool.acquire() as conn, conn.transaction():
                # Closed, never deleted: an earlier ask (another request's) may hold this number at the channel,
                # and money that still comes for it clears the debt through mark_paid like any payment. The
                # next repay opens a new order; a key that had only this refused order may be used afresh.
                await self._order_rows.mark_closed(conn, row.id)
                if claim.fresh:
                    await self._keys.forget(conn, scope, key)
            raise DomainError(
                502, "channel-refused", f"the {row.channel} gateway refused this order; it was not created"
            ) from None
        body = _with_order(claim.body, order_view(row, pay))
        status = 201 if claim.keyed else claim.status_code
        async with pool.acquire() as conn, conn.transaction():
            await self._order_rows.set_pay_params(conn, row.id, pay)
            if claim.keyed:
                await self._keys.store(conn, scope, key, status, body)
        return Answer(status, body, replayed=claim.keyed and not claim.fresh)

    async def _claim_repayment(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        scope: str,
        key: str,
        digest: bytes,
        data: RepayCreate,
        now: dt.datetime | None,
    ) -> _RepayClaim:
        """The repayment order a repay answers, in one short transaction under the rider's lock (every change
        of the rider's debts takes it): the key's order for a key used before, else the open one, else a new
        one claimed with its number under the key."""
        # Held until this commits: a concurrent repay waits here, then finds this one's order.
        await self._repo.lock_rider(conn, resident_id)
        stored = await self._keys.get(conn, scope, key)
        if stored is not None:
            if stored.request_hash != digest:
                raise DomainError(
                    422,
                    "unprocessable-content",
                    "Idempotency-Key: this key was used with a different request",
                    extra={
                        "errors": [{"field": "Idempotency-Key", "message": "reused with a different body"}]
                    },
                )
            assert stored.status_code is not None and stored.response is not None  # stored with the claim
            first = msgspec.convert(stored.response, Repayment)
            known = await self._order_rows.get(conn, first.order.id)
            assert known is not None  # orders are never deleted once a key names them
            return _RepayClaim(known, stored.status_code, first, keyed=True, fresh=False)
        debts = await self._repo.debts_of(conn, resident_id)
        if not debts:
            raise DomainError(409, "conflict", "there is no transit debt to repay")
        owed = sum(d.amount_fen for d in debts)
        moment = now or dt.datetime.now(dt.UTC)
        pending = await self._repo.open_repayment(conn, resident_id, [d.id for d in debts], moment)
        if pending is not None:
            row = await self._order_rows.get(conn, pending.order_id)
            assert row is not None  # transit_repayments.order_id references payments.orders
            covered_ids = set(pending.deduction_ids)
            still_covered = sum(d.amount_fen for d in debts if d.id in covered_ids)
            body = Repayment(
                order=order_view(row), debt_fen=pending.amount_fen, remaining_fen=owed - still_covered
            )
            return _RepayClaim(row, 200, body, keyed=False, fresh=False)
        payee_id = debts[0].payee_id
        covered = [d for d in debts if d.payee_id == payee_id]
        amount = sum(d.amount_fen for d in covered)
        await self._keys.claim(conn, scope, key, digest)  # free: looked up under the lock just now
        row = await self._orders.claim(
            conn,
            resident_id,
            OrderCreate(
                purpose="other",  # replaced: transit_fare is not a purpose clients may choose
                amount_fen=amount,
                subject="泰州通乘车欠款补缴",
                payee_id=payee_id,
                channel=data.channel,
                method=data.method,
                payer_channel_id=data.payer_channel_id,
            ),
            purpose="transit_fare",
        )
        await self._repo.insert_repayment(
            conn, row.id, resident_id, payee_id, amount, [d.id for d in covered]
        )
        body = Repayment(order=order_view(row), debt_fen=amount, remaining_fen=owed - amount)
        await self._keys.store(conn, scope, key, 202, body)
        return _RepayClaim(row, 202, body, keyed=True, fresh=True)

    # -- money for a debt already repaid ---------------------------------------------------------------------

    async def due_money_back(self, conn: Connection) -> list[OverpaymentRow]:
        return await self._repo.due_overpayments(conn, self.policy.money_back_batch)

    async def send_money_back(self, pool: Pool, overpayment_id: uuid.UUID) -> str:
        """Refunds one overpayment through the channel it came from, as the platform (the refund service
        directly: the operator needs no refund scope). The refund service owns its transactions (its number is
        claimed before the channel is asked, docs/decisions/0018): the overpayment's own id is the refund's
        idempotency key, so a retry or a second job run is the same refund. A refund whose outcome is not known
        yet is sent all the same (the refunds job settles it). Raises what the refund raises (409 when the
        order has nothing left to refund): the caller records the attempt (money_back_failed)."""
        async with pool.acquire() as conn:
            row = await self._repo.pending_overpayment(conn, overpayment_id)
        if row is None:
            return "already"  # sent by another run
        answer = await self._refunds.refund(
            pool,
            row.payee_id,
            row.order_id,
            f"transit-money-back:{row.id}",
            RefundCreate(amount_fen=row.amount_fen, reason="泰州通乘车欠款已还清，多付款项退回"),
        )
        async with pool.acquire() as conn, conn.transaction():
            await self._repo.overpayment_sent(conn, row.id, answer.body.id)
        if answer.body.status == "failed":
            # The channel refused the refund outright (not a silence, which raises): a person looks at why.
            _log.error(
                "transit money back refused by the channel", order=str(row.order_id), fen=row.amount_fen
            )
            return "refused"
        _log.info("transit money back sent", order=str(row.order_id), fen=row.amount_fen)
        return "sent"

    async def money_back_failed(self, conn: Connection, overpayment_id: uuid.UUID, error: Exception) -> str:
        """A refund that could not be made: retried by the next run, unless the order has nothing left to refund
        (409: someone refunded it already), which operations follow up."""
        final = isinstance(error, DomainError) and error.status == 409
        await self._repo.overpayment_attempted(
            conn, overpayment_id, str(error) or type(error).__name__, failed=final
        )
        if final:
            _log.error("transit money back refused", overpayment=str(overpayment_id), error=str(error)[:200])
            return "failed"
        return "retry"


def _money_back_status(status: str, refund_status: str | None) -> str:
    if status == "failed" or refund_status == "failed":
        return "failed"
    return "refunded" if refund_status == "succeeded" else "refunding"


@dataclass(frozen=True)
class _RepayClaim:
    """What a repay found or claimed: the order, the answer so far, whether the request's key stores that
    answer (`keyed`), and whether the order was claimed by this very request (`fresh`)."""

    order: OrderRow
    status_code: int
    body: Repayment
    keyed: bool
    fresh: bool


def _with_order(body: Repayment, order: OrderView) -> Repayment:
    return Repayment(order=order, debt_fen=body.debt_fen, remaining_fen=body.remaining_fen)
