"""Issue 14, what payees expect: closing an unpaid order on demand (the payer or the payee), a close racing a
payment, and the payee's view of an order with its refunds, all through the sandboxes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app_backend.organisations.signing import sign_request
from tests.helpers import bearer, login, machine_credential
from tests.payments.helpers import create_order, ledger_ok, paid_order, signed_with_key


async def _payee_get(client: Any, credential: dict[str, Any], order_id: str) -> Any:
    path = f"/api/v1/payments/payee/orders/{order_id}"
    headers = sign_request(credential["key_id"], credential["secret"], "GET", path, b"")
    return await client.get(path, headers=headers)


async def _balances(services: Any) -> dict[str, int]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT account, sum(amount_fen) AS total FROM payments.ledger_postings GROUP BY account"
        )
    return {r["account"]: int(r["total"]) for r in rows}


async def test_the_payer_closes_a_waiting_order_here_and_at_the_channel(client, services, wechat, payee):
    person = await login(client)
    order = (await create_order(client, person, payee)).json()
    before = await _balances(services)
    closed = await client.post(f"/api/v1/payments/orders/{order['id']}/close", headers=bearer(person))
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    trade = await wechat.control("GET", f"_sandbox/trades/{order['out_trade_no']}")
    assert trade["state"] == "CLOSED"
    # Paying afterwards is refused by the channel, and nothing is credited.
    async with httpx.AsyncClient(base_url=wechat.base_url, timeout=10) as http:
        late = await http.post(f"_sandbox/trades/{order['out_trade_no']}/pay", json={"deliver": False})
    assert late.status_code == 409
    again = await client.post(f"/api/v1/payments/orders/{order['id']}/close", headers=bearer(person))
    assert again.status_code == 200 and again.json()["status"] == "closed"
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "closed"
    assert await _balances(services) == before  # a close moves no money
    await ledger_ok(services)


async def test_another_payer_cannot_close_my_order(client, services, wechat, payee):
    person = await login(client)
    order = (await create_order(client, person, payee)).json()
    stranger = await login(client)
    answer = await client.post(f"/api/v1/payments/orders/{order['id']}/close", headers=bearer(stranger))
    assert answer.status_code == 404
    missing = await client.post(f"/api/v1/payments/orders/{uuid.uuid4()}/close", headers=bearer(person))
    assert missing.status_code == 404


async def test_the_payee_closes_an_alipay_order(client, services, alipay):
    person = await login(client)
    payee = await machine_credential(client, services, ["payments:refund"], kind="department")
    order = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "non_tax_fee",
            "amount_fen": 4200,
            "subject": "泰州市不动产登记费",
            "payee_id": payee["organisation"]["id"],
            "channel": "alipay",
            "method": "native",
        },
    )
    assert order.status_code == 201, order.text
    made = order.json()
    path = f"/api/v1/payments/payee/orders/{made['id']}/close"
    closed = await signed_with_key(client, payee, path, {})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed" and closed.json()["refunds"] == []
    trade = await alipay.control("GET", f"/_sandbox/trades/{made['out_trade_no']}")
    assert trade["trade_status"] == "TRADE_CLOSED"
    await alipay.control(
        "POST", f"/_sandbox/trades/{made['out_trade_no']}/pay", {"deliver": False}, status=409
    )
    await ledger_ok(services)


async def test_a_close_racing_a_payment_ends_paid_with_a_409(client, services, wechat, payee):
    person = await login(client)
    order = (await create_order(client, person, payee, 2300)).json()
    # Paid at the channel, its notification not yet here: the close must not lose the money.
    await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False})
    before = await _balances(services)
    answer = await client.post(f"/api/v1/payments/orders/{order['id']}/close", headers=bearer(person))
    assert answer.status_code == 409, answer.text
    assert answer.json()["type"].endswith("order-paid") and "paid" in answer.json()["detail"]
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "paid"
    after = await _balances(services)
    # The channel holds the amount less the 0.6% it keeps, booked as a channel fee.
    assert after.get("channel_clearing:wechat", 0) - before.get("channel_clearing:wechat", 0) == 2300 - 14
    assert after.get("channel_fees:wechat", 0) - before.get("channel_fees:wechat", 0) == 14
    # Paid now at our side too: the payee's close is refused the same way.
    refused = await signed_with_key(client, payee, f"/api/v1/payments/payee/orders/{order['id']}/close", {})
    assert refused.status_code == 409
    await ledger_ok(services)


async def test_the_payee_queries_an_order_with_its_refunds_and_others_get_404(
    client, services, wechat, payee
):
    _, order = await paid_order(client, services, wechat, payee, 1000)
    refund = await signed_with_key(
        client,
        payee,
        f"/api/v1/payments/orders/{order['id']}/refunds",
        {"amount_fen": 400, "reason": "退一张"},
    )
    assert refund.status_code in (201, 202), refund.text
    seen = await _payee_get(client, payee, order["id"])
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["status"] == "paid" and body["amount_fen"] == 1000 and body["paid_at"]
    assert body["subject"] and body["channel"] == "wechat" and body["created_at"]
    assert body["refunded_fen"] == 400 and "pay" not in body
    [line] = body["refunds"]
    assert line["amount_fen"] == 400 and line["out_refund_no"] == refund.json()["out_refund_no"]
    assert line["status"] in ("pending", "succeeded") and line["created_at"]

    stranger = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    assert (await _payee_get(client, stranger, order["id"])).status_code == 404
    assert (await _payee_get(client, payee, str(uuid.uuid4()))).status_code == 404
    closing = await signed_with_key(
        client, stranger, f"/api/v1/payments/payee/orders/{order['id']}/close", {}
    )
    assert closing.status_code == 404
    reader = await machine_credential(client, services, ["settlements:read"], kind="merchant")
    assert (await _payee_get(client, reader, order["id"])).status_code == 404  # not its payee either
    await ledger_ok(services)


async def test_domains_hear_of_each_order_closed_once(client, services, wechat, payee):
    """What a domain held for an order (a ticket, a booked slot) goes when the order closes unpaid: payments tells
    its `on_closed` listeners in the closing transaction, once however many times the order is closed."""
    heard: list[uuid.UUID] = []

    async def listener(conn: Any, order_id: uuid.UUID) -> None:
        assert conn.is_in_transaction()
        heard.append(order_id)

    services.payments.orders.on_closed(listener)
    person = await login(client)
    order = (await create_order(client, person, payee)).json()
    for _ in range(2):
        closed = await client.post(f"/api/v1/payments/orders/{order['id']}/close", headers=bearer(person))
        assert closed.status_code == 200, closed.text
    assert heard == [uuid.UUID(order["id"])]
    payer, paid = await paid_order(client, services, wechat, payee)
    answer = await client.post(f"/api/v1/payments/orders/{paid['id']}/close", headers=bearer(payer))
    assert answer.status_code == 409
    assert heard == [uuid.UUID(order["id"])]
