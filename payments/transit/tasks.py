"""Transit jobs. Each is the transaction boundary: channel calls happen between transactions, never inside one,
and riders whose eligibility changed have their cached facts dropped again after the commit."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

from payments.container import PaymentServices, payments_of


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


async def _after_commit(payments: PaymentServices, changed: set[uuid.UUID]) -> None:
    if not changed:
        return
    async with payments.pool.acquire() as conn:
        for resident_id in changed:
            await payments.transit.eligibility_changed(conn, resident_id)


async def build_transit_trips(ctx: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, int]:
    """Takes uploaded taps over and turns them into priced trips."""
    payments = payments_of(ctx)
    async with payments.pool.acquire() as conn, conn.transaction():
        counts = await payments.transit.take_taps(conn)
    async with payments.pool.acquire() as conn, conn.transaction():
        counts.update(await payments.transit.build_trips(conn, _now(now)))
    return dict(counts)


async def deduct_transit_fares(ctx: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, int]:
    """One deduction per rider and operator with unbilled trips; the answers settle them or make debts."""
    payments = payments_of(ctx)
    transit = payments.transit
    moment = _now(now)
    changed: set[uuid.UUID] = set()
    async with payments.pool.acquire() as conn, conn.transaction():
        requests = await transit.plan_deductions(conn, moment, changed)
    counts: Counter[str] = Counter(planned=len(requests))
    for request in requests:
        async with payments.pool.acquire() as conn:
            if not await transit.claim_send(conn, request.deduction_id, moment):
                counts["sent_by_another"] += 1  # the check job got to it first (this run was slow)
                continue
        trade = await transit.send_deduction(request)
        async with payments.pool.acquire() as conn, conn.transaction():
            counts[await transit.resolve(conn, request.deduction_id, trade, moment, changed)] += 1
    await _after_commit(payments, changed)
    return dict(counts)


async def check_transit_deductions(ctx: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, int]:
    """Pending deductions are settled by asking the channel about their number: paid, refused, or a debt once
    unanswered too long. One the channel does not know (a crash before sending, a lost request) is sent again,
    same number, unless a send of it may still be in flight (TransitPolicy.resend_after)."""
    payments = payments_of(ctx)
    transit = payments.transit
    moment = _now(now)
    changed: set[uuid.UUID] = set()
    async with payments.pool.acquire() as conn:
        pending = await transit.pending_deductions(conn)
    counts: Counter[str] = Counter()
    for row in pending:
        answered, trade = await transit.query_deduction(row)
        if answered and trade is None and not transit.past_window(row, moment):
            async with payments.pool.acquire() as conn:
                resend = await transit.claim_send(conn, row.id, moment, again=True)
            if resend:
                trade = await transit.send_deduction(transit.request_of(row))
        async with payments.pool.acquire() as conn, conn.transaction():
            counts[await transit.resolve(conn, row.id, trade, moment, changed)] += 1
    await _after_commit(payments, changed)
    return dict(counts)


async def poll_transit_agreements(ctx: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, int]:
    """Pending agreements whose notification has not come: asked of the channel; never-signed ones expire."""
    payments = payments_of(ctx)
    transit = payments.transit
    moment = _now(now)
    changed: set[uuid.UUID] = set()
    async with payments.pool.acquire() as conn, conn.transaction():
        counts: Counter[str] = Counter(expired=await transit.expire_agreements(conn, moment))
        pending = await transit.pending_agreements(conn, moment)
    for row in pending:
        found = await transit.query_agreement(row)
        if found is None:
            counts["unknown"] += 1
            continue
        async with payments.pool.acquire() as conn, conn.transaction():
            counts[await transit.apply_agreement_state(conn, row, found, changed)] += 1
    await _after_commit(payments, changed)
    return dict(counts)


async def return_overpayments(ctx: dict[str, Any]) -> dict[str, int]:
    """Money paid for debts already repaid goes back to the rider through the channel it came from, one refund
    per overpayment; a channel that does not answer is asked again at the next run (same refund key)."""
    payments = payments_of(ctx)
    transit = payments.transit
    async with payments.pool.acquire() as conn:
        due = await transit.due_money_back(conn)
    counts: Counter[str] = Counter()
    for row in due:
        try:
            counts[await transit.send_money_back(payments.pool, row.id)] += 1
        except Exception as error:  # any failure leaves it due for the next run, recorded
            async with payments.pool.acquire() as conn, conn.transaction():
                counts[await transit.money_back_failed(conn, row.id, error)] += 1
    return dict(counts)
