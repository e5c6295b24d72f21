"""One number per transit order, for life (docs/decisions/0018): a debt repayment and a fare deduction keep the
out_trade_no they were claimed with across timeouts, retries, concurrent requests and a crash between the
channel's answer and our commit; an unknown outcome is settled by asking the channel about that number, and no
database connection waits on a slow channel."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest

from payments.transit.tasks import check_transit_deductions, deduct_transit_fares
from tests.helpers import bearer, code_minter, real_named
from tests.payments.helpers import ChannelSpy, idle_in_transaction
from tests.payments.sandboxes import WECHAT_TIMEOUT_S
from tests.payments.transit.test_debt_repayment import REPAY, _balance, _in_debt, _pay, _repay
from tests.payments.transit.test_transit import (
    TRANSIT,
    _build_trips,
    _ctx,
    _day,
    _deductions,
    _ledger_ok,
    _ride,
    _sign_wechat,
    _trips,
    _upload,
)


@pytest.fixture
def creates(services: Any, monkeypatch: pytest.MonkeyPatch) -> ChannelSpy:
    """The WeChat adapter's order creation (unifiedorder), watched."""
    channel = services.payments.orders.channel("wechat")
    spy = ChannelSpy(channel.create, "out_trade_no")
    monkeypatch.setattr(channel, "create", spy)
    return spy


@pytest.fixture
def deducts(services: Any, monkeypatch: pytest.MonkeyPatch) -> ChannelSpy:
    """The WeChat adapter's papay deduction (pappayapply), watched."""
    channel = services.payments.orders.channel("wechat")
    spy = ChannelSpy(channel.deduct, 1)
    monkeypatch.setattr(channel, "deduct", spy)
    return spy


