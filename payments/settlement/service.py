"""Settlement per payee as a running account: what the ledger says we owe (payments less platform fees, less
refunds, less what the payee owed us), a CSV statement line by line, and the payout, posted to the ledger once."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import msgspec
import structlog

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, not_found
from payments.ledger.service import Ledger
from payments.settlement.repository import NewSettlement, SettlementRepository, SettlementRow, TransferRow
from payments.settlement.schemas import SettlementView, TransferSummary

_log = structlog.get_logger("payments.settlement")

# What a spreadsheet reads as the start of a formula (OWASP "CSV injection"); tab and carriage return too, since
# some spreadsheets drop them and read what follows.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """A text cell a spreadsheet shows as text: a payer's order subject or a payee's own reference must not run as
    a formula on the payee's accountant's machine. The leading apostrophe is what spreadsheets themselves use to
    mark text; amounts are written as integers and never pass through here, so negative amounts stay numbers."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), BUSINESS_TZ)
    return start, start + dt.timedelta(days=1)


def settlement_view(row: SettlementRow, transfer: TransferRow | None = None) -> SettlementView:
    view = msgspec.convert(msgspec.structs.asdict(row), SettlementView)
    if transfer is not None:
        view.transfer = TransferSummary(
            channel=transfer.channel,
            out_biz_no=transfer.out_biz_no,
            status=transfer.status,  # type: ignore[arg-type]  # the table's check constraint
            failure=transfer.failure,
        )
    return view


def settlement_status(net_fen: int) -> str:
    return "due" if net_fen > 0 else "carried" if net_fen < 0 else "nothing-due"


