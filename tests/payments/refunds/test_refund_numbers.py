"""One refund number per refund, for life: a refund whose channel call timed out, whose answer was lost in a crash,
or that is retried concurrently is the same refund at the channel, settled by querying its number; the order, the
ledger and the channel agree after each scenario."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from payments.refunds.schemas import RefundCreate
from tests.helpers import bearer, login, machine_credential
from tests.payments.helpers import ledger_ok, paid_order, signed_with_key
from tests.payments.sandboxes import ALIPAY_TIMEOUT_S, WECHAT_TIMEOUT_S, AlipaySandbox, WechatSandbox

FORM = "application/x-www-form-urlencoded; charset=utf-8"


async def _alipay_paid_order(
    client: Any, services: Any, alipay: AlipaySandbox, payee: dict[str, Any], amount: int = 6000
) -> dict[str, Any]:
    person = await login(client)
    order = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "non_tax_fee",
            "amount_fen": amount,
            "subject": "泰州市不动产登记费",
            "payee_id": payee["organisation"]["id"],
            "channel": "alipay",
            "method": "native",
        },
    )
    assert order.status_code == 201, order.text
    out_trade_no = order.json()["out_trade_no"]
    await alipay.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    note = await alipay.control("POST", f"/_sandbox/trades/{out_trade_no}/notification", {"deliver": False})
    ack = await client.post(
        "/api/v1/payments/notify/alipay", content=note["notification"]["body"], headers={"Content-Type": FORM}
    )
    assert ack.status_code == 200 and ack.content == b"success", ack.text
    return dict(order.json())


async def _channel_refunds(sandbox: WechatSandbox | AlipaySandbox, out_trade_no: str) -> list[dict[str, Any]]:
    trade = await sandbox.control("GET", f"/_sandbox/trades/{out_trade_no}")
    return list(trade["refunds"])


async def _order_refunded(services: Any, order_id: str) -> int:
    async with services.pool.acquire() as conn:
        return int(
            await conn.fetchval("SELECT refunded_fen FROM payments.orders WHERE id = $1", uuid.UUID(order_id))
        )


async def _refund_rows(services: Any, order_id: str) -> list[Any]:
    async with services.pool.acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT out_refund_no, amount_fen, status FROM payments.refunds WHERE order_id = $1",
                uuid.UUID(order_id),
            )
        )


async def _refund_postings(services: Any, order_id: str) -> int:
    async with services.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM payments.ledger_entries e JOIN payments.refunds r
                   ON e.ref = 'refund:' || r.id WHERE r.order_id = $1""",
                uuid.UUID(order_id),
            )
        )