async def _repayment_orders(services: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT o.id, o.out_trade_no, o.status, o.pay_params IS NOT NULL AS instructed
               FROM payments.transit_repayments r JOIN payments.orders o ON o.id = r.order_id
               WHERE r.resident_id = $1 ORDER BY r.created_at""",
            uuid.UUID(person["resident_id"]),
        )
    return [dict(r) for r in rows]


# --- repaying a debt ----------------------------------------------------------------------------------------


async def test_a_repay_retried_after_a_timeout_keeps_its_number(client, services, wechat, metro, creates):
    person = await _in_debt(client, services, wechat, metro)
    operator_id = metro["organisation"]["id"]
    payable = f"payee_payable:{operator_id}"
    before = await _balance(services, payable)
    # WeChat opens the trade but its answer never comes back.
    await wechat.fault("pay/unifiedorder", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await _repay(client, person, "repay-timeout-1")
    assert first.status_code == 503 and first.headers["Retry-After"], first.text
    # Before: everything rolled back, and the retry opened a second trade under a new number.
    (kept,) = await _repayment_orders(services, person)
    assert (kept["status"], kept["instructed"]) == ("waiting", False)

    again = await _repay(client, person, "repay-timeout-1")
    assert again.status_code == 201, again.text
    order = again.json()["order"]
    assert (order["out_trade_no"], order["id"]) == (kept["out_trade_no"], str(kept["id"]))
    trade = await wechat.control("GET", f"/_sandbox/trades/{kept['out_trade_no']}")
    assert order["pay"]["params"]["package"] == f"prepay_id={trade['prepay_id']}"
    assert set(creates.numbers) == {kept["out_trade_no"]}, "the channel was only ever asked about one number"
    # The first key keeps its answer; another key answers the same open order.
    assert (await _repay(client, person, "repay-timeout-1")).json() == again.json()
    other = await _repay(client, person)
    assert (other.status_code, other.json()["order"]["id"]) == (200, order["id"])

    await _pay(client, wechat, order)
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert (debts["total_fen"], debts["money_back"]) == (0, [])
    assert await _balance(services, payable) - before == -100  # the operator is credited the fare once
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    assert await _balance(services, f"transit_uncollected:{operator_id}") == 0
    assert len(await _repayment_orders(services, person)) == 1
    await _ledger_ok(services)


async def test_concurrent_repays_while_the_channel_loses_an_answer_open_one_trade(
    client, services, wechat, metro, creates
):
    person = await _in_debt(client, services, wechat, metro)
    await wechat.fault("pay/unifiedorder", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    keys = [f"repay-race-{n}-{uuid.uuid4().hex[:8]}" for n in range(5)]
    answers = await asyncio.gather(*(_repay(client, person, key) for key in keys))
    codes = [a.status_code for a in answers]
    assert codes.count(503) == 1 and all(c in (200, 201, 503) for c in codes), [a.text for a in answers]
    (kept,) = await _repayment_orders(services, person)
    named = {a.json()["order"]["id"] for a in answers if a.status_code != 503}
    assert named == {str(kept["id"])}
    # Before: the request the channel did not answer rolled back, and the next one opened a second trade.
    assert set(creates.numbers) == {kept["out_trade_no"]}, creates.numbers
    lost = keys[codes.index(503)]
    retried = await _repay(client, person, lost)
    assert retried.status_code in (200, 201), retried.text
    assert retried.json()["order"]["out_trade_no"] == kept["out_trade_no"]
    assert retried.json()["order"]["pay"]["params"]["package"].startswith("prepay_id=")


async def test_a_slow_channel_holds_no_database_connection(client, services, wechat, metro, monkeypatch):
    person = await _in_debt(client, services, wechat, metro)
    channel = services.payments.orders.channel("wechat")
    held = ChannelSpy(channel.create, "out_trade_no", hold=True)
    monkeypatch.setattr(channel, "create", held)
    repay = asyncio.create_task(_repay(client, person, "repay-slow-1"))
    await asyncio.wait([repay, asyncio.create_task(held.asked.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        assert held.numbers and not repay.done(), "the repay should be waiting on the channel"
        async with services.pool.acquire() as conn:
            in_transaction = await idle_in_transaction(conn)
            # The rider's lock (TransitRepository.lock_rider: the space 0x7472, the id's first four bytes).
            rider_locks = await conn.fetchval(
                """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                         AND classid = $1::oid AND objid = $2::oid""",
                0x7472,
                int.from_bytes(uuid.UUID(person["resident_id"]).bytes[:4], "big"),
            )
            # The order and its number are already committed, before the channel answers.
            committed = await _repayment_orders(services, person)
    finally:
        held.release()
    # Before: the request's transaction (and the rider's lock) stayed open while the channel was asked.
    assert (in_transaction, rider_locks) == (0, 0)
    assert [o["out_trade_no"] for o in committed] == held.numbers
    answer = await repay
    assert answer.status_code == 201, answer.text
    assert answer.json()["order"]["out_trade_no"] == held.numbers[0]


async def test_a_refused_repayment_order_frees_its_key(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)
    await wechat.fault("pay/unifiedorder", "refuse", err_code="NOAUTH")
    refused = await _repay(client, person, "repay-refused-1")
    assert refused.status_code == 502, refused.text
    assert [o["status"] for o in await _repayment_orders(services, person)] == ["closed"]
    again = await _repay(client, person, "repay-refused-1")
    assert again.status_code == 201, again.text
    orders = await _repayment_orders(services, person)
    assert [o["status"] for o in orders] == ["closed", "waiting"]
    assert again.json()["order"]["out_trade_no"] == orders[1]["out_trade_no"]


async def test_a_key_reused_with_another_body_is_refused(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)
    assert (await _repay(client, person, "repay-reused-1")).status_code == 201
    other = await client.post(
        f"{TRANSIT}/debts/repay",
        headers={**bearer(person), "Idempotency-Key": "repay-reused-1"},
        json={**REPAY, "payer_channel_id": "o-another-rider"},
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.text, other.text


async def test_an_agreement_is_committed_before_the_channel_is_asked(client, services, wechat, monkeypatch):
    person = await real_named(client, services)
    channel = services.payments.orders.channel("wechat")
    held = ChannelSpy(channel.agreement_sign, 0, hold=True)
    monkeypatch.setattr(channel, "agreement_sign", held)
    signing = asyncio.create_task(
        client.post(
            f"{TRANSIT}/agreements",
            headers=bearer(person),
            json={"channel": "wechat", "payer_channel_id": "oRider" + uuid.uuid4().hex[:12]},
        )
    )
    await asyncio.wait([signing, asyncio.create_task(held.asked.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        assert held.numbers and not signing.done(), "the signing should be waiting on the channel"
        async with services.pool.acquire() as conn:
            in_transaction = await idle_in_transaction(conn)
            known = await conn.fetchval(
                "SELECT status FROM payments.transit_agreements WHERE external_agreement_no = $1",
                held.numbers[0],
            )
    finally:
        held.release()
    # Before: the request's transaction stayed open while the channel was asked, and nothing was committed.
    assert (in_transaction, known) == (0, "pending")
    made = await signing
    assert made.status_code == 201, made.text
    assert made.json()["external_agreement_no"] == held.numbers[0] and made.json()["sign_params"]["url"]


# --- deducting a fare ---------------------------------------------------------------------------------------


async def _rider_with_a_fare(
    client: Any, services: Any, wechat: Any, metro: dict[str, Any]
) -> dict[str, Any]:
    """A rider with an active WeChat agreement and one ride (3 yuan) built into an unbilled trip, the only one:
    trips other tests left unbilled are deducted first, so that a fault or a held call meets this rider's."""
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    # WeChat accepts each deduction and takes the money when the test says (_take).
    await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions", {"outcome": "accept"}
    )
    codes = await code_minter(client, services, person)
    await _upload(client, metro, _ride(codes, _day(), "泰州站", "海陵北路"))
    await _build_trips(services)
    return person


