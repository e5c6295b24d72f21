"""The WeChat Pay v3 adapter's PayoutChannel (商家转账) against the v3 sandbox, driven through wechatpayv3: one
number is one bill, the payee's name travels encrypted for the platform certificate and is checked, a refusal is
FAILED with WeChat's reason, a bill not final yet is PENDING, and every unknown outcome (no answer, a 5xx, a
retryable code, an answer whose signature does not verify, the number reused with other parameters) raises
ChannelUnavailable and is settled by the query of the same number."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3.async_.type import RequestType
from wechatpayv3.utils import rsa_encrypt

from payments.channels.base import (
    ChannelUnavailable,
    PayoutAccount,
    PayoutChannel,
    TransferStatus,
    sends_transfers,
)
from payments.channels.wechat_v3 import WechatV3Channel
from tests.payments.sandboxes import WechatV3Sandbox


def _number() -> str:
    return "P" + secrets.token_hex(10)


def _account(name: str = "张三") -> PayoutAccount:
    return PayoutAccount("WECHAT_OPENID", "o" + secrets.token_hex(10), name)


async def _register(v3: WechatV3Sandbox, account: PayoutAccount, **extra: Any) -> None:
    await v3.control("POST", f"/_sandbox/payees/{account.identity}", {"name": account.name, **extra})


async def _held(v3: WechatV3Sandbox, identity: str) -> dict[str, Any]:
    found: dict[str, Any] = await v3.control("GET", f"/_sandbox/transfers?identity={identity}")
    return found


@pytest.fixture
async def payouts(wechat_v3_sandbox: WechatV3Sandbox) -> Any:
    channel = wechat_v3_sandbox.channel()
    yield channel
    await channel.aclose()


async def test_a_v3_merchant_sends_transfers_only_with_a_transfer_scene(wechat_v3_sandbox):
    configured, bare = wechat_v3_sandbox.channel(), wechat_v3_sandbox.channel(transfer_scene_id=None)
    try:
        assert isinstance(configured, PayoutChannel) and sends_transfers(configured)
        assert not sends_transfers(bare), "a merchant without 商家转账 pays its payees by bank"
    finally:
        await configured.aclose()
        await bare.aclose()


async def test_the_same_number_is_the_same_bill(wechat_v3_sandbox, payouts: WechatV3Channel):
    v3 = wechat_v3_sandbox
    number, account = _number(), _account()
    await _register(v3, account)
    assert await payouts.transfer_query(number) is None

    first = await payouts.transfer(number, 1_234, account, "泰州通结算 2025-01-02 #1")
    # WeChat accepts the bill and pays it a moment later: pending, then the query says it succeeded.
    assert first.status == TransferStatus.PENDING and first.channel_order_id
    again = await payouts.transfer(number, 1_234, account, "泰州通结算 2025-01-02 #1")
    assert again.status == TransferStatus.SUCCEEDED and again.channel_order_id == first.channel_order_id
    found = await payouts.transfer_query(number)
    assert found is not None
    assert (found.status, found.amount_fen, found.channel_order_id) == (
        TransferStatus.SUCCEEDED,
        1_234,
        first.channel_order_id,
    )
    assert found.paid_at is not None

    held = await _held(v3, account.identity)
    assert held["paid_fen"] == 1_234 and len(held["transfers"]) == 1, "asked twice, paid once"
    (bill,) = held["transfers"]
    assert bill["name"] == account.name, "the sandbox decrypted the name with the platform key"

    with pytest.raises(ChannelUnavailable):  # the number with another amount: the query says, not a guess
        await payouts.transfer(number, 999, account, "泰州通结算 2025-01-02 #1")
    assert (await _held(v3, account.identity))["paid_fen"] == 1_234


async def test_the_name_is_encrypted_for_the_platform_certificate_it_names(
    wechat_v3_sandbox, payouts: WechatV3Channel
):
    """The request carries no name in the clear and names, in Wechatpay-Serial, the platform certificate the
    name is encrypted for (the sandbox decrypts it with that certificate's private key only)."""
    v3 = wechat_v3_sandbox
    account = _account("李四")
    await _register(v3, account)
    sent: list[Any] = []
    real_post = payouts._client.core._client.post

    async def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs)
        return await real_post(*args, **kwargs)

    payouts._client.core._client.post = spy  # type: ignore[method-assign]
    try:
        await payouts.transfer(_number(), 500, account, "结算")
    finally:
        payouts._client.core._client.post = real_post  # type: ignore[method-assign]
    (request,) = sent
    assert "李四".encode() not in request["content"].encode()
    certificates = await v3.control("GET", "/_sandbox/platform-certificates")
    assert request["headers"]["Wechatpay-Serial"] in certificates["listed"]


