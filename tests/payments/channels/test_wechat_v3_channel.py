"""The WeChat Pay v3 adapter (wechatpayv3) against the v3 sandbox, which signs and encrypts with `cryptography`
directly: orders, pay parameters, queries, closes, refunds and bills; every answer's signature; timeouts, 5xx and
retryable codes as unknown outcomes; forged notifications refused; platform certificates rotated and downloaded
again only within bounds."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app_backend.kernel.errors import DomainError
from payments.channels.base import (
    ChannelOrder,
    ChannelRefused,
    ChannelUnavailable,
    ForeignNotification,
    InvalidNotification,
    RefundStatus,
    TradeStatus,
)
from payments.channels.configured import build_channels
from payments.channels.wechat import WechatChannel
from payments.channels.wechat.errors import InvalidResponse
from payments.channels.wechat_v3 import WechatV3Channel, WechatV3Config, WechatV3Error
from tests.payments.sandboxes import WechatV3Sandbox

NOTIFY = "http://127.0.0.1:9/notify/wechat"  # nothing listens: the tests post notifications themselves


def _no() -> str:
    return "TZT" + uuid.uuid4().hex[:24].upper()


def _order(method: str = "mini", amount: int = 1000, no: str | None = None) -> ChannelOrder:
    return ChannelOrder(
        out_trade_no=no or _no(),
        amount_fen=amount,
        subject="凤城河夜游",
        method=method,
        notify_url=NOTIFY,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15),
        payer_id="o-openid-v3" if method in ("mini", "jsapi") else None,
    )


def _headers(note: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in note["headers"].items()}


@pytest.fixture
def v3(wechat_v3_sandbox: WechatV3Sandbox) -> WechatV3Sandbox:
    return wechat_v3_sandbox


async def test_orders_are_created_paid_queried_and_closed_through_the_sdk(v3):
    channel = v3.channel()
    mini = _order("mini")
    params = (await channel.create(mini)).params
    assert params["signType"] == "RSA" and params["package"].startswith("prepay_id=")
    again = (await channel.create(mini)).params
    assert again["package"] == params["package"], "the same out_trade_no is the same prepaid order"
    # The WeChat client checks paySign with the merchant's public key, then pays.
    paid = await v3.control("POST", "/_sandbox/request-payment", {"params": params})
    assert paid["notification"]["headers"]["Wechatpay-Serial"]
    trade = await channel.query(mini.out_trade_no)
    assert trade is not None and trade.status is TradeStatus.PAID and trade.amount_fen == 1000
    assert trade.channel_trade_no and trade.paid_at is not None

    app = (await channel.create(_order("app"))).params
    assert app["package"] == "Sign=WXPay" and app["sign"]
    await v3.control("POST", "/_sandbox/request-payment", {"params": app})
    native = _order("native")
    assert (await channel.create(native)).params["code_url"].startswith("weixin://")

    assert await channel.query(_no()) is None
    await channel.close(native.out_trade_no)
    assert (await channel.query(native.out_trade_no)).status is TradeStatus.CLOSED
    await channel.close(native.out_trade_no)  # closing twice is the same close
    await channel.close(_no())  # and an unknown trade has nothing to close
    with pytest.raises(WechatV3Error) as refused:
        await channel.close(mini.out_trade_no)
    assert refused.value.code == "ORDERPAID" and isinstance(refused.value, ChannelRefused)


async def test_every_request_is_signed_with_the_merchant_key(v3):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(WechatV3Error) as refused:
        await v3.channel(private_key=pem).create(_order())
    assert (refused.value.status, refused.value.code) == (401, "SIGN_ERROR")
    with pytest.raises(WechatV3Error):
        await v3.channel(cert_serial_no="0123456789ABCDEF").create(_order())


async def test_timeouts_5xx_and_retryable_codes_are_unknown_outcomes_and_refusals_are_not(v3):
    channel = v3.channel(timeout=1.0)
    await v3.fault("pay", "timeout", seconds=2, process=True)
    with pytest.raises(ChannelUnavailable):
        await channel.create(_order())
    for mode, extra in (
        ("error", {}),
        ("refuse", {"err_code": "SYSTEM_ERROR"}),
        ("refuse", {"err_code": "FREQUENCY_LIMITED"}),
    ):
        await v3.fault("v3/pay/transactions/jsapi", mode, **extra)
        with pytest.raises(ChannelUnavailable):
            await channel.create(_order())
    await v3.fault("pay", "refuse", err_code="NOAUTH")
    with pytest.raises(WechatV3Error) as refused:
        await channel.create(_order())
    assert refused.value.code == "NOAUTH" and not isinstance(refused.value, ChannelUnavailable)


async def test_an_answer_changed_after_it_was_signed_is_not_believed(v3):
    channel = v3.channel()
    order = _order()
    await channel.create(order)
    await v3.fault("query", "tamper")
    with pytest.raises(InvalidResponse):  # a ChannelUnavailable: the outcome is unknown, query again
        await channel.query(order.out_trade_no)
    assert (await channel.query(order.out_trade_no)).status is TradeStatus.WAITING


async def test_refunds_keep_their_number_and_a_refusal_is_failed(v3):
    channel = v3.channel()
    order = _order(amount=3000)
    await channel.create(order)
    await v3.pay(order.out_trade_no)
    out_refund_no = "R" + order.out_trade_no
    first = await channel.refund(order.out_trade_no, out_refund_no, 1000, 3000, "退票")
    assert first.status is RefundStatus.PENDING and first.channel_refund_no
    again = await channel.refund(order.out_trade_no, out_refund_no, 1000, 3000, "退票")
    assert again.channel_refund_no == first.channel_refund_no, "the same number is the same refund"
    found = await channel.query_refund(order.out_trade_no, out_refund_no)
    assert found is not None and found.status is RefundStatus.SUCCEEDED and found.amount_fen == 1000
    assert await channel.query_refund(order.out_trade_no, "R-unknown") is None
    too_much = await channel.refund(order.out_trade_no, out_refund_no + "2", 2500, 3000, "")
    assert too_much.status is RefundStatus.FAILED
    trade = await v3.control("GET", f"/_sandbox/trades/{order.out_trade_no}")
    assert [(r["out_refund_no"], r["refund"]) for r in trade["refunds"]] == [(out_refund_no, 1000)]


async def test_the_trade_bill_is_downloaded_checked_and_read_in_fen(v3):
    channel = v3.channel()
    order = _order(amount=750)
    await channel.create(order)
    await v3.pay(order.out_trade_no, time_end="20020314101500")
    lines = await channel.download_bill(dt.date(2002, 3, 14))
    (line,) = [line for line in lines if line.out_trade_no == order.out_trade_no]
    assert (line.kind, line.amount_fen, line.fee_fen, line.status) == ("payment", 750, 5, "paid")
    assert await channel.download_bill(dt.date(1999, 1, 1)) == [], "a day without trades has no bill"
    await v3.fault("billdownload", "error")
    with pytest.raises(ChannelUnavailable):
        await channel.download_bill(dt.date(2002, 3, 14))


async def test_forged_notifications_are_refused(v3):
    channel = v3.channel()
    order = _order()
    await channel.create(order)
    genuine = await v3.notification(order.out_trade_no)
    note = await channel.read_notification(genuine["body"].encode(), _headers(genuine))
    assert (note.kind, note.status, note.amount_fen) == ("payment", TradeStatus.PAID, 1000)
    for forge in ("signature", "ciphertext", "apiv3_key", "serial"):
        forged = await v3.notification(order.out_trade_no, forge=forge)
        with pytest.raises(InvalidNotification) as refused:
            await channel.read_notification(forged["body"].encode(), _headers(forged))
        assert not isinstance(refused.value, ForeignNotification), forge
    tampered = genuine["body"].replace('"event_type":"TRANSACTION.SUCCESS"', '"event_type":"TRANSACTION.X"')
    assert tampered != genuine["body"]
    with pytest.raises(InvalidNotification):
        await channel.read_notification(tampered.encode(), _headers(genuine))
    stale = {
        **_headers(genuine),
        "wechatpay-timestamp": str(int(genuine["headers"]["Wechatpay-Timestamp"]) - 900),
    }
    with pytest.raises(
        InvalidNotification
    ):  # the signature no longer verifies, and it would be too old anyway
        await channel.read_notification(genuine["body"].encode(), stale)
    for fields, named in (
        ({"mchid": "1900000999"}, "mchid"),
        ({"appid": "wx0000000000000000"}, "appid"),
        ({"sub_mchid": "1900000109"}, "sub_mchid"),
        ({"sp_mchid": "1900000109"}, "sp_mchid"),
    ):
        foreign = await v3.notification(order.out_trade_no, fields=fields)
        with pytest.raises(ForeignNotification) as refused:
            await channel.read_notification(foreign["body"].encode(), _headers(foreign))
        assert refused.value.field == named
    with pytest.raises(InvalidNotification):
        channel.parse_notification(genuine["body"].encode(), "application/json")


async def test_a_rotated_platform_certificate_is_fetched_once_and_unknown_serials_are_bounded(v3):
    channel = v3.channel()
    order = _order()
    await channel.create(order)
    held = len(channel.certificates.certificates)
    before = await v3.certificate_downloads()
    rotated = await v3.control("POST", "/_sandbox/platform-certificates/rotate", {})
    note = await v3.notification(order.out_trade_no)
    assert note["headers"]["Wechatpay-Serial"] == rotated["current"]
    assert (await channel.read_notification(note["body"].encode(), _headers(note))).status is TradeStatus.PAID
    assert await v3.certificate_downloads() == before + 1, "the new serial made the adapter download once"
    assert len(channel.certificates.certificates) == held + 1, "the old certificate is kept while listed"
    for _ in range(3):  # the new serial is held now: no download
        await channel.read_notification(note["body"].encode(), _headers(note))
    assert await v3.certificate_downloads() == before + 1
    # A serial the certificates endpoint does not know: one download for it, then refused without asking again.
    for _ in range(5):
        forged = await v3.notification(order.out_trade_no, forge="serial")
        with pytest.raises(InvalidNotification, match="do not know"):
            await channel.read_notification(forged["body"].encode(), _headers(forged))
    assert await v3.certificate_downloads() <= before + 4, "unknown serials are bounded per interval"
    same = await v3.notification(order.out_trade_no, forge="serial")
    counted = await v3.certificate_downloads()
    for _ in range(3):
        with pytest.raises(InvalidNotification):
            await channel.read_notification(same["body"].encode(), _headers(same))
    assert await v3.certificate_downloads() <= counted + 1, "one serial is looked for once"


async def test_withholding_is_v2_only(v3):
    channel = v3.channel()
    for call in (
        channel.agreement_sign("A1", "o-openid", NOTIFY),
        channel.agreement_query("A1"),
        channel.deduct("C1", _no(), 100, "地铁", NOTIFY),
    ):
        with pytest.raises(DomainError) as refused:
            await call
        assert refused.value.status == 422 and "v2 only" in refused.value.detail


def test_the_payment_config_picks_the_api_per_merchant(v3, wechat_sandbox, tmp_path: Path):
    config = tmp_path / "channels.json"
    config.write_text(json.dumps({"wechat": v3.settings()}))
    assert isinstance(build_channels(config)["wechat"], WechatV3Channel)
    v2 = dict(wechat_sandbox.settings())
    config.write_text(json.dumps({"wechat": v2}))
    assert isinstance(build_channels(config)["wechat"], WechatChannel), "v2 stays the default"
    config.write_text(json.dumps({"wechat": {**v2, "api_version": "v2"}}))
    assert isinstance(build_channels(config)["wechat"], WechatChannel)
    config.write_text(json.dumps({"wechat": {**v2, "api_version": "v4"}}))
    with pytest.raises(ValueError, match="api_version"):
        build_channels(config)
    settings = v3.settings()
    with pytest.raises(ValueError, match="apiv3_key"):
        WechatV3Config(
            appid="wx1", mchid="1", cert_serial_no="AB", private_key="x", apiv3_key="short", api_version="v3"
        )
    assert settings["api_version"] == "v3"
