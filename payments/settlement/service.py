"""Daily settlement per payee: what the ledger says we owe for the business day (payments less platform fees,
less refunds), a CSV statement line by line, and the payout, posted to the ledger once."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, not_found
from payments.ledger.service import Ledger
from payments.settlement.repository import SettlementRepository, SettlementRow
from payments.settlement.schemas import SettlementView

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


def settlement_view(row: SettlementRow) -> SettlementView:
    return SettlementView(
        id=row.id,
        payee_id=row.payee_id,
        day=row.day,
        gross_fen=row.gross_fen,
        fees_fen=row.fees_fen,
        refunds_fen=row.refunds_fen,
        net_fen=row.net_fen,
        status=row.status,
        payout_ref=row.payout_ref,
        created_at=row.created_at,
        paid_at=row.paid_at,
    )


class SettlementService:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._repo = SettlementRepository()

    async def settle_day(self, conn: Connection, day: dt.date) -> list[SettlementView]:
        """Idempotent: a payee's day is settled once; running again returns the stored settlements."""
        start, end = day_bounds(day)
        for row in await self._repo.day_figures(conn, start, end):
            net = row.paid_net - row.refunds_net
            await self._repo.insert(conn, row.payee_id, day, row.gross, row.fees, row.refunds, net)
        return [settlement_view(r) for r in await self._repo.for_day(conn, day)]

    async def for_day(
        self, conn: Connection, day: dt.date, payee_id: uuid.UUID | None = None
    ) -> list[SettlementView]:
        return [settlement_view(r) for r in await self._repo.for_day(conn, day, payee_id)]

    async def statement_csv(
        self, conn: Connection, settlement_id: uuid.UUID, payee_id: uuid.UUID | None = None
    ) -> str:
        row = await self._repo.get(conn, settlement_id)
        if row is None or (payee_id is not None and row.payee_id != payee_id):
            raise not_found("settlement not found")
        start, end = day_bounds(row.day)
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
        for line in await self._repo.statement_lines(conn, row.payee_id, start, end):
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
        paid = await self._repo.mark_paid(conn, settlement_id, payout_ref)
        if paid is None:
            existing = await self._repo.get(conn, settlement_id)
            if existing is None:
                raise not_found("settlement not found")
            raise DomainError(409, "conflict", f"settlement is {existing.status}, not due")
        await self._ledger.post(
            conn,
            f"settlement:{settlement_id}",
            "settlement",
            [
                (f"payee_payable:{paid.payee_id}", paid.net_fen),
                ("payout_bank", -paid.net_fen),
            ],
            memo=payout_ref,
        )
        return settlement_view(paid)