async def test_a_name_that_is_not_the_payees_fails_the_bill_with_the_reason(
    wechat_v3_sandbox, payouts: WechatV3Channel
):
    v3 = wechat_v3_sandbox
    account = _account("王五")
    await _register(v3, account)
    number = _number()
    refused = await payouts.transfer(
        number, 800, PayoutAccount(account.identity_type, account.identity, "王六"), "结算"
    )
    assert refused.status == TransferStatus.FAILED and refused.reason == "NAME_NOT_CORRECT"
    found = await payouts.transfer_query(number)
    assert found is not None and (found.status, found.reason) == (TransferStatus.FAILED, "NAME_NOT_CORRECT")
    assert (await _held(v3, account.identity))["paid_fen"] == 0


async def test_refusals_are_failed_with_wechats_reason(wechat_v3_sandbox, payouts: WechatV3Channel):
    v3 = wechat_v3_sandbox
    closed = _account()
    await _register(v3, closed, state="closed")
    frozen = await payouts.transfer(_number(), 500, closed, "结算")
    assert frozen.status == TransferStatus.FAILED and frozen.reason == "PAYEE_ACCOUNT_ABNORMAL"

    await v3.fault("transfer", "refuse")  # our balance is short: 403 NOT_ENOUGH, no bill made
    number = _number()
    short = await payouts.transfer(number, 500, _account(), "结算")
    assert short.status == TransferStatus.FAILED and "NOT_ENOUGH" in (short.reason or "")
    assert await payouts.transfer_query(number) is None

    scene = v3.channel(transfer_scene_id="1000")  # a scene the merchant was never granted
    try:
        no_scene = await scene.transfer(_number(), 500, _account(), "结算")
    finally:
        await scene.aclose()
    assert no_scene.status == TransferStatus.FAILED and "NO_AUTH" in (no_scene.reason or "")

    with pytest.raises(ValueError, match="30 fen"):  # below what WeChat checks a name for: never sent
        await payouts.transfer(_number(), 29, _account(), "结算")


async def test_a_bill_waiting_for_the_payee_is_pending_until_it_is_confirmed_or_cancelled(
    wechat_v3_sandbox, payouts: WechatV3Channel
):
    v3 = wechat_v3_sandbox
    account = _account()
    await _register(v3, account, confirm=True)
    confirmed, cancelled = _number(), _number()
    for number in (confirmed, cancelled):
        waiting = await payouts.transfer(number, 600, account, "结算")
        assert waiting.status == TransferStatus.PENDING
        found = await payouts.transfer_query(number)
        assert found is not None and found.status == TransferStatus.PENDING

    await v3.control("POST", f"/_sandbox/transfers/{confirmed}/state", {"state": "SUCCESS"})
    await v3.control("POST", f"/_sandbox/transfers/{cancelled}/state", {"state": "CANCELLED"})
    paid, gone = await payouts.transfer_query(confirmed), await payouts.transfer_query(cancelled)
    assert paid is not None and paid.status == TransferStatus.SUCCEEDED
    assert gone is not None and gone.status == TransferStatus.FAILED and gone.reason == "OVERDUE_CLOSE"
    assert (await _held(v3, account.identity))["paid_fen"] == 600


