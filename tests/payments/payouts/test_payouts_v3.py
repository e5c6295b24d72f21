"""Payouts of a city whose WeChat Pay merchant is configured for API v3, end to end over HTTP against the v3
sandbox: a WeChat payee's settlement is paid by 商家转账 once and booked once whatever the retries, timeouts and the
time the bill takes; a name that is not the payee's fails the bill and leaves the money owed until the account is
fixed; a bill the payee never confirms is cancelled and the money stays owed; the ledger holds after each."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import bearer, login
from tests.payments.helpers import create_order, ledger_ok
from tests.payments.payouts.helpers import (
    balance,
    merchant,
    new_account,
    pay,
    register,
    set_account,
    settle,
    transfers_to,
)
from tests.payments.sandboxes import WECHAT_TIMEOUT_S, WechatV3Sandbox


async def _due(client: Any, services: Any, v3: WechatV3Sandbox, payee: dict[str, Any], amount: int) -> Any:
    """The payee's settlement due after one order paid through the v3 merchant."""
    person = await login(client)
    created = await create_order(client, person, payee, amount)
    assert created.status_code == 201, created.text
    note = await v3.pay(created.json()["out_trade_no"])
    ack = await client.post(
        "/api/v1/payments/notify/wechat",
        content=note["body"].encode(),
        headers=note["headers"] | {"Content-Type": note["content_type"]},
    )
    assert ack.status_code == 200, ack.text
    *_, due = await settle(services, payee)
    assert due.status == "due" and due.payout_fen > 0
    return due


async def _settlement(services: Any, payee: dict[str, Any], settlement_id: Any) -> Any:
    (found,) = [s for s in await settle(services, payee) if s.id == settlement_id]
    return found


async def _payouts(client: Any, payee: dict[str, Any], settlement_id: Any) -> list[dict[str, Any]]:
    answer = await client.get(
        f"/api/v1/admin/settlements/{settlement_id}/payouts", headers=bearer(payee["admin"])
    )
    assert answer.status_code == 200, answer.text
    payouts: list[dict[str, Any]] = answer.json()["payouts"]
    return payouts


