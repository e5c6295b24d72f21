"""A transit debt is collected once: one repayment order per debt at a time, whatever the Idempotency-Key and
however many requests race, and money that still arrives for a debt already repaid goes back to the rider
through the channel it came from, by the platform, once, with the operator credited once and the ledger holding."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from payments.orders.schemas import OrderCreate
from payments.orders.tasks import settle_payments
from payments.transit.tasks import check_transit_deductions, deduct_transit_fares, return_overpayments
from tests.helpers import bearer, code_minter, real_named
from tests.payments.transit.test_transit import (
    TRANSIT,
    _build_trips,
    _ctx,
    _day,
    _deductions,
    _deliver,
    _ledger_ok,
    _ride,
    _sign_wechat,
    _tap,
    _upload,
)

REPAY = {"channel": "wechat", "method": "jsapi", "payer_channel_id": "o-rider-repay"}


async def _in_debt(client: Any, services: Any, wechat: Any, metro: dict[str, Any]) -> dict[str, Any]:
    """A rider who owes the metro one bus fare (100 fen): the agreement was ended in WeChat before the deduction."""
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    codes = await code_minter(client, services, person)
    await _upload(client, metro, [_tap(codes, "single", "火车站", _day(), line="B2")])
    await _build_trips(services)
    ended = await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/terminate", {"deliver": False}
    )
    await _deliver(client, "wechat", ended["notification"])
    await deduct_transit_fares(_ctx(services))
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert debts["total_fen"] == 100, debts
    return person


async def _repay(client: Any, person: dict[str, Any], key: str | None = None) -> Any:
    return await client.post(
        f"{TRANSIT}/debts/repay",
        headers={**bearer(person), "Idempotency-Key": key or uuid.uuid4().hex},
        json=REPAY,
    )


async def _pay(client: Any, wechat: Any, order: dict[str, Any]) -> None:
    paid = await wechat.control("POST", f"/_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False})
    await _deliver(client, "wechat", paid["notification"])


async def _lapse(services: Any, order: dict[str, Any]) -> None:
    """The rider let the order's payment window pass (the channel still takes money for it, as channels do)."""
    async with services.pool.acquire() as conn:
        await conn.execute(
            "UPDATE payments.orders SET expires_at = now() - interval '1 minute' WHERE id = $1",
            uuid.UUID(order["id"]),
        )


async def _balance(services: Any, account: str) -> int:
    async with services.pool.acquire() as conn:
        return int(await services.payments.ledger.balance(conn, account))


async def _repayment_orders(services: Any, person: dict[str, Any]) -> int:
    async with services.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM payments.transit_repayments WHERE resident_id = $1",
                uuid.UUID(person["resident_id"]),
            )
        )


async def test_a_second_repay_with_another_key_answers_the_open_order(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)
    key = uuid.uuid4().hex
    first = await _repay(client, person, key)
    assert first.status_code == 201, first.text
    second = await _repay(client, person)
    # Before: a second order (201) for the same debt, which the rider could pay too.
    assert second.status_code == 200, second.text
    assert second.json()["order"]["id"] == first.json()["order"]["id"]
    assert second.json()["order"]["pay"] == first.json()["order"]["pay"]
    assert (second.json()["debt_fen"], second.json()["remaining_fen"]) == (100, 0)
    # The first key still gets its first answer.
    replayed = await _repay(client, person, key)
    assert (replayed.status_code, replayed.json()) == (201, first.json())
    assert await _repayment_orders(services, person) == 1

    # One at a time: once the open order can no longer be paid, a repay opens a new one.
    await _lapse(services, first.json()["order"])
    third = await _repay(client, person)
    assert third.status_code == 201, third.text
    assert third.json()["order"]["id"] != first.json()["order"]["id"]


async def test_concurrent_repays_open_one_order(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)
    answers = await asyncio.gather(*(_repay(client, person) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["order"]["id"] for a in answers}) == 1
    assert await _repayment_orders(services, person) == 1


