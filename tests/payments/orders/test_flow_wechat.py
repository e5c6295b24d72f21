"""Money through the app, end to end, against the WeChat Pay sandbox: idempotent orders, duplicate and
out-of-order notifications, capped concurrent refunds, and the ledger's invariants after every scenario."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from prometheus_client import REGISTRY

from tests.helpers import bearer, login, machine_credential
from tests.payments.helpers import create_order, ledger_ok, paid_order, signed_with_key


async def test_same_key_same_body_returns_the_first_answer_and_another_body_is_refused(
    client, services, wechat, payee
):
    person = await login(client)
    first = await create_order(client, person, payee, key="order-key-0001")
    assert first.status_code == 201, first.text
    assert first.json()["pay"]["params"]["paySign"] and first.json()["status"] == "waiting"
    again = await create_order(client, person, payee, key="order-key-0001")
    assert again.status_code == 201 and again.json() == first.json()
    other = await create_order(client, person, payee, amount=999, key="order-key-0001")
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    racing = await asyncio.gather(
        *(create_order(client, person, payee, key="order-key-0002") for _ in range(8))
    )
    assert len({r.json()["id"] for r in racing}) == 1 and {r.status_code for r in racing} == {201}


async def test_orders_refuse_bad_input_naming_the_field(client, services, wechat, payee):
    person = await login(client)
    no_key = await client.post("/api/v1/payments/orders", headers=bearer(person), json={})
    assert no_key.status_code == 400
    bad = await create_order(client, person, {"organisation": {"id": str(uuid.uuid4())}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "payee_id"
    negative = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": "k" * 16},
        json={
            "purpose": "ticket",
            "amount_fen": -5,
            "subject": "x",
            "payee_id": payee["organisation"]["id"],
            "channel": "wechat",
            "method": "native",
        },
    )
    assert negative.status_code == 400 and negative.json()["errors"][0]["field"] == "amount_fen"


async def test_fifty_copies_of_a_notification_at_once_credit_once(client, services, wechat, payee):
    person = await login(client)
    order = (await create_order(client, person, payee, 2500)).json()
    note = (await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False}))[
        "notification"
    ]
    before = await _balance(services, "channel_clearing:wechat")
    acks = await asyncio.gather(
        *(
            client.post(
                "/api/v1/payments/notify/wechat",
                content=note["body"],
                headers={"Content-Type": note["content_type"]},
            )
            for _ in range(50)
        )
    )
    assert {a.status_code for a in acks} == {200}
    assert await _balance(services, "channel_clearing:wechat") - before == 2500 - 15  # less WeChat's 0.6%
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "paid" and seen.json()["paid_at"]
    await ledger_ok(services)


async def test_a_late_waiting_notification_never_undoes_paid(client, services, wechat, payee):
    person, order = await paid_order(client, services, wechat, payee)
    late = (
        await wechat.control(
            "POST",
            f"_sandbox/trades/{order['out_trade_no']}/notification",
            {"result_code": "FAIL", "deliver": False},
        )
    )["notification"]
    await client.post(
        "/api/v1/payments/notify/wechat", content=late["body"], headers={"Content-Type": late["content_type"]}
    )
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "paid"


async def test_forged_and_tampered_notifications_are_refused(client, services, wechat, payee):
    person = await login(client)
    order = (await create_order(client, person, payee, 1000)).json()
    note = (await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False}))[
        "notification"
    ]
    tampered = note["body"].replace("<total_fee>1000</total_fee>", "<total_fee>1</total_fee>")
    assert tampered != note["body"]
    for body in (tampered, note["body"].replace("<sign>", "<sign>0")):
        refused = await client.post(
            "/api/v1/payments/notify/wechat", content=body, headers={"Content-Type": "application/xml"}
        )
        assert refused.status_code == 400 and b"FAIL" in refused.content
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "waiting"


async def test_concurrent_partial_refunds_never_exceed_what_was_paid(client, services, wechat, payee):
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    answers = await asyncio.gather(
        *(signed_with_key(client, payee, path, {"amount_fen": 300, "reason": "部分退票"}) for _ in range(6))
    )
    accepted = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code == 409]
    assert len(accepted) == 3 and len(refused) == 3, [a.text for a in answers]
    assert refused[0].json()["errors"][0]["field"] == "amount_fen"
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    await ledger_ok(services)
    assert await _balance(services, f"payee_payable:{payee['organisation']['id']}") <= 0


async def test_a_full_refund_returns_the_fee_and_keeps_the_payable_at_zero(client, services, wechat, payee):
    _, order = await paid_order(client, services, wechat, payee, amount=777)
    before = await _balance(services, f"payee_payable:{payee['organisation']['id']}")
    for amount in (100, 677):
        made = await signed_with_key(
            client, payee, f"/api/v1/payments/orders/{order['id']}/refunds", {"amount_fen": amount}
        )
        assert made.status_code == 201, made.text
    async with services.pool.acquire() as conn, conn.transaction():
        assert await services.payments.refunds.settle_pending(conn) >= 2
    after = await _balance(services, f"payee_payable:{payee['organisation']['id']}")
    fee = 777 * 60 // 10_000
    assert after - before == 777 - fee, (
        "the payee gives back what it received; the platform gives back its fee"
    )
    await ledger_ok(services)


async def test_another_payee_cannot_refund_and_the_same_key_is_idempotent(client, services, wechat, payee):
    _, order = await paid_order(client, services, wechat, payee)
    stranger = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    assert (await signed_with_key(client, stranger, path, {"amount_fen": 100})).status_code == 404
    first = await signed_with_key(client, payee, path, {"amount_fen": 100}, key="refund-key-001")
    again = await signed_with_key(client, payee, path, {"amount_fen": 100}, key="refund-key-001")
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.json()["order_refunded_fen"] == 100


async def _balance(services: Any, account: str) -> int:
    async with services.pool.acquire() as conn:
        return await services.payments.ledger.balance(conn, account)


async def _expire(db: Any, order_id: str) -> None:
    # The clock moves past the order's expiry (15 minutes).
    await db.execute(
        "UPDATE payments.orders SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", order_id
    )


async def test_orders_never_notified_are_settled_by_asking_the_channel(client, services, wechat, payee, db):
    person = await login(client)
    unpaid = (await create_order(client, person, payee, 500)).json()
    paid_silently = (await create_order(client, person, payee, 700)).json()
    # The user pays, but the notification never arrives.
    await wechat.control("POST", f"_sandbox/trades/{paid_silently['out_trade_no']}/pay", {"deliver": False})
    for order in (unpaid, paid_silently):
        await _expire(db, order["id"])
    counts = await services.payments.orders.settle_stale(services.pool)
    assert counts["paid"] >= 1 and counts["closed"] >= 1
    statuses = {
        o["id"]: (await client.get(f"/api/v1/payments/orders/{o['id']}", headers=bearer(person))).json()[
            "status"
        ]
        for o in (unpaid, paid_silently)
    }
    assert statuses == {unpaid["id"]: "closed", paid_silently["id"]: "paid"}
    trade = await wechat.control("GET", f"_sandbox/trades/{unpaid['out_trade_no']}")
    assert "CLOSED" in json.dumps(trade), "the unpaid order is closed at the channel too"
    await ledger_ok(services)


async def test_a_channel_that_does_not_answer_leaves_the_order_for_the_next_run(
    client, services, wechat, payee, db
):
    person = await login(client)
    order = (await create_order(client, person, payee, 600)).json()
    await _expire(db, order["id"])
    await wechat.fault("pay/orderquery", "error")
    await services.payments.orders.settle_stale(services.pool)
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "waiting", "unknown stays unknown; the next run asks again"
    await services.payments.orders.settle_stale(services.pool)
    assert (await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))).json()[
        "status"
    ] == "closed"


async def test_a_subject_with_edge_whitespace_or_line_breaks_is_one_clean_line(
    client, services, wechat, payee, db
):
    """Issue 13 probe: " lead", "trail ", "\ttab" and "a\r\nb" made WeChat Pay refuse the signature and the
    server answer 500."""
    person = await login(client)
    for sent, kept in (
        (" 凤城河 夜游", "凤城河 夜游"),
        ("夜游 ", "夜游"),
        ("\t夜游", "夜游"),
        ("夜游\r\n船票", "夜游 船票"),
    ):
        made = await client.post(
            "/api/v1/payments/orders",
            headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
            json={**_ORDER, "payee_id": payee["organisation"]["id"], "subject": sent},
        )
        assert made.status_code == 201, (sent, made.text)
        assert (
            await db.fetchval(
                "SELECT subject FROM payments.orders WHERE id = $1", uuid.UUID(made.json()["id"])
            )
            == kept
        )
    blank = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={**_ORDER, "payee_id": payee["organisation"]["id"], "subject": " \t "},
    )
    assert blank.status_code == 400 and blank.json()["errors"][0]["field"] == "subject", blank.text


async def test_an_order_the_channel_refuses_is_a_502_and_nothing_is_kept(client, services, wechat, payee, db):
    person = await login(client)
    key = uuid.uuid4().hex
    await wechat.fault("pay/unifiedorder", "refuse", err_code="PARAM_ERROR")
    refused = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": key},
        json={**_ORDER, "payee_id": payee["organisation"]["id"]},
    )
    assert refused.status_code == 502, refused.text
    assert refused.json()["type"].endswith("/channel-refused")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payments.orders WHERE payer_id = $1", uuid.UUID(person["resident_id"])
        )
        == 0
    )
    again = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": key},
        json={**_ORDER, "payee_id": payee["organisation"]["id"]},
    )
    assert again.status_code == 201, again.text  # the refusal was not kept against the key


_ORDER = {
    "purpose": "ticket",
    "amount_fen": 1000,
    "subject": "凤城河夜游",
    "channel": "wechat",
    "method": "native",
}


def _refused(reason: str) -> float:
    labels = {"channel": "wechat", "reason": reason}
    return REGISTRY.get_sample_value("tzt_payment_notifications_refused_total", labels) or 0.0


async def test_every_field_that_identifies_us_is_checked(client, services, wechat, payee):
    """Issue 14: a correctly signed notification for our app and merchant, but for a sub-merchant's trade (a
    service provider's notification names one; we are a merchant of our own), was credited; another app or
    merchant is refused too. Each refusal is counted by the field."""
    person = await login(client)
    order = (await create_order(client, person, payee, 1000)).json()
    path = f"_sandbox/trades/{order['out_trade_no']}/notification"
    cases = {
        "sub_mch_id": {"sub_mch_id": "1900000109"},
        "appid": {"appid": "wx0000000000000000"},
        "mch_id": {"mch_id": "1900000999"},
    }
    before = {reason: _refused(reason) for reason in cases}
    for fields in cases.values():
        note = (await wechat.control("POST", path, {"deliver": False, "fields": fields}))["notification"]
        refused = await client.post(
            "/api/v1/payments/notify/wechat",
            content=note["body"],
            headers={"Content-Type": "application/xml"},
        )
        assert refused.status_code == 400 and b"FAIL" in refused.content, fields
    assert {reason: _refused(reason) - before[reason] for reason in cases} == dict.fromkeys(cases, 1)
    seen = await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))
    assert seen.json()["status"] == "waiting"