async def test_a_wechat_refund_retried_after_a_timeout_refunds_once(client, services, wechat, payee):
    """The issue's reproduction: the refund call times out after WeChat processed it; the retry with the same key
    used to send a new refund number, and WeChat held two refunds while the order and the ledger recorded one."""
    _, order = await paid_order(client, services, wechat, payee, amount=6000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    first = await signed_with_key(client, payee, path, {"amount_fen": 3000}, key="wx-timeout-refund-1")
    assert first.status_code in (202, 503), first.text

    again = await signed_with_key(client, payee, path, {"amount_fen": 3000}, key="wx-timeout-refund-1")
    assert again.status_code == 201, again.text
    assert again.json()["out_refund_no"] == first.json()["out_refund_no"]
    assert again.json()["status"] == "succeeded"
    held = await _channel_refunds(wechat, order["out_trade_no"])
    assert [(r["out_refund_no"], r["refund_fee"]) for r in held] == [(first.json()["out_refund_no"], 3000)]
    assert await _order_refunded(services, order["id"]) == 3000
    assert await _refund_postings(services, order["id"]) == 1
    await ledger_ok(services)


async def test_an_alipay_refund_retried_after_a_timeout_refunds_once(client, services, alipay, payee):
    order = await _alipay_paid_order(client, services, alipay, payee)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await alipay.fault("alipay.trade.refund", "timeout", delay_s=ALIPAY_TIMEOUT_S + 2)
    first = await signed_with_key(client, payee, path, {"amount_fen": 3000}, key="ali-timeout-refund-1")
    assert first.status_code in (202, 503), first.text
    again = await signed_with_key(client, payee, path, {"amount_fen": 3000}, key="ali-timeout-refund-1")
    assert again.status_code == 201, again.text
    assert again.json()["out_refund_no"] == first.json()["out_refund_no"]
    assert again.json()["status"] == "succeeded"
    held = await _channel_refunds(alipay, order["out_trade_no"])
    assert [(r["out_request_no"], r["amount_fen"]) for r in held] == [(first.json()["out_refund_no"], 3000)]
    assert await _order_refunded(services, order["id"]) == 3000
    assert await _refund_postings(services, order["id"]) == 1
    await ledger_ok(services)


async def test_a_refund_whose_answer_is_lost_is_settled_by_the_job_with_its_own_number(
    client, services, alipay, payee
):
    """A crash between the channel call and the commit: Alipay refunded, our process died before recording it.
    The job queries the refund's number and posts it once; a later retry of the key sees it, and nothing more."""
    order = await _alipay_paid_order(client, services, alipay, payee)
    await alipay.fault("alipay.trade.refund", "timeout", delay_s=ALIPAY_TIMEOUT_S + 2)
    payee_id = uuid.UUID(payee["organisation"]["id"])
    asking = asyncio.create_task(
        services.payments.refunds.refund(
            services.pool,
            payee_id,
            uuid.UUID(order["id"]),
            "ali-crash-refund-1",
            RefundCreate(amount_fen=2500),
        )
    )
    for _ in range(500):  # until Alipay holds the refund (its answer is held back past our timeout)
        if await _channel_refunds(alipay, order["out_trade_no"]):
            break
        await asyncio.sleep(0.01)
    asking.cancel()  # the worker dies with the answer on its way
    await asyncio.gather(asking, return_exceptions=True)
    rows = await _refund_rows(services, order["id"])
    assert [(r["amount_fen"], r["status"]) for r in rows] == [(2500, "pending")]
    assert await _order_refunded(services, order["id"]) == 2500, "a pending refund keeps its amount reserved"

    assert await services.payments.refunds.settle_pending_refunds(services.pool) >= 1
    rows = await _refund_rows(services, order["id"])
    assert [(r["amount_fen"], r["status"]) for r in rows] == [(2500, "succeeded")]
    held = await _channel_refunds(alipay, order["out_trade_no"])
    assert [r["out_request_no"] for r in held] == [rows[0]["out_refund_no"]]
    assert await _refund_postings(services, order["id"]) == 1
    await ledger_ok(services)

    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    again = await signed_with_key(client, payee, path, {"amount_fen": 2500}, key="ali-crash-refund-1")
    assert again.status_code == 201 and again.json()["status"] == "succeeded", again.text
    assert len(await _channel_refunds(alipay, order["out_trade_no"])) == 1


async def test_a_refund_call_that_never_reached_wechat_is_asked_again_with_the_same_number(
    client, services, wechat, payee
):
    """The call timed out before WeChat processed it: the query finds no such refund, so the job asks for it
    again, with the number the refund was given, once."""
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=False)
    first = await signed_with_key(client, payee, path, {"amount_fen": 400})
    assert first.status_code in (202, 503), first.text
    assert await _channel_refunds(wechat, order["out_trade_no"]) == []
    await services.payments.refunds.settle_pending_refunds(services.pool)
    held = await _channel_refunds(wechat, order["out_trade_no"])
    assert [r["out_refund_no"] for r in held] == [first.json()["out_refund_no"]]
    # WeChat's refund is accepted, then reported by query: the next run settles it.
    await services.payments.refunds.settle_pending_refunds(services.pool)
    rows = await _refund_rows(services, order["id"])
    assert [(r["out_refund_no"], r["status"]) for r in rows] == [(first.json()["out_refund_no"], "succeeded")]
    assert await _refund_postings(services, order["id"]) == 1
    await ledger_ok(services)


async def test_concurrent_retries_of_one_key_make_one_channel_refund(client, services, wechat, payee):
    _, order = await paid_order(client, services, wechat, payee, amount=2000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=True)
    answers = await asyncio.gather(
        *(
            signed_with_key(client, payee, path, {"amount_fen": 700}, key="wx-concurrent-refund")
            for _ in range(6)
        )
    )
    assert {a.status_code for a in answers} <= {201, 202}, [a.text for a in answers]
    assert len({a.json()["out_refund_no"] for a in answers}) == 1
    held = await _channel_refunds(wechat, order["out_trade_no"])
    assert [r["refund_fee"] for r in held] == [700]
    await services.payments.refunds.settle_pending_refunds(services.pool)
    assert [r["status"] for r in await _refund_rows(services, order["id"])] == ["succeeded"]
    assert await _order_refunded(services, order["id"]) == 700
    assert await _refund_postings(services, order["id"]) == 1
    await ledger_ok(services)