async def _take(wechat: Any, out_trade_no: str) -> None:
    """WeChat completes an accepted deduction (no notification reaches us: only a query tells)."""
    await wechat.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})


async def _charged_once(client: Any, services: Any, person: dict[str, Any], metro: dict[str, Any]) -> None:
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("paid", "paid")
    assert [t["status"] for t in await _trips(client, person)] == ["paid"]
    assert await _balance(services, f"payee_payable:{metro['organisation']['id']}") == -300
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    await _ledger_ok(services)


async def test_a_deduction_whose_answer_is_lost_is_settled_by_query_once(
    client, services, wechat, metro, deducts
):
    person = await _rider_with_a_fare(client, services, wechat, metro)
    # WeChat deducts, and its answer never comes back.
    await wechat.fault("pay/pappayapply", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("pending", "waiting")

    await _take(wechat, deduction["out_trade_no"])
    await check_transit_deductions(_ctx(services))
    await check_transit_deductions(_ctx(services))
    assert deducts.numbers.count(deduction["out_trade_no"]) == 1, "asked once, then only queried"
    trade = await wechat.control("GET", f"/_sandbox/trades/{deduction['out_trade_no']}")
    assert (trade["state"], trade["total_fee"]) == ("SUCCESS", 300)
    await _charged_once(client, services, person, metro)


async def test_a_crash_between_the_deduction_and_our_commit_is_found_by_query(
    client, services, wechat, metro, deducts
):
    person = await _rider_with_a_fare(client, services, wechat, metro)
    transit = services.payments.transit
    # The deduction job claims its numbers, asks the channel, and dies before recording the answer.
    now = dt.datetime.now(dt.UTC)
    async with services.pool.acquire() as conn, conn.transaction():
        (request,) = await transit.plan_deductions(conn, now)
    async with services.pool.acquire() as conn:
        assert await transit.claim_send(conn, request.deduction_id, now)
    accepted = await transit.send_deduction(request)
    assert accepted is not None  # the channel took it; we never wrote that down
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("pending", "waiting")

    await _take(wechat, request.out_trade_no)
    await check_transit_deductions(_ctx(services))
    await check_transit_deductions(_ctx(services))
    await deduct_transit_fares(_ctx(services))  # nothing is billed twice
    assert deducts.numbers == [request.out_trade_no]
    await _charged_once(client, services, person, metro)


async def test_a_deduction_in_flight_is_not_sent_again_by_the_check_job(
    client, services, wechat, metro, monkeypatch
):
    """The check job runs while the deduction job is still waiting on the channel: the channel does not know the
    number yet, and the check job leaves it to the request in flight instead of sending it a second time."""
    person = await _rider_with_a_fare(client, services, wechat, metro)
    channel = services.payments.orders.channel("wechat")
    held = ChannelSpy(channel.deduct, 1, hold=True)
    monkeypatch.setattr(channel, "deduct", held)
    job = asyncio.create_task(deduct_transit_fares(_ctx(services)))
    await asyncio.wait([job, asyncio.create_task(held.asked.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        assert held.numbers and not job.done()
        await check_transit_deductions(_ctx(services))
    finally:
        held.release()
    # Before: the check job found no trade at the channel and sent the deduction again, same number.
    (deduction,) = await _deductions(services, person)
    assert held.numbers.count(deduction["out_trade_no"]) == 1, held.numbers
    await job
    await _take(wechat, deduction["out_trade_no"])
    await check_transit_deductions(_ctx(services))
    await _charged_once(client, services, person, metro)
