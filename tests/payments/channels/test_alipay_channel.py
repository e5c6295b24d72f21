"""The Alipay adapter driving alipay-sdk-python's request classes and signer against the local sandbox over real TCP.

The sandbox runs as `python -m payments.sandbox alipay --port P --state-dir D` in a subprocess, once per session;
the test reads the demo keys from D. Every test uses trade numbers of its own, so tests share the sandbox safely."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payments.channels.alipay import AlipayChannel, AlipayConfig, AlipayInvalidResponse, AlipayRefused
from payments.channels.base import (
    AgreementStatus,
    ChannelOrder,
    ChannelUnavailable,
    InvalidNotification,
    RefundStatus,
    TradeStatus,
)
from payments.sandbox.keys import AlipayKeys
from payments.sandbox.launch import free_port
from tests.paths import PROJECT
from tests.payments.sandboxes import APP_ID
from tests.payments.sandboxes import AlipaySandbox as Sandbox

ROOT = PROJECT
SHANGHAI = ZoneInfo("Asia/Shanghai")
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def channel(alipay_sandbox: Sandbox) -> AsyncIterator[AlipayChannel]:
    adapter = AlipayChannel(alipay_sandbox.config())
    yield adapter
    await adapter.aclose()


def _no(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def _order(
    method: str = "app", amount_fen: int = 1234, payer_id: str | None = None, **extra: Any
) -> ChannelOrder:
    return ChannelOrder(
        out_trade_no=extra.pop("out_trade_no", _no()),
        amount_fen=amount_fen,
        subject="水费 2024-05",
        method=method,
        notify_url="http://127.0.0.1:9/notify",  # nobody listens: deliveries fail fast, tests post bodies themselves
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30),
        payer_id=payer_id,
        **extra,
    )


async def _paid_trade(channel: AlipayChannel, sandbox: Sandbox, amount_fen: int, **pay: Any) -> str:
    """A mini-program trade, paid in the sandbox; its out_trade_no."""
    order = _order("mini", amount_fen, payer_id="2088102177000001")
    await channel.create(order)
    await sandbox.control("POST", f"/_sandbox/trades/{order.out_trade_no}/pay", {"deliver": False, **pay})
    return order.out_trade_no


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- paying --------------------------------------------------------------------------------------------------


async def test_app_pay_order_string_is_signed_and_payable(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    order = _order("app", 1234)
    params = await channel.create(order)
    assert (params.channel, params.method) == ("alipay", "app")
    fields = dict(parse_qsl(params.params["order_string"]))
    assert fields["method"] == "alipay.trade.app.pay"
    assert fields["sign_type"] == "RSA2" and fields["app_id"] == APP_ID
    stamped = dt.datetime.strptime(fields["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    assert abs(stamped - dt.datetime.now(SHANGHAI)) < dt.timedelta(
        minutes=2
    )  # Beijing time, whatever the host's
    biz = json.loads(fields["biz_content"])
    assert biz["total_amount"] == "12.34" and biz["out_trade_no"] == order.out_trade_no
    assert biz["product_code"] == "QUICK_MSECURITY_PAY"
    # The order string alone creates nothing at Alipay: the trade appears when the user opens it in the app.
    assert await channel.query(order.out_trade_no) is None
    opened = await alipay_sandbox.control(
        "POST", "/_sandbox/open", {"order_string": params.params["order_string"]}
    )
    assert opened["trade"]["total_fen"] == 1234
    waiting = await channel.query(order.out_trade_no)
    assert waiting is not None and waiting.status == TradeStatus.WAITING and waiting.amount_fen == 1234
    assert waiting.paid_at is None

    paid = await alipay_sandbox.control(
        "POST", f"/_sandbox/trades/{order.out_trade_no}/pay", {"deliver": False}
    )
    trade = await channel.query(order.out_trade_no)
    assert trade is not None and trade.status == TradeStatus.PAID and trade.amount_fen == 1234
    assert trade.channel_trade_no == paid["trade"]["trade_no"]
    assert trade.paid_at is not None and trade.paid_at.tzinfo is not None
    note = channel.parse_notification(
        paid["notification"]["body"].encode(), paid["notification"]["content_type"]
    )
    assert (note.kind, note.status, note.amount_fen) == ("payment", TradeStatus.PAID, 1234)
    assert note.out_trade_no == order.out_trade_no and note.app_id == APP_ID
    assert note.paid_at == trade.paid_at


async def test_tampered_order_string_is_refused_by_the_gateway(
    alipay_sandbox: Sandbox, channel: AlipayChannel
) -> None:
    params = await channel.create(_order("app", 100))
    tampered = params.params["order_string"].replace("1.00", "0.01")
    answer = await alipay_sandbox.control("POST", "/_sandbox/open", {"order_string": tampered}, status=400)
    assert answer["error"]["sub_code"] == "isv.invalid-signature"


async def test_mini_program_trade_create(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    order = _order("mini", 990, payer_id="074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5")
    params = await channel.create(order)
    assert params.method == "mini" and params.params["trade_no"]
    record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{order.out_trade_no}")
    assert record["buyer_open_id"] == order.payer_id and record["product_code"] == "JSAPI_PAY"
    assert record["trade_no"] == params.params["trade_no"] and record["total_fen"] == 990
    # the same order again (a retry) gets the same trade
    assert (await channel.create(order)).params["trade_no"] == params.params["trade_no"]

    by_user_id = _order("mini", 5, payer_id="2088102177000002")
    await channel.create(by_user_id)
    record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{by_user_id.out_trade_no}")
    assert record["buyer_id"] == "2088102177000002" and record["buyer_open_id"] is None

    with pytest.raises(ValueError, match="payer"):
        await channel.create(_order("mini", 5))


async def test_same_out_trade_no_with_another_amount_is_refused(channel: AlipayChannel) -> None:
    order = _order("mini", 100, payer_id="2088102177000001")
    await channel.create(order)
    with pytest.raises(AlipayRefused) as refused:
        await channel.create(
            _order("mini", 101, payer_id="2088102177000001", out_trade_no=order.out_trade_no)
        )
    assert refused.value.sub_code == "ACQ.CONTEXT_INCONSISTENT"


async def test_native_precreate_gives_a_qr_code(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    order = _order("native", 2000)
    params = await channel.create(order)
    assert params.params["qr_code"].startswith(alipay_sandbox.url)
    trade = await channel.query(order.out_trade_no)
    assert trade is not None and trade.status == TradeStatus.WAITING and trade.amount_fen == 2000


async def test_amounts_and_methods_are_checked_before_any_call(channel: AlipayChannel) -> None:
    for bad in (0, -1, 100_000_000_01):
        with pytest.raises(ValueError):
            await channel.create(_order("native", bad))
    with pytest.raises(ValueError, match="no payment method"):
        await channel.create(_order("card", 1))


async def test_query_of_an_unknown_trade_is_none(channel: AlipayChannel) -> None:
    assert await channel.query(_no()) is None


async def test_close_and_user_cancel(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    order = _order("native", 300)
    await channel.create(order)
    await channel.close(order.out_trade_no)
    closed = await channel.query(order.out_trade_no)
    assert closed is not None and closed.status == TradeStatus.CLOSED
    await channel.close(order.out_trade_no)  # closing twice is fine
    await channel.close(_no())  # a trade Alipay never saw counts as closed

    cancelled = _order("native", 301)
    await channel.create(cancelled)
    answer = await alipay_sandbox.control("POST", f"/_sandbox/trades/{cancelled.out_trade_no}/cancel", {})
    trade = await channel.query(cancelled.out_trade_no)
    assert trade is not None and trade.status == TradeStatus.CLOSED
    note = channel.parse_notification(answer["notification"]["body"].encode(), FORM)
    assert note.status == TradeStatus.CLOSED and note.kind == "payment"

    paid = await _paid_trade(channel, alipay_sandbox, 302)
    with pytest.raises(AlipayRefused) as refused:
        await channel.close(paid)
    assert refused.value.sub_code == "ACQ.TRADE_STATUS_ERROR"


async def test_finished_trade(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    paid = await _paid_trade(channel, alipay_sandbox, 400)
    answer = await alipay_sandbox.control("POST", f"/_sandbox/trades/{paid}/finish", {"deliver": False})
    trade = await channel.query(paid)
    assert trade is not None and trade.status == TradeStatus.FINISHED and trade.paid_at is not None
    note = channel.parse_notification(answer["notification"]["body"].encode(), FORM)
    assert note.status == TradeStatus.FINISHED
    refund = await channel.refund(paid, _no("R"), 100, 400, "late")
    assert refund.status == RefundStatus.FAILED


# -- refunds -------------------------------------------------------------------------------------------------


async def test_partial_refunds_are_idempotent_by_out_request_no(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    out_trade_no = await _paid_trade(channel, alipay_sandbox, 10_000)
    first, second = _no("R"), _no("R")
    done = await channel.refund(out_trade_no, first, 3_001, 10_000, "partial")
    assert (done.status, done.amount_fen, done.out_refund_no) == (RefundStatus.SUCCEEDED, 3_001, first)
    again = await channel.refund(out_trade_no, first, 3_001, 10_000, "partial")  # a retry: no second refund
    assert (again.status, again.amount_fen) == (RefundStatus.SUCCEEDED, 3_001)
    record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{out_trade_no}")
    assert record["refunded_fen"] == 3_001 and len(record["refunds"]) == 1

    with pytest.raises(AlipayRefused) as refused:  # the same refund number for another amount is our bug
        await channel.refund(out_trade_no, first, 3_002, 10_000, "partial")
    assert refused.value.sub_code == "ACQ.CONTEXT_INCONSISTENT"

    over = await channel.refund(out_trade_no, _no("R"), 7_000, 10_000, "too much")
    assert over.status == RefundStatus.FAILED
    rest = await channel.refund(out_trade_no, second, 6_999, 10_000, "the rest")
    assert (rest.status, rest.amount_fen) == (RefundStatus.SUCCEEDED, 6_999)
    trade = await channel.query(out_trade_no)
    assert trade is not None and trade.status == TradeStatus.CLOSED  # fully refunded
    assert (await channel.refund(out_trade_no, _no("R"), 1, 10_000, "more")).status == RefundStatus.FAILED

    found = await channel.query_refund(out_trade_no, first)
    assert found is not None and (found.status, found.amount_fen) == (RefundStatus.SUCCEEDED, 3_001)
    assert await channel.query_refund(out_trade_no, _no("R")) is None
    assert await channel.query_refund(_no(), first) is None


async def test_refund_of_an_unpaid_trade_fails(channel: AlipayChannel) -> None:
    order = _order("native", 500)
    await channel.create(order)
    assert (await channel.refund(order.out_trade_no, _no("R"), 500, 500, "x")).status == RefundStatus.FAILED
    assert (await channel.refund(_no(), _no("R"), 500, 500, "x")).status == RefundStatus.FAILED


async def test_refund_notification_is_reported_as_a_refund(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    out_trade_no = await _paid_trade(channel, alipay_sandbox, 1_000)
    out_refund_no = _no("R")
    await channel.refund(out_trade_no, out_refund_no, 250, 1_000, "partial")
    answer = await alipay_sandbox.control(
        "POST",
        f"/_sandbox/trades/{out_trade_no}/notification",
        {"fields": {"out_biz_no": out_refund_no, "refund_fee": "2.50"}},
    )
    note = channel.parse_notification(answer["notification"]["body"].encode(), FORM)
    assert (note.kind, note.status, note.out_refund_no) == ("refund", RefundStatus.SUCCEEDED, out_refund_no)
    assert note.amount_fen == 1_000 and note.raw["refund_fee"] == "2.50"


# -- response signatures and failures ------------------------------------------------------------------------


async def test_sandbox_signs_the_exact_bytes_it_sends(
    alipay_sandbox: Sandbox, channel: AlipayChannel
) -> None:
    """Independently of the adapter: the signature covers the raw `<method>_response` bytes."""
    out_trade_no = await _paid_trade(channel, alipay_sandbox, 777)
    from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest

    request = AlipayTradeQueryRequest()
    request.biz_content = {"out_trade_no": out_trade_no}
    signed = await channel._signed(request)
    async with httpx.AsyncClient() as http:
        raw = (
            await http.post(
                f"{alipay_sandbox.url}/gateway.do", content=signed, headers={"Content-Type": FORM}
            )
        ).content
    match = re.fullmatch(rb'\{"alipay_trade_query_response":(\{.*\}),"sign":"([^"]+)"\}', raw)
    assert match is not None, raw
    public = serialization.load_pem_public_key(alipay_sandbox.keys.alipay_public_key.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(base64.b64decode(match.group(2)), match.group(1), padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(match.group(1))["total_amount"] == "7.77"


async def test_tampered_or_unsigned_response_is_refused(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    out_trade_no = await _paid_trade(channel, alipay_sandbox, 100)
    await alipay_sandbox.fault("alipay.trade.query", "tamper")
    with pytest.raises(AlipayInvalidResponse, match="signature"):
        await channel.query(out_trade_no)
    await alipay_sandbox.fault("alipay.trade.query", "unsigned")
    with pytest.raises(AlipayInvalidResponse, match="not signed"):
        await channel.query(out_trade_no)
    assert isinstance(AlipayInvalidResponse("x"), ChannelUnavailable)  # outcome unknown: query again later
    trade = await channel.query(out_trade_no)
    assert trade is not None and trade.status == TradeStatus.PAID


async def test_response_signed_by_another_key_is_refused(alipay_sandbox: Sandbox) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = stranger.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    adapter = AlipayChannel(alipay_sandbox.config(), http=None)
    wrong = AlipayChannel(
        AlipayConfig(
            app_id=APP_ID,
            app_private_key=alipay_sandbox.keys.app_private_key,
            alipay_public_key=pem,
            gateway_url=f"{alipay_sandbox.url}/gateway.do",
        )
    )
    try:
        assert await adapter.query(_no()) is None
        with pytest.raises(AlipayInvalidResponse):
            await wrong.query(_no())
    finally:
        await adapter.aclose()
        await wrong.aclose()


async def test_requests_signed_with_another_key_or_app_id_are_refused(alipay_sandbox: Sandbox) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = other.private_bytes(  # PKCS#8 as Alipay's Java key tool writes it: normalized for the SDK
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    impostor = AlipayChannel(alipay_sandbox.config(app_private_key=pkcs8))
    stranger = AlipayChannel(alipay_sandbox.config(app_id="2021000000009999"))
    try:
        with pytest.raises(AlipayRefused) as refused:
            await impostor.query(_no())
        assert refused.value.sub_code == "isv.invalid-signature"
        with pytest.raises(AlipayRefused) as refused:
            await stranger.query(_no())
        assert refused.value.sub_code == "isv.invalid-app-id"
    finally:
        await impostor.aclose()
        await stranger.aclose()


async def test_timeouts_errors_and_refused_connections_are_unavailable(alipay_sandbox: Sandbox) -> None:
    quick = AlipayChannel(alipay_sandbox.config(timeout_s=1.0))
    dead = AlipayChannel(alipay_sandbox.config(gateway_url=f"http://127.0.0.1:{free_port()}/gateway.do"))
    try:
        await alipay_sandbox.fault("alipay.trade.query", "timeout", delay_s=10)
        started = time.monotonic()
        with pytest.raises(ChannelUnavailable, match="no answer"):
            await quick.query(_no())
        assert time.monotonic() - started < 5
        await alipay_sandbox.fault("alipay.trade.query", "error")
        with pytest.raises(ChannelUnavailable, match="HTTP 500"):
            await quick.query(_no())
        with pytest.raises(ChannelUnavailable):
            await dead.query(_no())
        assert await quick.query(_no()) is None  # faults are used up
    finally:
        await quick.aclose()
        await dead.aclose()


# -- bills ---------------------------------------------------------------------------------------------------


async def test_bill_download_with_seeded_discrepancies(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    day = dt.datetime.now(SHANGHAI).date() - dt.timedelta(days=2)
    at = f"{day.isoformat()} 10:15:00"
    kept = await _paid_trade(channel, alipay_sandbox, 12_345, paid_at=at)
    dropped = await _paid_trade(channel, alipay_sandbox, 200, paid_at=at)
    short = await _paid_trade(channel, alipay_sandbox, 1_000, paid_at=at)
    fee = await _paid_trade(channel, alipay_sandbox, 5_000, paid_at=at)
    odd = await _paid_trade(channel, alipay_sandbox, 300, paid_at=at)
    late = await _paid_trade(channel, alipay_sandbox, 700, paid_at=f"{day.isoformat()} 23:59:59")
    unknown = _no()
    await alipay_sandbox.control(
        "POST",
        "/_sandbox/bill-edits",
        {
            "day": day.isoformat(),
            "edits": [
                {"op": "drop", "out_trade_no": dropped},
                {"op": "amount", "out_trade_no": short, "value": 999},
                {"op": "fee", "out_trade_no": fee, "value": 31},
                {"op": "status", "out_trade_no": odd, "value": "交易关闭"},
                {
                    "op": "add",
                    "out_trade_no": unknown,
                    "value": {"amount_fen": 4_321, "fee_fen": 26, "channel_trade_no": "2024X"},
                },
            ],
        },
    )
    lines = {line.out_trade_no: line for line in await channel.download_bill(day)}
    assert dropped not in lines
    assert (lines[kept].amount_fen, lines[kept].fee_fen, lines[kept].kind) == (12_345, 74, "payment")
    assert lines[kept].status == "paid" and lines[kept].day == day
    assert lines[kept].at == dt.datetime(day.year, day.month, day.day, 10, 15, tzinfo=SHANGHAI)
    assert lines[short].amount_fen == 999
    assert lines[fee].fee_fen == 31
    assert (lines[odd].status, lines[odd].kind) == ("交易关闭", "payment")
    assert (lines[unknown].amount_fen, lines[unknown].fee_fen, lines[unknown].channel_trade_no) == (
        4_321,
        26,
        "2024X",
    )
    assert lines[late].at is not None and lines[late].at.time() == dt.time(23, 59, 59)
    record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{kept}")
    assert lines[kept].channel_trade_no == record["trade_no"]

    # refunds land on the day they happen, as negative lines turned into positive refund BillLines
    out_refund_no = _no("R")
    await channel.refund(kept, out_refund_no, 2_345, 12_345, "partial")
    record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{kept}")
    refund_day = dt.date.fromisoformat(record["refunds"][0]["gmt_refund"][:10])
    refunds = [line for line in await channel.download_bill(refund_day) if line.out_trade_no == kept]
    assert len(refunds) == 1
    refund = refunds[0]
    assert (refund.kind, refund.amount_fen, refund.fee_fen, refund.out_refund_no) == (
        "refund",
        2_345,
        -14,
        out_refund_no,
    )
    assert refund.status == "succeeded"


async def test_bill_edits_can_be_cleared(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    day = dt.datetime.now(SHANGHAI).date() - dt.timedelta(days=3)
    paid = await _paid_trade(channel, alipay_sandbox, 100, paid_at=f"{day.isoformat()} 08:00:00")
    edits = {"day": day.isoformat(), "edits": [{"op": "drop", "out_trade_no": paid}]}
    await alipay_sandbox.control("POST", "/_sandbox/bill-edits", edits)
    assert paid not in {line.out_trade_no for line in await channel.download_bill(day)}
    await alipay_sandbox.control("POST", "/_sandbox/bill-edits", {"day": day.isoformat(), "edits": []})
    assert paid in {line.out_trade_no for line in await channel.download_bill(day)}


async def test_bill_of_a_future_day_does_not_exist(channel: AlipayChannel) -> None:
    with pytest.raises(AlipayRefused) as refused:
        await channel.download_bill(dt.datetime.now(SHANGHAI).date() + dt.timedelta(days=2))
    assert refused.value.sub_code == "isp.bill_not_exist"


# -- withholding ---------------------------------------------------------------------------------------------


async def _signed_agreement(channel: AlipayChannel, sandbox: Sandbox, *, via: str = "url") -> tuple[str, str]:
    """A signed agreement: (external_agreement_no, agreement_no)."""
    external = _no("A")
    pending = await channel.agreement_sign(external, "rider-42", "http://127.0.0.1:9/notify")
    assert pending.status == AgreementStatus.PENDING and pending.agreement_no is None
    if via == "url":  # the rider opens the sign page
        async with httpx.AsyncClient() as http:
            page = await http.get(pending.sign_params["sign_url"])
        assert page.status_code == 200, page.text
    else:  # the Alipay app opens the deep link's sign_params
        await sandbox.control("POST", "/_sandbox/open", {"order_string": pending.sign_params["sign_params"]})
    assert (await channel.agreement_query(external)).status == AgreementStatus.PENDING
    signed = await sandbox.control("POST", f"/_sandbox/agreements/{external}/sign", {"deliver": False})
    note = channel.parse_notification(signed["notification"]["body"].encode(), FORM)
    assert (note.kind, note.status, note.out_trade_no) == ("agreement", AgreementStatus.ACTIVE, external)
    assert note.agreement_no == signed["agreement"]["agreement_no"]
    return external, signed["agreement"]["agreement_no"]


async def test_agreement_sign_query_and_deduction(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    external, agreement_no = await _signed_agreement(channel, alipay_sandbox)
    found = await channel.agreement_query(external)
    assert (found.status, found.agreement_no) == (AgreementStatus.ACTIVE, agreement_no)
    pending = await channel.agreement_sign(_no("A"), "rider-42", "http://127.0.0.1:9/notify")
    assert pending.sign_params["alipays_url"].startswith("alipays://platformapi/startapp?appId=60000157")
    assert (await channel.agreement_query(_no("A"))).status == AgreementStatus.PENDING

    out_trade_no = _no("D")
    trade = await channel.deduct(
        agreement_no, out_trade_no, 450, "地铁 2024-05-01", "http://127.0.0.1:9/notify"
    )
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, 450)
    assert trade.channel_trade_no and trade.paid_at is not None
    queried = await channel.query(out_trade_no)
    assert queried is not None and queried.status == TradeStatus.PAID
    answer = await alipay_sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/notification", {})
    note = channel.parse_notification(answer["notification"]["body"].encode(), FORM)
    assert (note.kind, note.status, note.amount_fen) == ("deduction", TradeStatus.PAID, 450)
    # a repeated deduction (after a lost answer) reports the trade as it is, never charges twice
    again = await channel.deduct(
        agreement_no, out_trade_no, 450, "地铁 2024-05-01", "http://127.0.0.1:9/notify"
    )
    assert again.status == TradeStatus.PAID and again.channel_trade_no == trade.channel_trade_no


async def test_agreement_signed_in_the_app_and_unsigned(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    external, agreement_no = await _signed_agreement(channel, alipay_sandbox, via="app")
    answer = await alipay_sandbox.control(
        "POST", f"/_sandbox/agreements/{external}/unsign", {"deliver": False}
    )
    note = channel.parse_notification(answer["notification"]["body"].encode(), FORM)
    assert (note.kind, note.status) == ("agreement", AgreementStatus.ENDED)
    assert (await channel.agreement_query(external)).status == AgreementStatus.ENDED
    refused = await channel.deduct(agreement_no, _no("D"), 100, "地铁", "http://127.0.0.1:9/notify")
    assert refused.status == TradeStatus.FAILED


async def test_refused_deduction_is_failed(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    _, agreement_no = await _signed_agreement(channel, alipay_sandbox)
    out_trade_no = _no("D")
    await alipay_sandbox.fault("alipay.trade.pay", "refuse")
    failed = await channel.deduct(agreement_no, out_trade_no, 300, "地铁", "http://127.0.0.1:9/notify")
    assert (failed.status, failed.amount_fen) == (TradeStatus.FAILED, 300)
    retried = await channel.deduct(agreement_no, out_trade_no, 300, "地铁", "http://127.0.0.1:9/notify")
    assert retried.status == TradeStatus.FAILED
    over_limit = await channel.deduct(agreement_no, _no("D"), 50_001, "地铁", "http://127.0.0.1:9/notify")
    assert over_limit.status == TradeStatus.FAILED
    unknown = await channel.deduct("20990101000000000000", _no("D"), 100, "地铁", "http://127.0.0.1:9/notify")
    assert unknown.status == TradeStatus.FAILED


async def test_deduction_timeout_is_unavailable_and_settles_by_retry(alipay_sandbox: Sandbox) -> None:
    adapter = AlipayChannel(alipay_sandbox.config(timeout_s=1.0))
    try:
        _, agreement_no = await _signed_agreement(adapter, alipay_sandbox)
        out_trade_no = _no("D")
        await alipay_sandbox.fault("alipay.trade.pay", "timeout", delay_s=10)
        with pytest.raises(ChannelUnavailable):
            await adapter.deduct(agreement_no, out_trade_no, 600, "地铁", "http://127.0.0.1:9/notify")
        # the gateway did take the money; the answer was lost
        settled = await adapter.deduct(agreement_no, out_trade_no, 600, "地铁", "http://127.0.0.1:9/notify")
        assert (settled.status, settled.amount_fen) == (TradeStatus.PAID, 600)
        record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{out_trade_no}")
        assert record["trade_status"] == "TRADE_SUCCESS"

        lost = _no("D")  # a call that never arrived: nothing happened, and a retry deducts once
        await alipay_sandbox.fault("alipay.trade.pay", "timeout", delay_s=10, apply=False)
        with pytest.raises(ChannelUnavailable):
            await adapter.deduct(agreement_no, lost, 100, "地铁", "http://127.0.0.1:9/notify")
        assert await adapter.query(lost) is None
        assert (await adapter.deduct(agreement_no, lost, 100, "地铁", "http://x/")).status == TradeStatus.PAID
    finally:
        await adapter.aclose()


async def test_pending_deduction_is_waiting_until_paid(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    _, agreement_no = await _signed_agreement(channel, alipay_sandbox)
    out_trade_no = _no("D")
    await alipay_sandbox.fault("alipay.trade.pay", "pending")
    waiting = await channel.deduct(agreement_no, out_trade_no, 800, "地铁", "http://127.0.0.1:9/notify")
    assert (waiting.status, waiting.amount_fen) == (TradeStatus.WAITING, 800)
    again = await channel.deduct(agreement_no, out_trade_no, 800, "地铁", "http://127.0.0.1:9/notify")
    assert again.status == TradeStatus.WAITING
    await alipay_sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    trade = await channel.query(out_trade_no)
    assert trade is not None and trade.status == TradeStatus.PAID


# -- notifications -------------------------------------------------------------------------------------------


async def _notification_body(sandbox: Sandbox, channel: AlipayChannel, **request: Any) -> str:
    out_trade_no = await _paid_trade(channel, sandbox, 1_999)
    answer = await sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/notification", request)
    return str(answer["notification"]["body"])


def _resign(keys: AlipayKeys, params: dict[str, str], digest: hashes.HashAlgorithm) -> str:
    """Sign as Alipay would, with Alipay's (the sandbox's) private key and the given hash."""
    private = serialization.load_pem_private_key(keys.alipay_private_key.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("sign", "sign_type"))
    return base64.b64encode(private.sign(content.encode(), padding.PKCS1v15(), digest)).decode()


async def test_valid_notification(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    body = await _notification_body(alipay_sandbox, channel)
    note = channel.parse_notification(body.encode(), "application/x-www-form-urlencoded; charset=utf-8")
    assert (note.kind, note.status, note.amount_fen, note.app_id) == (
        "payment",
        TradeStatus.PAID,
        1_999,
        APP_ID,
    )
    assert note.paid_at is not None and note.paid_at.utcoffset() == dt.timedelta(hours=8)
    assert note.raw["notify_type"] == "trade_status_sync"
    # at-least-once: the same body parses the same every time, also concurrently
    again = await asyncio.gather(
        *(asyncio.to_thread(channel.parse_notification, body.encode(), FORM) for _ in range(20))
    )
    assert {n.out_trade_no for n in again} == {note.out_trade_no}
    assert channel.acknowledge(True) == (b"success", "text/plain")
    assert channel.acknowledge(False) == (b"failure", "text/plain")


async def test_out_of_order_notification_parses_as_sent(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    body = await _notification_body(alipay_sandbox, channel, trade_status="WAIT_BUYER_PAY")
    assert channel.parse_notification(body.encode(), FORM).status == TradeStatus.WAITING


async def test_notification_with_a_bad_signature_is_refused(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    params = dict(parse_qsl(await _notification_body(alipay_sandbox, channel)))
    signature = base64.b64decode(params["sign"])
    params["sign"] = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    with pytest.raises(InvalidNotification, match="signature"):
        channel.parse_notification(urlencode(params).encode(), FORM)
    params["sign"] = "not base64!"
    with pytest.raises(InvalidNotification, match="signature"):
        channel.parse_notification(urlencode(params).encode(), FORM)
    del params["sign"]
    with pytest.raises(InvalidNotification, match="not signed"):
        channel.parse_notification(urlencode(params).encode(), FORM)


async def test_notification_for_another_app_is_refused(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    body = await _notification_body(alipay_sandbox, channel, fields={"app_id": "2021000000009999"})
    with pytest.raises(InvalidNotification, match="app_id"):
        channel.parse_notification(body.encode(), FORM)  # validly signed, but not ours


async def test_notification_signed_with_rsa_sha1_is_refused(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    params = dict(parse_qsl(await _notification_body(alipay_sandbox, channel)))
    params["sign"] = _resign(alipay_sandbox.keys, params, hashes.SHA1())  # noqa: S303 - the point of the test
    params["sign_type"] = "RSA"
    with pytest.raises(InvalidNotification, match="RSA2"):
        channel.parse_notification(urlencode(params).encode(), FORM)
    params["sign_type"] = "RSA2"  # claiming RSA2 over a SHA-1 signature does not help
    with pytest.raises(InvalidNotification, match="SHA-256"):
        channel.parse_notification(urlencode(params).encode(), FORM)
    params["sign"] = _resign(alipay_sandbox.keys, params, hashes.SHA256())  # the control: re-signed properly
    assert channel.parse_notification(urlencode(params).encode(), FORM).status == TradeStatus.PAID


async def test_notification_with_a_tampered_amount_is_refused(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    body = await _notification_body(alipay_sandbox, channel)
    assert "total_amount=19.99" in body
    with pytest.raises(InvalidNotification, match="signature"):
        channel.parse_notification(body.replace("total_amount=19.99", "total_amount=0.01").encode(), FORM)


async def test_malformed_notifications_are_refused(channel: AlipayChannel, alipay_sandbox: Sandbox) -> None:
    body = await _notification_body(alipay_sandbox, channel)
    with pytest.raises(InvalidNotification, match="form"):
        channel.parse_notification(body.encode(), "application/json")
    with pytest.raises(InvalidNotification, match="twice"):
        channel.parse_notification((body + "&total_amount=0.01").encode(), FORM)
    params = dict(parse_qsl(body))
    del params["sign_type"]
    with pytest.raises(InvalidNotification, match="RSA2"):
        channel.parse_notification(urlencode(params).encode(), FORM)
    with pytest.raises(InvalidNotification):
        channel.parse_notification(b"\xff\xfe", FORM)


class _Receiver:
    """A tiny HTTP server standing in for our notify endpoint: it parses with the adapter and refuses the first
    `refuse` deliveries (as if the database were down)."""

    def __init__(self, channel: AlipayChannel, refuse: int) -> None:
        self.channel = channel
        self.refuse = refuse
        self.seen: list[Any] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        content_type = re.search(rb"content-type:\s*([^\r\n]+)", head, re.IGNORECASE)
        note = self.channel.parse_notification(body, content_type.group(1).decode() if content_type else "")
        self.seen.append(note)
        reply, media = self.channel.acknowledge(len(self.seen) > self.refuse)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: "
            + media.encode()
            + b"\r\nContent-Length: "
            + str(len(reply)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + reply
        )
        await writer.drain()
        writer.close()


async def test_sandbox_delivers_and_retries_until_acknowledged(
    channel: AlipayChannel, alipay_sandbox: Sandbox
) -> None:
    receiver = _Receiver(channel, refuse=1)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        order = _order("mini", 321, payer_id="2088102177000001")
        order = dataclasses.replace(order, notify_url=f"http://127.0.0.1:{port}/notify")
        await channel.create(order)
        await alipay_sandbox.control("POST", f"/_sandbox/trades/{order.out_trade_no}/pay", {"deliver": True})

        async def delivered() -> bool:
            record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{order.out_trade_no}")
            return bool(record["deliveries"] and record["deliveries"][-1]["delivered"])

        await _eventually(delivered)
        record = await alipay_sandbox.control("GET", f"/_sandbox/trades/{order.out_trade_no}")
        assert record["deliveries"][-1]["attempts"] == 2
        assert [n.status for n in receiver.seen] == [TradeStatus.PAID, TradeStatus.PAID]
        assert all(n.amount_fen == 321 and n.out_trade_no == order.out_trade_no for n in receiver.seen)
    finally:
        server.close()
        await server.wait_closed()
