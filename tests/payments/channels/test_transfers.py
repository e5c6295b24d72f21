"""The PayoutChannel of both adapters against their sandboxes: one number is one transfer, a refusal is FAILED with
the channel's reason, and everything whose outcome is unknown (no answer, a 5xx, a system error, an answer that
cannot be trusted, the number reused with other parameters) raises ChannelUnavailable, to be settled by query."""

from __future__ import annotations

import secrets

import pytest

from payments.channels.alipay import AlipayChannel
from payments.channels.base import ChannelUnavailable, PayoutAccount, PayoutChannel, TransferStatus
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

CHANNELS = ("alipay", "wechat")


def _number() -> str:
    return "P" + secrets.token_hex(10)


def _account(channel: str, name: str = "张三") -> PayoutAccount:
    if channel == "alipay":
        return PayoutAccount("ALIPAY_LOGON_ID", f"t{secrets.token_hex(4)}@example.com", name)
    return PayoutAccount("WECHAT_OPENID", "o" + secrets.token_hex(10), name)


def _channel(channel: str, alipay: AlipaySandbox, wechat: WechatSandbox) -> PayoutChannel:
    return AlipayChannel(alipay.config()) if channel == "alipay" else wechat.channel()


async def _fault(
    channel: str, alipay: AlipaySandbox, wechat: WechatSandbox, mode: str, **extra: object
) -> None:
    if channel == "alipay":
        await alipay.fault("alipay.fund.trans.uni.transfer", mode, **extra)
    else:
        await wechat.fault("mmpaymkttransfers/promotion/transfers", mode, **extra)


@pytest.mark.parametrize("channel", CHANNELS)
async def test_the_same_number_is_the_same_transfer(alipay, wechat, channel):
    payouts = _channel(channel, alipay, wechat)
    number, account = _number(), _account(channel)
    assert await payouts.transfer_query(number) is None
    first = await payouts.transfer(number, 1_234, account, "结算")
    again = await payouts.transfer(number, 1_234, account, "结算")
    assert first.status == again.status == TransferStatus.SUCCEEDED
    assert first.channel_order_id and first.channel_order_id == again.channel_order_id
    found = await payouts.transfer_query(number)
    assert found is not None and (found.status, found.amount_fen) == (TransferStatus.SUCCEEDED, 1_234)
    sandbox = alipay if channel == "alipay" else wechat
    held = await sandbox.control("GET", f"/_sandbox/transfers?identity={account.identity}")
    assert held["paid_fen"] == 1_234 and len(held["transfers"]) == 1
    with pytest.raises(
        ChannelUnavailable
    ):  # the number reused with another amount: ask the query, not a guess
        await payouts.transfer(number, 999, account, "结算")


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_refusal_is_failed_with_the_channels_reason(alipay, wechat, channel):
    payouts = _channel(channel, alipay, wechat)
    sandbox = alipay if channel == "alipay" else wechat
    closed = _account(channel)
    await sandbox.control(
        "POST", f"/_sandbox/payees/{closed.identity}", {"name": closed.name, "state": "closed"}
    )
    refused = await payouts.transfer(_number(), 500, closed, "结算")
    assert refused.status == TransferStatus.FAILED and refused.reason
    await _fault(channel, alipay, wechat, "refuse")
    short = await payouts.transfer(_number(), 500, _account(channel), "结算")
    assert short.status == TransferStatus.FAILED
    assert ("PAYER_BALANCE_NOT_ENOUGH" if channel == "alipay" else "NOTENOUGH") in (short.reason or "")


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("mode", ["error", "tamper"])
async def test_an_unknown_outcome_raises_and_the_query_settles_it(alipay, wechat, channel, mode):
    payouts = _channel(channel, alipay, wechat)
    number = _number()
    await _fault(channel, alipay, wechat, mode)
    with pytest.raises(ChannelUnavailable):
        await payouts.transfer(number, 700, _account(channel), "结算")
    found = await payouts.transfer_query(number)
    # A 5xx never processed the call; a tampered answer was for a transfer the channel made.
    assert (
        (found is None)
        if mode == "error"
        else (found is not None and found.status == TransferStatus.SUCCEEDED)
    )


async def test_a_wechat_system_error_is_an_unknown_outcome(wechat):
    await wechat.fault("mmpaymkttransfers/promotion/transfers", "refuse", err_code="SYSTEMERROR")
    with pytest.raises(ChannelUnavailable):
        await wechat.channel().transfer(_number(), 700, _account("wechat"), "结算")


async def test_an_alipay_system_error_is_an_unknown_outcome(alipay):
    await alipay.fault(
        "alipay.fund.trans.uni.transfer", "refuse", sub_code="SYSTEM_ERROR", sub_msg="系统繁忙"
    )
    with pytest.raises(ChannelUnavailable):
        await AlipayChannel(alipay.config()).transfer(_number(), 700, _account("alipay"), "结算")