async def test_a_pending_refund_counts_against_what_can_still_be_refunded(client, services, wechat, payee):
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "timeout", seconds=WECHAT_TIMEOUT_S + 2, process=False)
    pending = await signed_with_key(client, payee, path, {"amount_fen": 600})
    assert pending.status_code == 202 and pending.json()["order_refunded_fen"] == 600, pending.text
    over = await signed_with_key(client, payee, path, {"amount_fen": 500})
    assert over.status_code == 409, over.text
    assert over.json()["errors"][0]["field"] == "amount_fen" and "400" in over.json()["detail"]
    rest = await signed_with_key(client, payee, path, {"amount_fen": 400})
    assert rest.status_code == 201, rest.text
    await services.payments.refunds.settle_pending_refunds(services.pool)
    await services.payments.refunds.settle_pending_refunds(services.pool)
    held = await _channel_refunds(wechat, order["out_trade_no"])
    assert sorted(r["refund_fee"] for r in held) == [400, 600]
    assert await _order_refunded(services, order["id"]) == 1000
    await ledger_ok(services)


async def test_a_refused_refund_fails_and_frees_its_amount(client, services, wechat, alipay, payee):
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "refuse", err_code="NOTENOUGH")
    refused = await signed_with_key(client, payee, path, {"amount_fen": 1000})
    assert refused.status_code == 201, refused.text
    assert refused.json()["status"] == "failed" and refused.json()["order_refunded_fen"] == 0
    assert await _channel_refunds(wechat, order["out_trade_no"]) == []
    whole = await signed_with_key(client, payee, path, {"amount_fen": 1000})
    assert whole.status_code == 201 and whole.json()["order_refunded_fen"] == 1000, whole.text
    assert whole.json()["out_refund_no"] != refused.json()["out_refund_no"], "a new refund, a new number"

    alipay_order = await _alipay_paid_order(client, services, alipay, payee, amount=800)
    alipay_path = f"/api/v1/payments/orders/{alipay_order['id']}/refunds"
    await alipay.fault("alipay.trade.refund", "refuse")
    refused = await signed_with_key(client, payee, alipay_path, {"amount_fen": 800})
    assert refused.status_code == 201 and refused.json()["status"] == "failed", refused.text
    assert await _order_refunded(services, alipay_order["id"]) == 0
    await ledger_ok(services)


async def test_another_payee_cannot_read_a_refund_through_a_reused_key(client, services, wechat, payee):
    """Keys are per payee: another payee's same key is its own (and its order is not found)."""
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    stranger = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    mine = await signed_with_key(client, payee, path, {"amount_fen": 100}, key="shared-refund-key")
    assert mine.status_code == 201, mine.text
    theirs = await signed_with_key(client, stranger, path, {"amount_fen": 100}, key="shared-refund-key")
    assert theirs.status_code == 404, theirs.text
    other_body = await signed_with_key(client, payee, path, {"amount_fen": 101}, key="shared-refund-key")
    assert other_body.status_code == 422 and other_body.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_a_wechat_systemerror_is_an_unknown_outcome_not_a_refusal(client, services, wechat, payee):
    """WeChat answers SYSTEMERROR when it does not know yet and documents "retry with the same out_refund_no":
    the refund stays pending with its amount reserved, and the retry asks for the same number."""
    _, order = await paid_order(client, services, wechat, payee, amount=1000)
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    await wechat.fault("secapi/pay/refund", "refuse", err_code="SYSTEMERROR")
    first = await signed_with_key(client, payee, path, {"amount_fen": 1000}, key="wx-systemerror-refund")
    assert first.status_code == 202 and first.json()["status"] == "pending", first.text
    assert first.json()["order_refunded_fen"] == 1000
    again = await signed_with_key(client, payee, path, {"amount_fen": 1000}, key="wx-systemerror-refund")
    assert again.status_code == 201, again.text
    held = await _channel_refunds(wechat, order["out_trade_no"])
    assert [r["out_refund_no"] for r in held] == [first.json()["out_refund_no"]]
    await services.payments.refunds.settle_pending_refunds(services.pool)
    assert [r["status"] for r in await _refund_rows(services, order["id"])] == ["succeeded"]
    await ledger_ok(services)