@pytest.mark.parametrize(
    ("mode", "extra", "made"),
    [
        ("error", {}, False),  # a 500 that never processed the call
        ("timeout", {"seconds": 7, "process": False}, False),  # no answer, the call never reached WeChat
        ("timeout", {"seconds": 7, "process": True}, True),  # no answer, the bill made
        ("tamper", {}, True),  # an answer whose signature does not verify, for a bill made
        ("refuse", {"err_code": "SYSTEM_ERROR"}, False),
        ("refuse", {"err_code": "FREQUENCY_LIMIT"}, False),
        ("refuse", {"err_code": "FREQUENCY_LIMITED"}, False),
    ],
)
async def test_an_unknown_outcome_raises_and_the_query_of_the_same_number_settles_it(
    wechat_v3_sandbox, payouts: WechatV3Channel, mode, extra, made
):
    v3 = wechat_v3_sandbox
    number, account = _number(), _account()
    await v3.fault("transfer", mode, **extra)
    with pytest.raises(ChannelUnavailable):
        await payouts.transfer(number, 700, account, "结算")
    found = await payouts.transfer_query(number)
    if made:
        assert found is not None and found.status == TransferStatus.SUCCEEDED
    else:
        assert found is None
        # Never made: asked again with the same number, it is made once.
        await payouts.transfer(number, 700, account, "结算")
    assert (await _held(v3, account.identity))["paid_fen"] == 700


@pytest.mark.parametrize(
    ("mode", "extra"), [("error", {}), ("tamper", {}), ("refuse", {"err_code": "SYSTEM_ERROR"})]
)
async def test_a_query_without_a_trustworthy_answer_is_unknown_too(
    wechat_v3_sandbox, payouts: WechatV3Channel, mode, extra
):
    v3 = wechat_v3_sandbox
    number = _number()
    await payouts.transfer(number, 700, _account(), "结算")
    await v3.fault("transfer-query", mode, **extra)
    with pytest.raises(ChannelUnavailable):
        await payouts.transfer_query(number)
    found = await payouts.transfer_query(number)
    assert found is not None and found.status == TransferStatus.SUCCEEDED


async def test_the_sandbox_takes_a_name_only_encrypted_for_the_platform_certificate_named(
    wechat_v3_sandbox, payouts: WechatV3Channel
):
    """What keeps the adapter honest: a name in the clear, encrypted for another key, or under a serial that is
    not a platform certificate's is refused (400 PARAM_ERROR) and no bill is made; an unsigned request 401."""
    core = payouts._client.core
    platform = await core.encryption_certificate()
    assert platform is not None
    serial = format(platform.serial_number, "X")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path = "/v3/fund-app/mch-transfer/transfer-bills"

    def bill(user_name: str) -> dict[str, Any]:
        return {
            "appid": payouts.config.appid,
            "out_bill_no": _number(),
            "transfer_scene_id": payouts.config.transfer_scene_id,
            "openid": "o" + secrets.token_hex(10),
            "transfer_amount": 500,
            "transfer_remark": "结算",
            "user_name": user_name,
            "transfer_scene_report_infos": [dict(i) for i in payouts.config.transfer_scene_report_infos],
        }

    for user_name, named in (
        ("张三", serial),
        (rsa_encrypt("张三", stranger), serial),
        (rsa_encrypt("张三", platform.public_key()), "1234ABCD"),
    ):
        data = bill(user_name)
        status, body = await core.request(
            path, method=RequestType.POST, data=data, headers={"Wechatpay-Serial": named}
        )
        assert status == 400 and "PARAM_ERROR" in body, body
        assert await payouts.transfer_query(data["out_bill_no"]) is None
    async with httpx.AsyncClient(base_url=wechat_v3_sandbox.base_url) as http:
        unsigned = await http.post(path, json=bill(rsa_encrypt("张三", platform.public_key())))
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "SIGN_ERROR"
