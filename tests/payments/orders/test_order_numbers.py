"""One out_trade_no per order, for life: an order whose channel call timed out is stored with its number, and the
retry with the same key asks the channel again with that number instead of opening a second channel trade."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from payments.orders.tasks import settle_payments
from tests.helpers import bearer, login
from tests.payments.helpers import ChannelSpy, create_order, idle_in_transaction
from tests.payments.sandboxes import ALIPAY_TIMEOUT_S, WECHAT_TIMEOUT_S


async def _orders_of(services: Any, payee: dict[str, Any]) -> list[Any]:
    """The payee's orders (each test has a payee of its own)."""
    async with services.pool.acquire() as conn:
        return list(
            await conn.fetch(
                """SELECT out_trade_no, status, pay_params IS NOT NULL AS instructed FROM payments.orders
                   WHERE payee_id = $1""",
                uuid.UUID(payee["organisation"]["id"]),
            )
        )


async def test_a_wechat_order_retried_after_a_timeout_keeps_its_number(client, services, wechat, payee):
    person = await login(client)
    await wechat.fault("pay/unifiedorder", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await create_order(client, person, payee, amount=1500, key="wx-order-timeout-1")
    assert first.status_code == 503 and first.headers["Retry-After"], first.text
    stored = await _orders_of(services, payee)
    assert [(o["status"], o["instructed"]) for o in stored] == [("waiting", False)], (
        "the order and its number are kept while the channel's answer is unknown"
    )
    again = await create_order(client, person, payee, amount=1500, key="wx-order-timeout-1")
    assert again.status_code == 201, again.text
    assert again.json()["out_trade_no"] == stored[0]["out_trade_no"]
    assert again.json()["pay"]["params"]["package"].startswith("prepay_id=")
    trade = await wechat.control("GET", f"/_sandbox/trades/{stored[0]['out_trade_no']}")
    assert again.json()["pay"]["params"]["package"] == f"prepay_id={trade['prepay_id']}"
    assert len(await _orders_of(services, payee)) == 1
    replay = await create_order(client, person, payee, amount=1500, key="wx-order-timeout-1")
    assert replay.status_code == 201 and replay.json()["out_trade_no"] == stored[0]["out_trade_no"]


async def test_an_alipay_order_retried_after_a_timeout_keeps_its_number(client, services, alipay, payee):
    person = await login(client)
    body = {
        "purpose": "non_tax_fee",
        "amount_fen": 4200,
        "subject": "泰州市不动产登记费",
        "payee_id": payee["organisation"]["id"],
        "channel": "alipay",
        "method": "native",
    }
    headers = {**bearer(person), "Idempotency-Key": "ali-order-timeout-1"}
    await alipay.fault("alipay.trade.precreate", "timeout", delay_s=ALIPAY_TIMEOUT_S + 2)
    first = await client.post("/api/v1/payments/orders", headers=headers, json=body)
    assert first.status_code == 503, first.text
    stored = await _orders_of(services, payee)
    assert len(stored) == 1 and stored[0]["status"] == "waiting"
    again = await client.post("/api/v1/payments/orders", headers=headers, json=body)
    assert again.status_code == 201, again.text
    assert again.json()["out_trade_no"] == stored[0]["out_trade_no"]
    assert again.json()["pay"]["params"]["qr_code"]
    await alipay.control("GET", f"/_sandbox/trades/{stored[0]['out_trade_no']}")
    assert len(await _orders_of(services, payee)) == 1


async def test_a_retry_the_channel_refuses_closes_the_order_it_may_hold(client, services, wechat, payee):
    """After a timeout the number may exist at the channel: a refused retry closes the order instead of forgetting
    it, and the key then names the closed order (409) instead of opening another."""
    person = await login(client)
    await wechat.fault("pay/unifiedorder", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await create_order(client, person, payee, key="wx-order-refused-retry")
    assert first.status_code == 503, first.text
    await wechat.fault("pay/unifiedorder", "refuse", err_code="NOAUTH")
    refused = await create_order(client, person, payee, key="wx-order-refused-retry")
    assert refused.status_code == 502, refused.text
    assert [o["status"] for o in await _orders_of(services, payee)] == ["closed"]
    again = await create_order(client, person, payee, key="wx-order-refused-retry")
    assert again.status_code == 409, again.text


async def test_the_stale_order_job_asks_the_channel_with_no_transaction_open(
    client, services, wechat, payee, monkeypatch: pytest.MonkeyPatch
):
    """An order nobody paid is settled by asking the channel about its number; while the channel is slow, the job
    holds no transaction (before: all stale orders were asked and closed inside one)."""
    person = await login(client)
    order = (await create_order(client, person, payee, amount=800)).json()
    async with services.pool.acquire() as conn:
        await conn.execute(
            "UPDATE payments.orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(order["id"]),
        )
    channel = services.payments.orders.channel("wechat")
    held = ChannelSpy(channel.query, 0, hold=True)
    monkeypatch.setattr(channel, "query", held)
    job = asyncio.create_task(settle_payments({"platform": services.platform}))
    await asyncio.wait([job, asyncio.create_task(held.asked.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        assert held.numbers and not job.done(), "the job should be waiting on the channel"
        async with services.pool.acquire() as conn:
            in_transaction = await idle_in_transaction(conn)
    finally:
        held.release()
    assert in_transaction == 0
    await job
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "closed"
