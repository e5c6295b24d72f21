"""The ledger states what is true (issue 14, finding 5 and the check): a payment books what the channel keeps as a
channel fee and a refund what it gives back, reconciliation trues a fee up to the bill, and the ledger check
compares clearing with each final bill per channel and business day, failing on a refund the channel paid twice
or a payment credited that the channel never took."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from payments.ledger.service import ChannelDay
from tests.payments.helpers import ledger_ok
from tests.payments.reconciliation.test_reconciliation import Shop, _at
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

# Far-past business days, one per scenario, that no other test pays on (see test_reconciliation).
FEES_DAY = dt.date(2001, 8, 21)
TWICE_DAY = dt.date(2001, 9, 17)
FORGED_DAY = dt.date(2001, 10, 9)
TRUE_UP_DAY = dt.date(2001, 11, 5)


@pytest.fixture
async def shop(client: Any, services: Any, sandbox: WechatSandbox, alipay_sandbox: AlipaySandbox) -> Shop:
    from tests.helpers import login

    return Shop(client, services, sandbox, alipay_sandbox, await login(client))


async def _balances(services: Any, *accounts: str) -> list[int]:
    async with services.pool.acquire() as conn:
        return [int(await services.payments.ledger.balance(conn, a)) for a in accounts]


async def _day(services: Any, channel: str, day: dt.date) -> ChannelDay:
    async with services.pool.acquire() as conn:
        days = await services.payments.ledger.channel_days(conn)
        check = await services.payments.ledger.check(conn, against_bills=True)
    (found,) = [d for d in days if (d.channel, d.day) == (channel, day)]
    named = any(line.startswith(f"{channel} {day}:") for line in check.channel_days)
    assert named == found.differs, "the check names exactly the days that differ"
    return found


async def test_a_payment_books_what_the_channel_keeps_and_a_refund_what_it_gives_back(shop, services):
    """10,000 fen through Alipay at 0.6%: the channel holds 9,940 and keeps 60; the payee (a government fee: no
    platform fee) is owed 10,000, the platform bears the 60. A full refund gives it all back."""
    payee = (await shop.payee("alipay"))["organisation"]["id"]
    accounts = ("channel_clearing:alipay", "channel_fees:alipay", f"payee_payable:{payee}", "platform_fees")
    before = await _balances(services, *accounts)
    out_trade_no = await shop.paid("alipay", 10_000)
    after = await _balances(services, *accounts)
    assert [a - b for a, b in zip(after, before, strict=True)] == [9_940, 60, -10_000, 0]

    await shop.settle_refunds([await shop.refund(out_trade_no, 10_000)])
    refunded = await _balances(services, *accounts)
    assert [a - b for a, b in zip(refunded, before, strict=True)] == [0, 0, 0, 0]
    await ledger_ok(services)


@pytest.mark.parametrize("channel", ["alipay", "wechat"])
async def test_a_final_bill_and_clearing_agree_per_channel_and_day(shop, services, channel):
    for amount, hms in ((10_000, "09:00:00"), (750, "12:30:00"), (3_333, "18:00:00")):
        await shop.paid(channel, amount, _at(FEES_DAY, hms))
    report = await shop.reconcile(FEES_DAY)
    assert {c.channel: c.status for c in report.channels}[channel] == "balanced"
    day = await _day(services, channel, FEES_DAY)
    # 10,000 less 60, 750 less 5 (4.5 rounded half up), 3,333 less 20.
    assert (day.ledger_fen, day.bill_fen, day.differs) == (9_940 + 745 + 3_313, 9_940 + 745 + 3_313, False)


async def test_a_refund_the_channel_paid_twice_fails_the_check(shop, services):
    """Finding 1 as the check sees it: the bill lists a second refund under a number we never sent."""
    out_trade_no = await shop.paid("wechat", 6_000, _at(TWICE_DAY, "10:00:00"))
    order = shop.orders[out_trade_no]
    second = {"amount_fen": 3_000, "fee_fen": -18, "out_refund_no": "R" + uuid.uuid4().hex[:20]}
    await shop.bill_edits(
        "wechat",
        TWICE_DAY,
        [
            {
                "op": "add",
                "out_trade_no": order["out_trade_no"],
                "value": {**second, "at": f"{TWICE_DAY} 11:00:00"},
            }
        ],
    )
    await shop.reconcile(TWICE_DAY)
    day = await _day(services, "wechat", TWICE_DAY)
    assert day.bill_fen == (6_000 - 36) - (3_000 - 18) and day.ledger_fen == 6_000 - 36 and day.differs


async def test_a_payment_the_channel_never_took_fails_the_check(shop, services):
    """Finding 6 as the check sees it: a payment we credited (a forged notification, say) that the bill lacks."""
    out_trade_no = await shop.paid("alipay", 2_500, _at(FORGED_DAY, "10:00:00"))
    await shop.bill_edits("alipay", FORGED_DAY, [{"op": "drop", "out_trade_no": out_trade_no}])
    await shop.reconcile(FORGED_DAY)
    day = await _day(services, "alipay", FORGED_DAY)
    assert (day.ledger_fen, day.bill_fen) == (2_500 - 15, 0)


async def test_a_fee_the_bill_states_otherwise_is_trued_up_and_still_reported(shop, services):
    out_trade_no = await shop.paid("wechat", 1_400, _at(TRUE_UP_DAY, "10:00:00"))  # 8 fen at the rate
    await shop.bill_edits("wechat", TRUE_UP_DAY, [{"op": "fee", "out_trade_no": out_trade_no, "value": 11}])
    fees_before = (await _balances(services, "channel_fees:wechat"))[0]
    report = await shop.reconcile(TRUE_UP_DAY)
    (wechat,) = [c for c in report.channels if c.channel == "wechat"]
    assert [(d.klass, d.out_trade_no) for d in wechat.differences] == [("fee_mismatch", out_trade_no)]
    day = await _day(services, "wechat", TRUE_UP_DAY)
    assert (day.ledger_fen, day.bill_fen) == (1_400 - 11, 1_400 - 11)
    assert (await _balances(services, "channel_fees:wechat"))[0] - fees_before == 3
    await shop.reconcile(TRUE_UP_DAY)  # a re-run trues up nothing more
    assert (await _balances(services, "channel_fees:wechat"))[0] - fees_before == 3
    await ledger_ok(services)
