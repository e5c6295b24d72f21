"""Paying from a mini-program: the payer at the channel is the identity the resident linked for the channel's app,
never an id the client names, and the pay parameters come back ready for wx.requestPayment / my.tradePay."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.helpers import bearer, login, machine_credential, random_phone
from tests.mini_programs.sandboxes import ALIPAY_CITY, WECHAT_CITY, AlipayMiniSandbox, WechatMiniSandbox
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

ORDERS = "/api/v1/payments/orders"


@pytest.fixture
async def payee(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["payments:refund"], kind="merchant")


def _order(payee: dict[str, Any], channel: str, **extra: Any) -> dict[str, Any]:
    return {
        "purpose": "ticket",
        "amount_fen": 990,
        "subject": "凤城河夜游",
        "payee_id": payee["organisation"]["id"],
        "channel": channel,
        "method": "mini",
        **extra,
    }


async def _pay(client: Any, tokens: dict[str, Any], body: dict[str, Any]) -> Any:
    return await client.post(
        ORDERS, json=body, headers={**bearer(tokens), "Idempotency-Key": uuid.uuid4().hex}
    )


async def test_a_wechat_mini_payment_is_made_by_the_linked_openid_with_request_payment_parameters(
    client: Any,
    payee: dict[str, Any],
    wechat_mini_sandbox: WechatMiniSandbox,
    wechat_sandbox: WechatSandbox,
) -> None:
    wx = await wechat_mini_sandbox.login_code(WECHAT_CITY)
    phone_code = await wechat_mini_sandbox.phone_code(random_phone(), WECHAT_CITY)
    tokens = (
        await client.post(
            "/api/v1/mini-programs/wechat/login",
            json={"app_id": WECHAT_CITY, "code": wx["code"], "phone_code": phone_code},
        )
    ).json()
    created = await _pay(client, tokens, _order(payee, "wechat"))
    assert created.status_code == 201, created.text
    params = created.json()["pay"]["params"]
    assert set(params) >= {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["appId"] == WECHAT_CITY and params["package"].startswith("prepay_id=")
    trade = await wechat_sandbox.control("GET", f"_sandbox/trades/{created.json()['out_trade_no']}")
    assert trade["openid"] == wx["openid"]


async def test_an_alipay_mini_payment_is_made_by_the_linked_open_id_with_trade_pay_parameters(
    client: Any,
    payee: dict[str, Any],
    alipay_mini_sandbox: AlipayMiniSandbox,
    alipay_sandbox: AlipaySandbox,
) -> None:
    user = await alipay_mini_sandbox.auth_code(ALIPAY_CITY)
    phone_response = await alipay_mini_sandbox.phone_response(random_phone(), ALIPAY_CITY)
    tokens = (
        await client.post(
            "/api/v1/mini-programs/alipay/login",
            json={"app_id": ALIPAY_CITY, "code": user["code"], "phone_response": phone_response},
        )
    ).json()
    created = await _pay(client, tokens, _order(payee, "alipay"))
    assert created.status_code == 201, created.text
    params = created.json()["pay"]["params"]
    assert params["tradeNO"] == params["trade_no"]  # my.tradePay({tradeNO})
    trade = await alipay_sandbox.control("GET", f"/_sandbox/trades/{created.json()['out_trade_no']}")
    assert trade["buyer_open_id"] == user["open_id"]


async def test_a_client_named_payer_is_refused_for_mini_and_a_resident_without_a_linked_identity_is_told(
    client: Any, payee: dict[str, Any]
) -> None:
    tokens = await login(client)
    named = await _pay(client, tokens, _order(payee, "wechat", payer_channel_id="o-someone-else"))
    assert named.status_code == 400, named.text
    assert named.json()["errors"][0]["field"] == "payer_channel_id"
    unlinked = await _pay(client, tokens, _order(payee, "wechat"))
    assert unlinked.status_code == 422, unlinked.text
    assert unlinked.json()["type"].endswith("/mini-program-identity-required")
    assert unlinked.json()["errors"][0]["field"] == "method"
    # JSAPI (an H5 page inside WeChat) still takes the openid the page has, and needs it.
    jsapi = await _pay(client, tokens, {**_order(payee, "wechat"), "method": "jsapi"})
    assert jsapi.status_code == 400 and jsapi.json()["errors"][0]["field"] == "payer_channel_id"
