"""Money through an app whose WeChat Pay merchant is configured for API v3, end to end over HTTP against the v3
sandbox: an order paid and its encrypted notification credited once however often it comes, refunds that keep
one number across a timeout, the day's v3 bill reconciled, forged notifications refused, the platform certificate
rotated, an order creation that timed out retried under the same number; the ledger holds after each."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from prometheus_client import REGISTRY

from payments.reconciliation.service import BUSINESS_TZ
from tests.helpers import bearer, login
from tests.paths import PROJECT
from tests.payments.helpers import signed_with_key
from tests.payments.sandboxes import WECHAT_TIMEOUT_S, WechatV3Sandbox

NOTIFY = "/api/v1/payments/notify/wechat"


async def _create(client: Any, person: dict[str, Any], payee: dict[str, Any], amount: int, key: str) -> Any:
    return await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": key},
        json={
            "purpose": "ticket",
            "amount_fen": amount,
            "subject": "凤城河夜游",
            "payee_id": payee["organisation"]["id"],
            "channel": "wechat",
            "method": "jsapi",
            "payer_channel_id": "o-openid-v3",
        },
    )


async def _post(client: Any, note: dict[str, Any]) -> Any:
    return await client.post(
        NOTIFY,
        content=note["body"].encode(),
        headers=note["headers"] | {"Content-Type": note["content_type"]},
    )


async def _balance(services: Any, account: str) -> int:
    async with services.pool.acquire() as conn:
        return await services.payments.ledger.balance(conn, account)


async def _ledger_ok(services: Any) -> None:
    async with services.pool.acquire() as conn:
        check = await services.payments.ledger.check(conn)
    assert check.ok, check


async def _status(client: Any, person: dict[str, Any], order_id: str) -> str:
    answer = await client.get(f"/api/v1/payments/orders/{order_id}", headers=bearer(person))
    return str(answer.json()["status"])


def _refused(reason: str) -> float:
    labels = {"channel": "wechat", "reason": reason}
    return REGISTRY.get_sample_value("tzt_payment_notifications_refused_total", labels) or 0.0


async def test_a_v3_order_is_paid_credited_once_refunded_once_and_reconciled(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    person = await login(client)
    created = await _create(client, person, v3_payee, 6000, uuid.uuid4().hex)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["pay"]["params"]["signType"] == "RSA" and order["pay"]["params"]["paySign"]
    note = (await v3.control("POST", "/_sandbox/request-payment", {"params": order["pay"]["params"]}))[
        "notification"
    ]

    clearing = await _balance(services, "channel_clearing:wechat")
    acks = await asyncio.gather(*(_post(client, note) for _ in range(10)))
    assert {a.status_code for a in acks} == {200}, [a.text for a in acks]
    assert {json.loads(a.content)["code"] for a in acks} == {"SUCCESS"}
    assert await _balance(services, "channel_clearing:wechat") - clearing == 6000 - 36, "credited once"
    assert await _status(client, person, order["id"]) == "paid"
    await _ledger_ok(services)

    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    part = await signed_with_key(client, v3_payee, path, {"amount_fen": 1000, "reason": "部分退票"})
    assert part.status_code == 201, part.text

    # The refund call times out after WeChat took it: the retry with the same key asks with the same number.
    await v3.fault("refund", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await signed_with_key(client, v3_payee, path, {"amount_fen": 3000}, key="v3-timeout-refund-1")
    assert first.status_code in (202, 503), first.text
    again = await signed_with_key(client, v3_payee, path, {"amount_fen": 3000}, key="v3-timeout-refund-1")
    assert again.status_code == 201, again.text
    assert again.json()["out_refund_no"] == first.json()["out_refund_no"]
    held = (await v3.control("GET", f"/_sandbox/trades/{order['out_trade_no']}"))["refunds"]
    assert sorted((r["out_refund_no"], r["refund"]) for r in held) == sorted(
        [(part.json()["out_refund_no"], 1000), (first.json()["out_refund_no"], 3000)]
    ), "WeChat holds each refund once"
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    async with services.pool.acquire() as conn:
        refunds = await conn.fetch(
            "SELECT r.out_refund_no, r.status FROM payments.refunds r JOIN payments.orders o ON o.id = r.order_id "
            "WHERE o.out_trade_no = $1",
            order["out_trade_no"],
        )
        refunded = await conn.fetchval(
            "SELECT refunded_fen FROM payments.orders WHERE id = $1", uuid.UUID(order["id"])
        )
    assert {r["status"] for r in refunds} == {"succeeded"} and len(refunds) == 2 and refunded == 4000
    await _ledger_ok(services)

    # The day's v3 bill: the payment and both refunds, each matched.
    today = dt.datetime.now(BUSINESS_TZ).date()
    report = await services.payments.reconciliation.run(today, ["wechat"])
    (wechat,) = report.channels
    assert wechat.status != "failed", wechat
    assert [d for d in wechat.differences if d.out_trade_no == order["out_trade_no"]] == []
    await _ledger_ok(services)


async def test_a_past_day_v3_bill_balances_and_an_edited_line_is_a_difference(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    person = await login(client)
    day, edited_day = dt.date(2002, 5, 20), dt.date(2002, 6, 11)
    nos = []
    for when, amount in ((day, 1200), (edited_day, 1300)):
        order = (await _create(client, person, v3_payee, amount, uuid.uuid4().hex)).json()
        note = await v3.pay(order["out_trade_no"], time_end=when.strftime("%Y%m%d") + "101500")
        assert (await _post(client, note)).status_code == 200
        nos.append(order["out_trade_no"])
    await v3.control(
        "POST",
        "/_sandbox/bill-edits",
        {"day": edited_day.isoformat(), "edits": [{"op": "amount", "out_trade_no": nos[1], "value": 1301}]},
    )
    (clean,) = (await services.payments.reconciliation.run(day, ["wechat"])).channels
    assert (clean.status, clean.differences) == ("balanced", []), clean
    (edited,) = (await services.payments.reconciliation.run(edited_day, ["wechat"])).channels
    assert [(d.klass, d.out_trade_no) for d in edited.differences] == [("amount_over", nos[1])]
    async with services.pool.acquire() as conn:
        check = await services.payments.ledger.check(conn, against_bills=True)
    # The clean day's final bill agrees with clearing; the edited day's disagrees, and the check says so.
    assert check.channel_days_checked >= 1
    assert not any(str(day) in problem for problem in check.channel_days), check
    assert any(str(edited_day) in problem for problem in check.channel_days), check


async def test_forged_v3_notifications_are_refused_and_nothing_is_credited(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    person = await login(client)
    order = (await _create(client, person, v3_payee, 1000, uuid.uuid4().hex)).json()
    await v3.pay(order["out_trade_no"])  # paid at WeChat; only genuine notifications may tell us
    clearing = await _balance(services, "channel_clearing:wechat")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"forge": "signature"}, "invalid"),
        ({"forge": "ciphertext"}, "invalid"),
        ({"forge": "apiv3_key"}, "invalid"),
        ({"forge": "serial"}, "invalid"),
        ({"fields": {"mchid": "1900000999"}}, "mchid"),
        ({"fields": {"appid": "wx0000000000000000"}}, "appid"),
        ({"fields": {"sub_mchid": "1900000109"}}, "sub_mchid"),
    ]
    for options, reason in cases:
        before = _refused(reason)
        forged = await v3.notification(order["out_trade_no"], **options)
        refused = await _post(client, forged)
        assert refused.status_code == 400, (options, refused.text)
        assert json.loads(refused.content)["code"] == "FAIL"
        assert _refused(reason) - before == 1, options
    unsigned = await v3.notification(order["out_trade_no"])
    bare = await client.post(NOTIFY, content=unsigned["body"], headers={"Content-Type": "application/json"})
    assert bare.status_code == 400
    assert await _status(client, person, order["id"]) == "waiting"
    assert await _balance(services, "channel_clearing:wechat") == clearing
    await _ledger_ok(services)


async def test_a_rotated_platform_certificate_is_accepted_after_the_app_refreshes(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    person = await login(client)
    first = (await _create(client, person, v3_payee, 800, uuid.uuid4().hex)).json()
    assert (await _post(client, await v3.pay(first["out_trade_no"]))).status_code == 200
    rotated = await v3.control("POST", "/_sandbox/platform-certificates/rotate", {"retire_old": True})
    downloads = await v3.certificate_downloads()
    second = (await _create(client, person, v3_payee, 900, uuid.uuid4().hex)).json()
    # The order's answer is signed by the new certificate: the app downloaded the list once to verify it.
    assert await v3.certificate_downloads() == downloads + 1
    note = await v3.pay(second["out_trade_no"])
    assert note["headers"]["Wechatpay-Serial"] == rotated["current"]
    assert (await _post(client, note)).status_code == 200
    assert await _status(client, person, second["id"]) == "paid"
    assert await v3.certificate_downloads() == downloads + 1
    await _ledger_ok(services)


async def test_a_v3_order_retried_after_a_timeout_keeps_its_number(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    person = await login(client)
    await v3.fault("pay", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await _create(client, person, v3_payee, 1500, "v3-order-timeout-1")
    assert first.status_code == 503 and first.headers["Retry-After"], first.text
    async with services.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT out_trade_no, status FROM payments.orders WHERE payee_id = $1",
            uuid.UUID(v3_payee["organisation"]["id"]),
        )
    assert [r["status"] for r in stored] == ["waiting"]
    again = await _create(client, person, v3_payee, 1500, "v3-order-timeout-1")
    assert again.status_code == 201, again.text
    assert again.json()["out_trade_no"] == stored[0]["out_trade_no"]
    trade = await v3.control("GET", f"/_sandbox/trades/{stored[0]['out_trade_no']}")
    assert again.json()["pay"]["params"]["package"] == f"prepay_id={trade['prepay_id']}"
    await _ledger_ok(services)


async def test_a_v3_merchant_answers_withholding_with_a_clear_refusal(v3_client, v3_services):
    person = await login(v3_client)
    answer = await v3_client.post(
        "/api/v1/payments/transit/agreements",
        headers=bearer(person),
        json={"channel": "wechat", "payer_channel_id": "o-openid-v3"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "channel" and "v2 only" in answer.json()["detail"]


async def test_tzt_reconcile_reads_a_v3_merchants_bill(
    v3_client, v3_services, v3_settings, wechat_v3_sandbox: WechatV3Sandbox, v3_payee
):
    day = dt.date(2002, 7, 3)
    person = await login(v3_client)
    nos = []
    for amount in (2000, 3000):
        order = (await _create(v3_client, person, v3_payee, amount, uuid.uuid4().hex)).json()
        note = await wechat_v3_sandbox.pay(order["out_trade_no"], time_end=day.strftime("%Y%m%d") + "110000")
        assert (await _post(v3_client, note)).status_code == 200
        nos.append(order["out_trade_no"])
    await wechat_v3_sandbox.control(
        "POST",
        "/_sandbox/bill-edits",
        {"day": day.isoformat(), "edits": [{"op": "amount", "out_trade_no": nos[1], "value": 2990}]},
    )
    env = {
        **os.environ,
        "DATABASE_URL": v3_settings.database_url,
        "REDIS_URL": v3_settings.redis_url,
        "TZT_DATA_DIR": str(v3_settings.data_dir),
        "TZT_ENV": "test",
        "TZT_PAYMENT_CONFIG": str(v3_settings.payment_config),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app_backend.composition.cli", "reconcile", "--date", day.isoformat()],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wechat: differences - bill lines 2, ours 2, matched 1, differences 1" in done.stdout, done.stdout
    (line,) = [line for line in done.stdout.splitlines() if nos[1] in line]
    assert line.split()[:3] == ["amount_short", "payment", nos[1]]