class SettlementService:
    """Settlement as a running account (decision 0019): each run takes, per payee, every movement of its payable
    made before the cutoff that no earlier settlement took, so money that arrives or leaves after a day was
    settled rolls into the next settlement (the same day's second, or the next day's). What a payee owes us (a
    refund after its money was settled) is recovered first; a payee is never paid out more than it is owed, and a
    negative result is carried forward as its debt."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._repo = SettlementRepository()

    async def settle_day(
        self, conn: Connection, day: dt.date, now: dt.datetime | None = None
    ) -> list[SettlementView]:
        """Settles what each payee has unsettled from before the end of `day` (or before now, for a day not over
        yet) and returns all of the day's settlements. Running again with nothing new settles nothing."""
        cutoff = min(day_bounds(day)[1], now or dt.datetime.now(dt.UTC))
        for payee_id in await self._repo.payees_unsettled(conn, cutoff):
            await self.settle_payee(conn, payee_id, day, cutoff)
        return await self._views(conn, await self._repo.for_day(conn, day))

    async def _views(self, conn: Connection, rows: list[SettlementRow]) -> list[SettlementView]:
        transfers = {
            t.settlement_id: t for t in await self._repo.latest_transfers(conn, [r.id for r in rows])
        }
        return [settlement_view(r, transfers.get(r.id)) for r in rows]

    async def settle_payee(
        self, conn: Connection, payee_id: uuid.UUID, day: dt.date, cutoff: dt.datetime
    ) -> SettlementView | None:
        await self._repo.lock_payee(conn, payee_id)
        items = await self._repo.unsettled(conn, payee_id, cutoff)
        if not items:
            return None
        owed_to_payee = -sum(i.payable_fen for i in items)
        # What the payee owes us in all, its debts carried since the last settlement included.
        owed_by_payee = await self._ledger.balance(conn, f"payee_receivable:{payee_id}")
        carried_meanwhile = sum(i.receivable_fen for i in items)
        lines = await self._repo.lines_of_entries(conn, payee_id, [i.entry_id for i in items])
        net = owed_to_payee - owed_by_payee
        payout, recovered = (net, owed_by_payee) if net > 0 else (0, owed_to_payee)
        row = await self._repo.insert(
            conn,
            NewSettlement(
                payee_id=payee_id,
                day=day,
                cutoff=cutoff,
                gross_fen=sum(line.amount_fen for line in lines if line.kind == "payment"),
                fees_fen=sum(line.fee_fen for line in lines if line.kind == "payment"),
                refunds_fen=-sum(line.amount_fen for line in lines if line.kind == "refund"),
                owed_before_fen=owed_by_payee - carried_meanwhile,
                net_fen=net,
                payout_fen=payout,
                owed_after_fen=max(-net, 0),
                status=settlement_status(net),
            ),
            await self._repo.next_seq(conn, payee_id, day),
        )
        entry_ids = [i.entry_id for i in items]
        ref = f"settlement:{row.id}"
        postings = [
            (f"payee_payable:{payee_id}", owed_to_payee),
            (f"payee_receivable:{payee_id}", -recovered),
            (f"payout_due:{payee_id}", -payout),
        ]
        if any(amount for _, amount in postings):
            await self._ledger.post(conn, ref, "settlement", postings, memo=f"{day} #{row.seq}")
            entry_id = await self._ledger.entry_id(conn, ref)
            assert entry_id is not None
            entry_ids.append(entry_id)
        await self._repo.add_entries(conn, row.id, payee_id, entry_ids)
        # Refunds made after the cutoff took money this settlement has now moved out: they are debts.
        await self._ledger.carry_payee_debt(conn, payee_id, ref)
        _log.info("settled", payee=str(payee_id), day=str(day), seq=row.seq, net_fen=net, status=row.status)
        return settlement_view(row)

    async def for_day(
        self, conn: Connection, day: dt.date, payee_id: uuid.UUID | None = None
    ) -> list[SettlementView]:
        return await self._views(conn, await self._repo.for_day(conn, day, payee_id))

    async def statement_csv(
        self, conn: Connection, settlement_id: uuid.UUID, payee_id: uuid.UUID | None = None
    ) -> str:
        row = await self._repo.get(conn, settlement_id)
        if row is None or (payee_id is not None and row.payee_id != payee_id):
            raise not_found("settlement not found")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "time",
                "kind",
                "out_trade_no",
                "out_refund_no",
                "subject",
                "channel",
                "amount_fen",
                "fee_fen",
                "net_fen",
            ]
        )
        for line in await self._repo.statement_lines(conn, row.id):
            writer.writerow(
                [
                    line.at.astimezone(BUSINESS_TZ).isoformat(),
                    spreadsheet_text(line.kind),
                    spreadsheet_text(line.out_trade_no),
                    spreadsheet_text(line.out_refund_no or ""),
                    spreadsheet_text(line.subject),
                    spreadsheet_text(line.channel),
                    line.amount_fen,
                    line.fee_fen,
                    line.net_fen,
                ]
            )
        if row.owed_before_fen:
            writer.writerow(
                ["", "owed from earlier settlements", "", "", "", "", "", "", -row.owed_before_fen]
            )
        writer.writerow(
            [
                "total",
                "",
                "",
                "",
                "",
                "",
                row.gross_fen - row.refunds_fen,
                row.fees_fen,
                row.net_fen,
            ]
        )
        return out.getvalue()

    async def mark_paid(self, conn: Connection, settlement_id: uuid.UUID, payout_ref: str) -> SettlementView:
        """Records the bank transfer that paid a settlement, of its payout less what it keeps back of the payee's
        debt (`keep_back`). Refused (409) while a channel transfer of it is under way or has paid it: the money
        would leave twice. A settlement whose transfer failed may be paid by bank."""
        existing = await self._repo.lock(conn, settlement_id)
        if existing is None:
            raise not_found("settlement not found")
        transfer = await self._repo.live_transfer(conn, settlement_id)
        if transfer is not None:
            raise DomainError(
                409,
                "transfer-under-way" if transfer.status == "pending" else "conflict",
                f"settlement is being paid by {transfer.channel} transfer {transfer.out_biz_no} "
                f"({transfer.status}): it is not paid by bank as well",
            )
        existing = await self.keep_back(conn, existing.id) or existing
        paid = await self._repo.mark_paid(conn, settlement_id, payout_ref)
        if paid is None:
            raise DomainError(409, "conflict", f"settlement is {existing.status}, not due")
        sent = paid.payout_fen - paid.recovered_at_payout_fen
        if sent:
            await self._ledger.post(
                conn,
                f"payout:{settlement_id}",
                "payout",
                [(f"payout_due:{paid.payee_id}", sent), ("payout_bank", -sent)],
                memo=payout_ref,
            )
        return settlement_view(paid)

    async def keep_back(self, conn: Connection, settlement_id: uuid.UUID) -> SettlementRow | None:
        """Decides, once per settlement and when its payout is first made (by bank or transfer), what the payout
        keeps back of what the payee owes us by then (a refund after a settlement, carried while this one waited
        to be paid), so a payee is never paid out more than it is owed when the money leaves. Booked at once
        (`payout_recovery:<id>`: payout due against the payee's receivable); the settlement keeps its figures and
        records `recovered_at_payout_fen`. Returns the settlement (its row locked until the caller's transaction
        ends) with what was decided: the money to send is payout_fen less it. None when there is no such
        settlement."""
        settlement = await self._repo.lock(conn, settlement_id)
        if settlement is None or settlement.status != "due":
            return settlement
        # Settling and keeping back one at a time per payee: a debt is recovered once.
        await self._repo.lock_payee(conn, settlement.payee_id)
        owed_by_payee = await self._ledger.balance(conn, f"payee_receivable:{settlement.payee_id}")
        kept = min(max(owed_by_payee, 0), settlement.payout_fen)
        decided = await self._repo.keep_back(conn, settlement.id, kept)
        if decided is None:
            return settlement  # decided by an earlier payout attempt (a transfer that failed since)
        if kept:
            await self._ledger.post(
                conn,
                f"payout_recovery:{settlement.id}",
                "payout",
                [
                    (f"payout_due:{settlement.payee_id}", kept),
                    (f"payee_receivable:{settlement.payee_id}", -kept),
                ],
                memo=f"{settlement.day} #{settlement.seq}",
            )
            _log.info("debt kept back from a payout", payee=str(settlement.payee_id), fen=kept)
        return decided

    async def paid_by_transfer(
        self,
        conn: Connection,
        settlement_id: uuid.UUID,
        channel: str,
        out_biz_no: str,
        channel_order_id: str,
        value_at: dt.datetime | None,
    ) -> SettlementView | None:
        """A channel transfer paid the settlement (payments/payouts/service.py, in the transaction that records
        the transfer's success): the settlement is paid with the channel's order id as its reference, and the
        payout is posted once, from what is due to the payee to `channel_payouts:<channel>` (money that left our
        balance at the channel; not channel_clearing, which is compared with the channels' trade bills, where
        transfers do not appear: decision 0021). The entry's memo is the transfer's number, which the ledger check
        compares with what the channel says. None when the settlement was no longer due (nothing posted)."""
        paid = await self._repo.mark_paid(conn, settlement_id, channel_order_id)
        if paid is None:
            _log.error("a transfer paid a settlement that is not due", settlement=str(settlement_id))
            return None
        sent = paid.payout_fen - paid.recovered_at_payout_fen
        await self._ledger.post(
            conn,
            f"payout:{settlement_id}",
            "payout",
            [(f"payout_due:{paid.payee_id}", sent), (f"channel_payouts:{channel}", -sent)],
            memo=out_biz_no,
            value_at=value_at,
        )
        return settlement_view(paid)
