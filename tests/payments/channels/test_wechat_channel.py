"""The WeChat Pay v2 adapter driving wechatpy against the local sandbox over real TCP.

The sandbox runs as `python -m payments.sandbox wechat --port P --state-dir D` in a subprocess, once per session;
every test uses trade numbers of its own, so they share it safely."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from payments.channels.base import (
    AgreementStatus,
    ChannelOrder,
    ChannelUnavailable,
    InvalidNotification,
    RefundStatus,
    TradeStatus,
)
from payments.channels.wechat import InvalidResponse, WechatChannel, WechatError
from payments.sandbox.launch import free_port as _free_port
from tests.paths import PROJECT
from tests.payments.sandboxes import WechatSandbox as Sandbox

ROOT = PROJECT
CST = dt.timezone(dt.timedelta(hours=8))
SANDBOX_MODULE = ("payments.sandbox", "wechat")
DEAD_URL = "http://127.0.0.1:9/notify"  # nothing listens: deliveries fail fast


def _no(prefix: str = "T") -> str:
    return prefix + uuid.uuid4().hex[:24]


def _order(out_trade_no: str, amount: int = 1000, method: str = "mini", **extra: Any) -> ChannelOrder:
    return ChannelOrder(
        out_trade_no=out_trade_no,
        amount_fen=amount,
        subject="泰州市 水费 2024-05",
        method=method,
        notify_url=DEAD_URL,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30),
        client_ip="10.1.2.3",
        payer_id=extra.pop("payer_id", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        **extra,
    )


async def _paid(sandbox: Sandbox, channel: WechatChannel, amount: int = 1000) -> str:
    out_trade_no = _no()
    await channel.create(_order(out_trade_no, amount))
    await sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    return out_trade_no


async def _eventually(check: Callable[[], Awaitable[Any]], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        await asyncio.sleep(0.05)


# -- orders --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign_type", ["HMAC-SHA256", "MD5"])
@pytest.mark.parametrize("method", ["mini", "jsapi"])
async def test_jsapi_order_gives_request_payment_params_that_pay(
    sandbox: Sandbox, sign_type: str, method: str
):
    channel = sandbox.channel(sign_type=sign_type)
    out_trade_no = _no()
    params = await channel.create(_order(out_trade_no, 1234, method))
    assert (params.channel, params.method) == ("wechat", method)
    assert set(params.params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params.params["package"].startswith("prepay_id=")
    assert params.params["signType"] == sign_type
    waiting = await channel.query(out_trade_no)
    assert waiting is not None and (waiting.status, waiting.amount_fen) == (TradeStatus.WAITING, 1234)

    # What wx.requestPayment does: the sandbox checks paySign as the WeChat client would, then pays.
    paid_body = await sandbox.control("POST", "/_sandbox/request-payment", {"params": params.params})
    note = channel.parse_notification(paid_body["notification"]["body"].encode(), "application/xml")
    assert (note.kind, note.status, note.amount_fen, note.out_trade_no) == (
        "payment",
        TradeStatus.PAID,
        1234,
        out_trade_no,
    )
    trade = await channel.query(out_trade_no)
    assert trade is not None
    assert (trade.status, trade.amount_fen, trade.channel_trade_no) == (
        TradeStatus.PAID,
        1234,
        note.channel_trade_no,
    )
    assert trade.paid_at is not None and trade.paid_at.utcoffset() == dt.timedelta(hours=8)
    assert trade.paid_at == note.paid_at


async def test_tampered_request_payment_params_do_not_pay(sandbox: Sandbox, hmac_channel: WechatChannel):
    out_trade_no = _no()
    params = dict((await hmac_channel.create(_order(out_trade_no))).params)
    params["nonceStr"] += "x"
    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        answer = await http.post("/_sandbox/request-payment", json={"params": params})
    assert answer.status_code == 400
    trade = await hmac_channel.query(out_trade_no)
    assert trade is not None and trade.status is TradeStatus.WAITING


async def test_app_and_native_orders(sandbox: Sandbox, hmac_channel: WechatChannel):
    app_no, native_no = _no(), _no()
    app = await hmac_channel.create(_order(app_no, 500, "app", payer_id=None))
    assert set(app.params) == {"appid", "partnerid", "prepayid", "package", "noncestr", "timestamp", "sign"}
    assert app.params["partnerid"] == sandbox.merchant["mch_id"] and app.params["package"] == "Sign=WXPay"
    await sandbox.control("POST", "/_sandbox/request-payment", {"params": app.params})
    app_trade = await hmac_channel.query(app_no)
    assert app_trade is not None and app_trade.status is TradeStatus.PAID

    native = await hmac_channel.create(_order(native_no, 700, "native", payer_id=None))
    assert native.params["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    shown = await sandbox.control("GET", f"/_sandbox/trades/{native_no}")
    assert (shown["trade_type"], shown["total_fee"], shown["state"]) == ("NATIVE", 700, "NOTPAY")


async def test_orders_need_the_payer_for_jsapi_and_a_known_method(hmac_channel: WechatChannel):
    with pytest.raises(ValueError, match="openid"):
        await hmac_channel.create(_order(_no(), method="mini", payer_id=None))
    with pytest.raises(ValueError, match="pay method"):
        await hmac_channel.create(_order(_no(), method="h5"))


async def test_create_again_is_the_same_order_and_a_changed_order_is_refused(hmac_channel: WechatChannel):
    out_trade_no = _no()
    first = await hmac_channel.create(_order(out_trade_no, 900))
    again = await hmac_channel.create(_order(out_trade_no, 900))
    assert first.params["package"] == again.params["package"]
    with pytest.raises(WechatError) as refused:
        await hmac_channel.create(_order(out_trade_no, 901))
    assert refused.value.code == "INVALID_REQUEST"


async def test_query_of_an_unknown_trade_is_none(hmac_channel: WechatChannel):
    assert await hmac_channel.query(_no()) is None


async def test_close_and_cancel(sandbox: Sandbox, hmac_channel: WechatChannel):
    out_trade_no = _no()
    await hmac_channel.create(_order(out_trade_no))
    await hmac_channel.close(out_trade_no)
    closed = await hmac_channel.query(out_trade_no)
    assert closed is not None and closed.status is TradeStatus.CLOSED
    await hmac_channel.close(out_trade_no)  # closing twice is a no-op
    await hmac_channel.close(_no())  # so is closing what WeChat never saw

    cancelled = _no()
    await hmac_channel.create(_order(cancelled))
    await sandbox.control("POST", f"/_sandbox/trades/{cancelled}/cancel")
    trade = await hmac_channel.query(cancelled)
    assert trade is not None and trade.status is TradeStatus.CLOSED

    paid = await _paid(sandbox, hmac_channel)
    with pytest.raises(WechatError) as refused:
        await hmac_channel.close(paid)
    assert refused.value.code == "ORDERPAID"


# -- what the channel answers, and when it does not ---------------------------------------------------------


@pytest.mark.parametrize("path", ["pay/orderquery", "pay/unifiedorder"])
async def test_a_tampered_answer_is_refused(sandbox: Sandbox, hmac_channel: WechatChannel, path: str):
    out_trade_no = _no()
    if path == "pay/orderquery":
        await hmac_channel.create(_order(out_trade_no))
    await sandbox.fault(path, "tamper")
    with pytest.raises(InvalidResponse):
        if path == "pay/orderquery":
            await hmac_channel.query(out_trade_no)
        else:
            await hmac_channel.create(_order(out_trade_no))
    assert issubclass(InvalidResponse, ChannelUnavailable)  # the outcome is unknown: query later
    if path == "pay/unifiedorder":  # the order was placed although its answer was refused
        await hmac_channel.create(_order(out_trade_no))
    trade = await hmac_channel.query(out_trade_no)
    assert trade is not None and trade.status is TradeStatus.WAITING


async def test_an_answer_signed_with_another_key_is_refused(sandbox: Sandbox):
    # The sandbox refuses requests signed with a wrong key (unsigned FAIL); a channel whose key differs from
    # the one the answer is signed with refuses the answer. Both show up here: the request is refused first.
    stranger = sandbox.channel(api_key="0" * 32)
    with pytest.raises(WechatError) as refused:
        await stranger.query(_no())
    assert refused.value.code == "FAIL" and "签名" in refused.value.message
    other_merchant = sandbox.channel(mch_id="1900000999")
    with pytest.raises(WechatError):
        await other_merchant.query(_no())


async def test_no_answer_is_channel_unavailable(sandbox: Sandbox, hmac_channel: WechatChannel):
    impatient = sandbox.channel(timeout=0.5)
    out_trade_no = _no()
    await hmac_channel.create(_order(out_trade_no))

    await sandbox.fault("pay/orderquery", "timeout", seconds=2.5)
    with pytest.raises(ChannelUnavailable):
        await impatient.query(out_trade_no)
    await sandbox.fault("pay/orderquery", "error")  # HTTP 500
    with pytest.raises(ChannelUnavailable):
        await hmac_channel.query(out_trade_no)
    await sandbox.fault("pay/orderquery", "refuse", err_code="SYSTEMERROR")
    with pytest.raises(ChannelUnavailable):
        await hmac_channel.query(out_trade_no)
    dead = sandbox.channel(api_base_url=f"http://127.0.0.1:{_free_port()}/", timeout=0.5)
    with pytest.raises(ChannelUnavailable):
        await dead.query(out_trade_no)
    trade = await hmac_channel.query(out_trade_no)  # the faults were one-shot
    assert trade is not None and trade.status is TradeStatus.WAITING


# -- refunds ---------------------------------------------------------------------------------------------------


async def test_partial_refunds_are_idempotent_and_capped(sandbox: Sandbox, hmac_channel: WechatChannel):
    out_trade_no = await _paid(sandbox, hmac_channel, 1000)
    first = await hmac_channel.refund(out_trade_no, out_trade_no + "R1", 300, 1000, "partial")
    assert (first.status, first.amount_fen) == (RefundStatus.PENDING, 300) and first.channel_refund_no
    again = await hmac_channel.refund(out_trade_no, out_trade_no + "R1", 300, 1000, "partial")
    assert again.channel_refund_no == first.channel_refund_no
    second = await hmac_channel.refund(out_trade_no, out_trade_no + "R2", 700, 1000, "the rest")
    assert second.status is RefundStatus.PENDING

    over = await hmac_channel.refund(out_trade_no, out_trade_no + "R3", 1, 1000, "too much")
    assert over.status is RefundStatus.FAILED
    changed = await hmac_channel.refund(out_trade_no, out_trade_no + "R1", 400, 1000, "other amount")
    assert changed.status is RefundStatus.FAILED

    shown = await sandbox.control("GET", f"/_sandbox/trades/{out_trade_no}")
    assert sorted(r["refund_fee"] for r in shown["refunds"]) == [300, 700]
    one = await hmac_channel.query_refund(out_trade_no, out_trade_no + "R1")
    assert one is not None
    assert (one.status, one.amount_fen, one.channel_refund_no) == (
        RefundStatus.SUCCEEDED,
        300,
        first.channel_refund_no,
    )
    assert await hmac_channel.query_refund(out_trade_no, out_trade_no + "R9") is None
    trade = await hmac_channel.query(out_trade_no)
    assert trade is not None and trade.status is TradeStatus.PAID  # REFUND: paid, with refunds


async def test_refund_of_an_unpaid_order_fails(hmac_channel: WechatChannel):
    out_trade_no = _no()
    await hmac_channel.create(_order(out_trade_no))
    refund = await hmac_channel.refund(out_trade_no, out_trade_no + "R1", 100, 1000, "unpaid")
    assert refund.status is RefundStatus.FAILED


async def test_a_refund_whose_answer_is_lost_is_retried_with_the_same_number(
    sandbox: Sandbox, hmac_channel: WechatChannel
):
    impatient = sandbox.channel(timeout=0.5)
    out_trade_no = await _paid(sandbox, hmac_channel, 800)
    await sandbox.fault("secapi/pay/refund", "timeout", seconds=2.5)
    with pytest.raises(ChannelUnavailable):
        await impatient.refund(out_trade_no, out_trade_no + "R1", 800, 800, "lost answer")
    retried = await hmac_channel.refund(out_trade_no, out_trade_no + "R1", 800, 800, "lost answer")
    assert retried.status is RefundStatus.PENDING
    shown = await sandbox.control("GET", f"/_sandbox/trades/{out_trade_no}")
    assert [r["refund_fee"] for r in shown["refunds"]] == [800]  # refunded once


async def test_refund_changes_and_refund_notifications(sandbox: Sandbox):
    channel = sandbox.channel(refund_notify_url=DEAD_URL)
    out_trade_no = await _paid(sandbox, channel, 600)
    await channel.refund(out_trade_no, out_trade_no + "R1", 250, 600, "refund")
    changed = await sandbox.control(
        "POST", f"/_sandbox/refunds/{out_trade_no}R1/status", {"refund_status": "CHANGE", "deliver": False}
    )
    note = channel.parse_notification(changed["notification"]["body"].encode(), "text/xml")
    assert (note.kind, note.status, note.amount_fen) == ("refund", RefundStatus.FAILED, 250)
    assert (note.out_trade_no, note.out_refund_no) == (out_trade_no, out_trade_no + "R1")
    refund = await channel.query_refund(out_trade_no, out_trade_no + "R1")
    assert refund is not None and refund.status is RefundStatus.FAILED

    ok = await sandbox.control(
        "POST", f"/_sandbox/refunds/{out_trade_no}R1/status", {"refund_status": "SUCCESS", "deliver": False}
    )
    note = channel.parse_notification(ok["notification"]["body"].encode(), "text/xml")
    assert note.status is RefundStatus.SUCCEEDED and note.paid_at is not None
    with pytest.raises(InvalidNotification):  # another merchant key cannot decrypt req_info
        sandbox.channel(api_key="1" * 32).parse_notification(ok["notification"]["body"].encode(), "text/xml")
    forged = ok["notification"]["body"].replace("<req_info><![CDATA[", "<req_info><![CDATA[AAAA")
    with pytest.raises(InvalidNotification):
        channel.parse_notification(forged.encode(), "text/xml")


# -- bills -----------------------------------------------------------------------------------------------------


async def test_bill_with_seeded_discrepancies_parses_exactly(sandbox: Sandbox, hmac_channel: WechatChannel):
    kept, dropped, short, costly, refunded = [
        await _paid(sandbox, hmac_channel, n * 1000) for n in range(1, 6)
    ]
    await hmac_channel.refund(refunded, refunded + "R1", 1250, 5000, "partial")
    shown = await sandbox.control("GET", f"/_sandbox/trades/{kept}")
    day = dt.datetime.strptime(shown["time_end"], "%Y%m%d%H%M%S").date()
    refund_shown = await sandbox.control("GET", f"/_sandbox/trades/{refunded}")
    refund_day = dt.datetime.strptime(refund_shown["refunds"][0]["success_time"], "%Y%m%d%H%M%S").date()
    ghost = _no("G")
    await sandbox.control(
        "POST",
        "/_sandbox/bill-edits",
        {
            "day": day.isoformat(),
            "edits": [
                {"op": "drop", "out_trade_no": dropped},
                {"op": "amount", "out_trade_no": short, "value": 2999},
                {"op": "fee", "out_trade_no": costly, "value": 99},
                {
                    "op": "status",
                    "out_trade_no": refunded,
                    "out_refund_no": refunded + "R1",
                    "value": "PROCESSING",
                },
                {"op": "add", "out_trade_no": ghost, "value": {"amount_fen": 4321, "fee_fen": 26}},
            ],
        },
    )
    lines = await hmac_channel.download_bill(day)
    ours = {kept, dropped, short, costly, refunded, ghost}
    mine = {(line.kind, line.out_trade_no): line for line in lines if line.out_trade_no in ours}
    if refund_day != day:  # pragma: no cover - the test ran across Beijing midnight
        pytest.skip("trades and refund fell on two bill days")
    assert set(mine) == {
        ("payment", kept),
        ("payment", short),
        ("payment", costly),
        ("payment", refunded),
        ("refund", refunded),
        ("payment", ghost),
    }
    assert (
        mine["payment", kept].amount_fen,
        mine["payment", kept].fee_fen,
        mine["payment", kept].status,
    ) == (
        1000,
        6,
        "paid",
    )
    assert mine["payment", short].amount_fen == 2999
    assert (mine["payment", costly].amount_fen, mine["payment", costly].fee_fen) == (4000, 99)
    refund_line = mine["refund", refunded]
    assert (refund_line.amount_fen, refund_line.fee_fen, refund_line.status, refund_line.out_refund_no) == (
        1250,
        -8,
        "pending",
        refunded + "R1",
    )
    assert (mine["payment", ghost].amount_fen, mine["payment", ghost].fee_fen) == (4321, 26)
    trade = await hmac_channel.query(kept)
    assert trade is not None and mine["payment", kept].channel_trade_no == trade.channel_trade_no
    assert all(line.day == day and line.at is not None and line.at.date() == day for line in mine.values())


async def test_a_day_without_trades_has_an_empty_bill(hmac_channel: WechatChannel):
    assert await hmac_channel.download_bill(dt.date(2001, 1, 1)) == []


# -- papay (transit withholding) -----------------------------------------------------------------------------


async def _signed_contract(sandbox: Sandbox, channel: WechatChannel) -> tuple[str, str]:
    code = _no("C")
    agreement = await channel.agreement_sign(code, "oRider" + code[-8:], DEAD_URL)
    assert agreement.status is AgreementStatus.PENDING and agreement.agreement_no is None
    assert agreement.sign_params["url"].startswith(sandbox.base_url + "papay/entrustweb?")
    assert agreement.sign_params["mini_program"]["extraData"]["contract_code"] == code
    pending = await channel.agreement_query(code)
    assert pending.status is AgreementStatus.PENDING

    async with httpx.AsyncClient() as http:  # the user opens the signing page and confirms
        confirmed = await http.get(agreement.sign_params["url"])
    assert confirmed.status_code == 200, confirmed.text
    note = channel.parse_notification(confirmed.json()["notification"]["body"].encode(), "text/xml")
    assert (note.kind, note.status, note.out_trade_no) == ("agreement", AgreementStatus.ACTIVE, code)
    active = await channel.agreement_query(code)
    assert active.status is AgreementStatus.ACTIVE and active.agreement_no == note.agreement_no
    assert active.agreement_no is not None
    return code, active.agreement_no


async def test_papay_contract_and_deductions(sandbox: Sandbox, hmac_channel: WechatChannel):
    code, contract_id = await _signed_contract(sandbox, hmac_channel)

    # Accepted, then paid by the channel on its own (the sandbox's default).
    auto = _no("D")
    accepted = await hmac_channel.deduct(contract_id, auto, 200, "公交 2 元", DEAD_URL)
    assert (accepted.status, accepted.amount_fen) == (TradeStatus.WAITING, 200)

    async def paid() -> bool:
        trade = await hmac_channel.query(auto)
        return trade is not None and trade.status is TradeStatus.PAID

    await _eventually(paid)

    # Accepted and held: WAITING until the control pays it; the notification says deduction/PAID.
    await sandbox.control("POST", f"/_sandbox/contracts/{code}/deductions", {"outcome": "accept"})
    held = _no("D")
    assert (await hmac_channel.deduct(contract_id, held, 350, "地铁", DEAD_URL)).status is TradeStatus.WAITING
    waiting = await hmac_channel.query(held)
    assert waiting is not None and waiting.status is TradeStatus.WAITING
    done = await sandbox.control("POST", f"/_sandbox/trades/{held}/pay", {"deliver": False})
    note = hmac_channel.parse_notification(done["notification"]["body"].encode(), "text/xml")
    assert (note.kind, note.status, note.amount_fen, note.agreement_no) == (
        "deduction",
        TradeStatus.PAID,
        350,
        contract_id,
    )

    # Accepted, then failed (not notified): only a query finds out.
    await sandbox.control(
        "POST", f"/_sandbox/contracts/{code}/deductions", {"outcome": "fail", "delay": 0.05}
    )
    failing = _no("D")
    assert (
        await hmac_channel.deduct(contract_id, failing, 400, "地铁", DEAD_URL)
    ).status is TradeStatus.WAITING

    async def failed() -> bool:
        trade = await hmac_channel.query(failing)
        return trade is not None and trade.status is TradeStatus.FAILED

    await _eventually(failed)

    # Refused outright.
    await sandbox.fault("pay/pappayapply", "refuse")  # NOTENOUGH
    refused = await hmac_channel.deduct(contract_id, _no("D"), 500, "地铁", DEAD_URL)
    assert refused.status is TradeStatus.FAILED

    # No answer: unknown, and the query afterwards finds the deduction the channel did accept.
    await sandbox.control("POST", f"/_sandbox/contracts/{code}/deductions", {"outcome": "accept"})
    lost = _no("D")
    await sandbox.fault("pay/pappayapply", "timeout", seconds=2.5)
    with pytest.raises(ChannelUnavailable):
        await sandbox.channel(timeout=0.5).deduct(contract_id, lost, 600, "地铁", DEAD_URL)
    found = await hmac_channel.query(lost)
    assert found is not None and found.status is TradeStatus.WAITING
    # Asking again with the same number does not deduct twice.
    assert (await hmac_channel.deduct(contract_id, lost, 600, "地铁", DEAD_URL)).status is TradeStatus.WAITING
    await sandbox.control("POST", f"/_sandbox/trades/{lost}/pay", {"deliver": False})
    assert (await hmac_channel.deduct(contract_id, lost, 600, "地铁", DEAD_URL)).status is TradeStatus.PAID


async def test_an_ended_contract_refuses_deductions(sandbox: Sandbox, hmac_channel: WechatChannel):
    code, contract_id = await _signed_contract(sandbox, hmac_channel)
    ended = await sandbox.control("POST", f"/_sandbox/contracts/{code}/terminate", {"deliver": False})
    note = hmac_channel.parse_notification(ended["notification"]["body"].encode(), "text/xml")
    assert (note.kind, note.status, note.agreement_no) == ("agreement", AgreementStatus.ENDED, contract_id)
    assert (await hmac_channel.agreement_query(code)).status is AgreementStatus.ENDED
    refused = await hmac_channel.deduct(contract_id, _no("D"), 200, "公交", DEAD_URL)
    assert refused.status is TradeStatus.FAILED


async def test_papay_with_an_md5_merchant(sandbox: Sandbox):
    channel = sandbox.channel(sign_type="MD5")
    _, contract_id = await _signed_contract(sandbox, channel)
    out_trade_no = _no("D")
    assert (
        await channel.deduct(contract_id, out_trade_no, 200, "公交", DEAD_URL)
    ).status is TradeStatus.WAITING


# -- notifications ---------------------------------------------------------------------------------------------


async def _notification(sandbox: Sandbox, out_trade_no: str, **body: Any) -> bytes:
    answer = await sandbox.control(
        "POST", f"/_sandbox/trades/{out_trade_no}/notification", {"deliver": False, **body}
    )
    assert answer["notification"]["content_type"] == "application/xml"
    return str(answer["notification"]["body"]).encode()


@pytest.mark.parametrize("sign_type", ["HMAC-SHA256", "MD5"])
async def test_valid_payment_notification(sandbox: Sandbox, sign_type: str):
    channel = sandbox.channel(sign_type=sign_type)
    out_trade_no = _no()
    await channel.create(_order(out_trade_no, 4567))
    paid = await sandbox.control(
        "POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False, "time_end": "20240501235959"}
    )
    note = channel.parse_notification(paid["notification"]["body"].encode(), "text/xml")
    assert (note.kind, note.app_id, note.out_trade_no, note.status, note.amount_fen) == (
        "payment",
        sandbox.merchant["appid"],
        out_trade_no,
        TradeStatus.PAID,
        4567,
    )
    assert note.channel_trade_no == paid["trade"]["transaction_id"]
    assert note.paid_at == dt.datetime(2024, 5, 1, 23, 59, 59, tzinfo=CST)
    assert note.raw["out_trade_no"] == out_trade_no
    # The same body parses the same every time (duplicates are for the state machine to absorb).
    assert channel.parse_notification(paid["notification"]["body"].encode(), "text/xml") == note


async def test_refused_notifications(sandbox: Sandbox, hmac_channel: WechatChannel):
    out_trade_no = _no()
    await hmac_channel.create(_order(out_trade_no, 1000))
    await sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    good = (await _notification(sandbox, out_trade_no)).decode()
    hmac_channel.parse_notification(good.encode(), "text/xml")

    sign_at = good.index("<sign><![CDATA[") + len("<sign><![CDATA[")
    bad_sign = good[:sign_at] + ("0" if good[sign_at] != "0" else "1") + good[sign_at + 1 :]
    tampered_fee = good.replace("<total_fee>1000</total_fee>", "<total_fee>1</total_fee>")
    assert tampered_fee != good
    cases = {
        "bad signature": bad_sign.encode(),
        "tampered total_fee": tampered_fee.encode(),
        "wrong appid": await _notification(sandbox, out_trade_no, fields={"appid": "wx0000000000000000"}),
        "wrong mch_id": await _notification(sandbox, out_trade_no, fields={"mch_id": "1900000999"}),
        "MD5 to an HMAC-SHA256 merchant": await _notification(sandbox, out_trade_no, sign_type="MD5"),
        "unsigned": good[: good.index("<sign>")].encode() + b"</xml>",
        "return_code FAIL": b"<xml><return_code>FAIL</return_code><return_msg>no</return_msg></xml>",
        "not XML": b"return_code=SUCCESS",
        "nested XML": b"<xml><return_code><a>SUCCESS</a></return_code></xml>",
        "entities": b'<!DOCTYPE x [<!ENTITY e "SUCCESS">]><xml><return_code>&e;</return_code></xml>',
    }
    for case, body in cases.items():
        with pytest.raises(InvalidNotification):
            hmac_channel.parse_notification(body, "text/xml")
            pytest.fail(f"accepted: {case}")
    md5 = sandbox.channel(sign_type="MD5")
    with pytest.raises(InvalidNotification):  # and the other way round
        md5.parse_notification(good.encode(), "text/xml")


async def test_a_failed_payment_notification_is_not_paid(sandbox: Sandbox, hmac_channel: WechatChannel):
    out_trade_no = _no()
    await hmac_channel.create(_order(out_trade_no, 1000))
    note = hmac_channel.parse_notification(
        await _notification(sandbox, out_trade_no, result_code="FAIL"), "x"
    )
    assert (note.kind, note.status, note.paid_at) == ("payment", TradeStatus.WAITING, None)


def test_acknowledgements(hmac_channel: WechatChannel):
    assert hmac_channel.acknowledge(True) == (
        b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>",
        "application/xml",
    )
    body, media = hmac_channel.acknowledge(False)
    assert media == "application/xml" and b"<return_code><![CDATA[FAIL]]></return_code>" in body


class _Receiver:
    """A merchant notify endpoint on real TCP that refuses the first delivery and takes the next."""

    def __init__(self, channel: WechatChannel) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append(body)
                try:
                    channel.parse_notification(body, self.headers.get("Content-Type", ""))
                    answer, media = channel.acknowledge(len(receiver.bodies) > 1)
                except InvalidNotification:
                    answer, media = channel.acknowledge(False)
                self.send_response(200)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify/wechat"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_notifications_are_delivered_and_retried_until_acknowledged(
    sandbox: Sandbox, hmac_channel: WechatChannel
):
    receiver = _Receiver(hmac_channel)
    try:
        out_trade_no = _no()
        order = _order(out_trade_no, 1500)
        await hmac_channel.create(dataclasses.replace(order, notify_url=receiver.url))
        await sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": True})

        async def delivered() -> list[dict[str, Any]]:
            log = await sandbox.control("GET", f"/_sandbox/notifications?out_trade_no={out_trade_no}")
            return [d for d in log["notifications"] if d["delivered"]]

        [delivery] = await _eventually(delivered)
        assert delivery["attempts"] == 2 and len(receiver.bodies) == 2
        assert receiver.bodies[0] == receiver.bodies[1] == delivery["body"].encode()

        # Duplicates, late: three copies of the same notification, each delivered on its first attempt.
        again = await sandbox.control(
            "POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": True, "copies": 3, "delay": 0.1}
        )

        async def all_delivered() -> bool:
            return len(await delivered()) == 4

        await _eventually(all_delivered)
        assert receiver.bodies[2:] == [again["notification"]["body"].encode()] * 3
    finally:
        receiver.close()