async def test_a_v3_merchants_payee_is_paid_by_transfer_once_and_booked_once(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    payee = await merchant(client, services)
    organisation = payee["organisation"]["id"]
    account = new_account("wechat")
    await register(v3, account["account"], account["name"])
    await set_account(client, payee, account)
    due = await _due(client, services, v3, payee, 5_000)
    payouts_before = await balance(services, "channel_payouts:wechat")

    # WeChat accepts the bill (ACCEPTED) and pays it a moment later: pending at first, nothing booked yet.
    first = await pay(client, payee, due.id)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "pending" and first.headers["Retry-After"]
    assert (await _settlement(services, payee, due.id)).status == "due"

    again = await pay(client, payee, due.id)
    assert again.status_code == 200, again.text
    payout = again.json()
    assert (payout["status"], payout["out_biz_no"], payout["amount_fen"]) == (
        "succeeded",
        first.json()["out_biz_no"],
        due.payout_fen,
    )
    assert payout["channel_order_id"] and payout["account"] != account["account"]
    held = await transfers_to(v3, account["account"])
    assert [t["out_biz_no"] for t in held["transfers"]] == [payout["out_biz_no"]]
    assert held["paid_fen"] == due.payout_fen and held["transfers"][0]["name"] == account["name"]

    settled = await _settlement(services, payee, due.id)
    assert (settled.status, settled.payout_ref) == ("paid", payout["channel_order_id"])
    assert (await pay(client, payee, due.id)).json()["out_biz_no"] == payout["out_biz_no"]
    assert (await transfers_to(v3, account["account"]))["paid_fen"] == due.payout_fen, (
        "asked again, paid once"
    )
    assert await balance(services, f"payout_due:{organisation}") == 0
    assert await balance(services, "channel_payouts:wechat") == payouts_before - due.payout_fen
    async with services.pool.acquire() as conn:
        entries = await conn.fetchval(
            "SELECT count(*) FROM payments.ledger_entries WHERE ref = $1", f"payout:{due.id}"
        )
    assert entries == 1
    await services.payments.payouts.confirm(services.pool)
    (confirmed,) = await _payouts(client, payee, due.id)
    assert confirmed["channel_status"] == "succeeded"
    await ledger_ok(services)


@pytest.mark.parametrize("process", [True, False], ids=["made", "never-made"])
async def test_a_v3_transfer_whose_answer_never_came_is_settled_under_its_own_number(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox, process
):
    """No answer: 202, and the job asks WeChat about the number; a bill it holds is followed to its end, a
    number it never received is sent again as it was, and either way the payee is paid once under one number."""
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    payee = await merchant(client, services)
    account = new_account("wechat")
    await set_account(client, payee, account)
    due = await _due(client, services, v3, payee, 3_000)

    await v3.fault("transfer", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=process)
    first = await pay(client, payee, due.id)
    assert first.status_code == 202, first.text
    number = first.json()["out_biz_no"]
    assert len((await transfers_to(v3, account["account"]))["transfers"]) == (1 if process else 0)

    for _ in range(2):  # a bill sent again is ACCEPTED first, then SUCCESS at the next run
        await services.payments.payouts.settle_pending(services.pool)
    (payout,) = await _payouts(client, payee, due.id)
    assert (payout["status"], payout["out_biz_no"]) == ("succeeded", number)
    held = await transfers_to(v3, account["account"])
    assert [t["out_biz_no"] for t in held["transfers"]] == [number] and held["paid_fen"] == due.payout_fen
    assert (await _settlement(services, payee, due.id)).status == "paid"
    await ledger_ok(services)


async def test_a_v3_bill_for_another_name_fails_and_the_money_stays_owed_until_the_account_is_fixed(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    payee = await merchant(client, services)
    organisation = payee["organisation"]["id"]
    account = new_account("wechat", name="李四")
    await register(v3, account["account"], "张三")  # the openid's holder is someone else by name
    await set_account(client, payee, account)
    due = await _due(client, services, v3, payee, 6_000)

    refused = await pay(client, payee, due.id)
    assert refused.status_code == 200, refused.text
    assert refused.json()["status"] == "failed" and "NAME_NOT_CORRECT" in refused.json()["failure"]
    assert (await _settlement(services, payee, due.id)).status == "due"
    assert await balance(services, f"payout_due:{organisation}") == -due.payout_fen, "the money is still owed"
    await services.payments.payouts.send_due(services.pool)
    assert len(await _payouts(client, payee, due.id)) == 1, "the same refusal would follow: nothing sent"
    await ledger_ok(services)

    await set_account(client, payee, {**account, "name": "张三"})
    await services.payments.payouts.send_due(services.pool)
    await services.payments.payouts.settle_pending(services.pool)
    first, second = await _payouts(client, payee, due.id)
    assert (first["status"], second["status"]) == ("failed", "succeeded")
    assert second["out_biz_no"] != first["out_biz_no"], "a new number, once the old one is known failed"
    held = await transfers_to(v3, account["account"])
    assert held["paid_fen"] == due.payout_fen, "paid once, under the second number"
    assert (await _settlement(services, payee, due.id)).status == "paid"
    assert await balance(services, f"payout_due:{organisation}") == 0
    await ledger_ok(services)


async def test_a_v3_bill_the_payee_never_confirms_is_cancelled_and_the_money_stays_owed(
    v3_client, v3_services, wechat_v3_sandbox: WechatV3Sandbox
):
    client, services, v3 = v3_client, v3_services, wechat_v3_sandbox
    payee = await merchant(client, services)
    account = new_account("wechat")
    await v3.control(
        "POST", f"/_sandbox/payees/{account['account']}", {"name": account["name"], "confirm": True}
    )
    await set_account(client, payee, account)
    due = await _due(client, services, v3, payee, 2_000)

    waiting = await pay(client, payee, due.id)
    assert waiting.status_code == 202 and waiting.json()["status"] == "pending"
    await services.payments.payouts.settle_pending(services.pool)
    assert (await _payouts(client, payee, due.id))[0]["status"] == "pending", "waiting for the payee"
    assert (await _settlement(services, payee, due.id)).status == "due"

    # 24 hours without the payee's confirmation: WeChat cancels the bill; no money moved under its number.
    await v3.control(
        "POST", f"/_sandbox/transfers/{waiting.json()['out_biz_no']}/state", {"state": "CANCELLED"}
    )
    await services.payments.payouts.settle_pending(services.pool)
    (payout,) = await _payouts(client, payee, due.id)
    assert payout["status"] == "failed" and payout["failure"] == "OVERDUE_CLOSE"
    assert (await _settlement(services, payee, due.id)).status == "due"
    assert (await transfers_to(v3, account["account"]))["paid_fen"] == 0
    await ledger_ok(services)