async def test_money_for_a_debt_already_repaid_goes_back_to_the_rider(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)
    operator_id = metro["organisation"]["id"]
    payable = f"payee_payable:{operator_id}"
    before = await _balance(services, payable)

    first = (await _repay(client, person)).json()["order"]
    await _lapse(services, first)
    second = (await _repay(client, person)).json()["order"]
    assert second["id"] != first["id"]
    await _pay(client, wechat, second)
    assert (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()["total_fen"] == 0
    credited = await _balance(services, payable) - before
    assert credited < 0  # the operator is owed the fare (less the platform's fee, if any)

    # The rider pays the lapsed order too (the channel took it): the debt is already repaid.
    await _pay(client, wechat, first)
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert [(m["order_id"], m["amount_fen"], m["status"]) for m in debts["money_back"]] == [
        (first["id"], 100, "refunding")
    ]

    # The platform refunds it by itself (the operator has no refund scope), through WeChat, once.
    assert await return_overpayments(_ctx(services)) == {"sent": 1}
    assert await return_overpayments(_ctx(services)) == {}
    await settle_payments(_ctx(services))  # asks again with the same number: WeChat accepts it
    await settle_payments(_ctx(services))  # and the query finds it done
    trade = await wechat.control("GET", f"/_sandbox/trades/{first['out_trade_no']}")
    assert [r["refund_fee"] for r in trade["refunds"]] == [100], trade
    second_trade = await wechat.control("GET", f"/_sandbox/trades/{second['out_trade_no']}")
    assert not second_trade["refunds"]

    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert [(m["order_id"], m["status"]) for m in debts["money_back"]] == [(first["id"], "refunded")]
    order = (await client.get(f"/api/v1/payments/orders/{first['id']}", headers=bearer(person))).json()
    assert order["refunded_fen"] == 100
    # Credited once: the second payment's credit went back out with the refund.
    assert await _balance(services, payable) - before == credited
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    assert await _balance(services, f"transit_uncollected:{operator_id}") == 0
    await _ledger_ok(services)


async def test_two_orders_paid_for_one_debt_and_the_channel_down_at_first(client, services, wechat, metro):
    """Two repayment orders opened before there was one per debt (the old path: the order service directly), both
    paid: the second is refunded; a refund call the channel does not answer is retried by the next run."""
    person = await _in_debt(client, services, wechat, metro)
    payable = f"payee_payable:{metro['organisation']['id']}"
    before = await _balance(services, payable)
    first = (await _repay(client, person)).json()["order"]
    async with services.pool.acquire() as conn, conn.transaction():
        debt_ids = await conn.fetchval(
            "SELECT deduction_ids FROM payments.transit_repayments WHERE order_id = $1",
            uuid.UUID(first["id"]),
        )
        again = await services.payments.orders.claim(
            conn, uuid.UUID(person["resident_id"]), _order_create(first), purpose="transit_fare"
        )
        await conn.execute(
            """INSERT INTO payments.transit_repayments (order_id, resident_id, payee_id, amount_fen, deduction_ids)
               VALUES ($1, $2, $3, 100, $4)""",
            again.id,
            uuid.UUID(person["resident_id"]),
            uuid.UUID(first["payee_id"]),
            debt_ids,
        )
    await services.payments.orders.ask_channel(again, "127.0.0.1", "o-rider-repay")  # the channel opens it
    second = {"id": str(again.id), "out_trade_no": again.out_trade_no}
    await _pay(client, wechat, first)
    await _pay(client, wechat, second)
    credited_twice = await _balance(services, payable) - before

    # The channel fails the refund call: the refund keeps its number, pending (docs/decisions/0018), and the
    # payments job asks again with that number; the overpayment is sent once, not again.
    await wechat.fault("secapi/pay/refund", "error")
    assert await return_overpayments(_ctx(services)) == {"sent": 1}
    assert (await wechat.control("GET", f"/_sandbox/trades/{second['out_trade_no']}"))["refunds"] == []
    assert await return_overpayments(_ctx(services)) == {}
    await settle_payments(_ctx(services))  # asks again with the same number: WeChat accepts it
    await settle_payments(_ctx(services))  # and the query finds it done
    trade = await wechat.control("GET", f"/_sandbox/trades/{second['out_trade_no']}")
    assert [r["refund_fee"] for r in trade["refunds"]] == [100], trade
    assert (await wechat.control("GET", f"/_sandbox/trades/{first['out_trade_no']}"))["refunds"] == []
    assert await _balance(services, payable) - before == credited_twice // 2
    await _ledger_ok(services)


async def test_a_late_deduction_after_the_repayment_is_refunded_on_its_own_order(
    client, services, wechat, metro
):
    """WeChat completes a withholding deduction hours after it became a debt, and after the rider repaid it: the
    deduction's money goes back through the deduction's own order."""
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions", {"outcome": "accept"}
    )
    codes = await code_minter(client, services, person)
    await _upload(client, metro, _ride(codes, _day(), "泰州站", "海陵北路"))  # 3 yuan
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    window = services.payments.transit.policy.deduction_window
    await check_transit_deductions(_ctx(services), now=dt.datetime.now(dt.UTC) + window)
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("failed", "closed")
    payable = f"payee_payable:{metro['organisation']['id']}"
    before = await _balance(services, payable)

    repayment = (await _repay(client, person)).json()["order"]
    await _pay(client, wechat, repayment)
    credited = await _balance(services, payable) - before
    done = await wechat.control(
        "POST", f"/_sandbox/trades/{deduction['out_trade_no']}/pay", {"deliver": False}
    )
    await _deliver(client, "wechat", done["notification"])
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert [(m["out_trade_no"], m["amount_fen"]) for m in debts["money_back"]] == [
        (deduction["out_trade_no"], 300)
    ]

    assert (await return_overpayments(_ctx(services))).get("sent") == 1
    await settle_payments(_ctx(services))
    trade = await wechat.control("GET", f"/_sandbox/trades/{deduction['out_trade_no']}")
    assert [r["refund_fee"] for r in trade["refunds"]] == [300], trade
    assert not (await wechat.control("GET", f"/_sandbox/trades/{repayment['out_trade_no']}"))["refunds"]
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert [m["status"] for m in debts["money_back"]] == ["refunded"]
    assert await _balance(services, payable) - before == credited
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    await _ledger_ok(services)


def _order_create(order: dict[str, Any]) -> OrderCreate:
    return OrderCreate(
        purpose="other",
        amount_fen=order["amount_fen"],
        subject="泰州通乘车欠款补缴",
        payee_id=uuid.UUID(order["payee_id"]),
        channel="wechat",
        method="jsapi",
        payer_channel_id="o-rider-repay",
    )
