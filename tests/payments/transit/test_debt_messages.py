"""A rider whose fare becomes a debt is told once: one `fare_debt` message (amount in yuan, days and lines, how to
repay) through the notification service, in the debt's transaction, whatever retries or races record the debt;
a debt rolled back tells nobody (docs/decisions/0024)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from payments.transit.tasks import check_transit_deductions, deduct_transit_fares
from tests.app_backend.notifications.helpers import (
    deliver,
    inbox_of,
    sent_at_wechat,
    wechat_grant,
    wechat_real_named,
)
from tests.helpers import bearer, code_minter, real_named
from tests.mini_programs.sandboxes import WechatMiniSandbox
from tests.payments.transit.test_debt_repayment import _in_debt
from tests.payments.transit.test_transit import (
    _build_trips,
    _ctx,
    _day,
    _deductions,
    _ride,
    _sign_wechat,
    _upload,
)


async def _fare_debt_messages(services: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT id, sender, sender_key, params FROM notifications.messages
               WHERE resident_id = $1 AND kind = 'fare_debt'""",
            uuid.UUID(person["resident_id"]),
        )
    return [dict(r) for r in rows]


async def _waiting_deduction(
    client: Any, services: Any, wechat: Any, metro: dict[str, Any], person: Any
) -> Any:
    """A deduction of two rides on line 1 (3 + 2 yuan) that WeChat accepted and never answered."""
    agreement = await _sign_wechat(client, person)
    await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions", {"outcome": "accept"}
    )
    codes = await code_minter(client, services, person)
    start = _day()
    await _upload(
        client,
        metro,
        _ride(codes, start, "泰州站", "海陵北路")
        + _ride(codes, start + dt.timedelta(hours=10), "泰州站", "鼓楼路"),
    )
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["amount_fen"]) == ("pending", 500)
    return deduction


async def test_a_debt_sends_one_fare_debt_message_to_the_inbox(client, services, wechat, metro):
    person = await _in_debt(client, services, wechat, metro)  # one bus fare (B2, 1 yuan), no agreement left
    (debt,) = await _deductions(services, person)

    (message,) = await inbox_of(client, person)
    assert (message["kind"], message["title"], message["sender_name"]) == (
        "fare_debt",
        "乘车欠款待补缴",
        "泰州通",
    )
    day = _day().date()
    assert message["body"].startswith(
        f"您{day.year}年{day.month}月{day.day}日乘坐线路B2的1次行程车费共1.00元"
    )
    assert "补缴" in message["body"] and "火车站" not in message["body"]  # never the stations
    assert message["params"] == {
        "amount": "1.00元",
        "amount_fen": "100",
        "date": f"{day.year}年{day.month}月{day.day}日",
        "lines": "B2",
        "trips": "1",
        "failure": "no-agreement",
        "debt_id": str(debt["id"]),
    }
    # No grant, no device: the inbox only.
    assert [(d["channel"], d["status"]) for d in message["deliveries"]] == [("inbox", "sent")]
    # Another run of the jobs finds nothing more to record, and tells nobody again.
    await deduct_transit_fares(_ctx(services))
    await check_transit_deductions(_ctx(services))
    assert len(await _fare_debt_messages(services, person)) == 1


async def test_a_rider_with_a_grant_gets_one_subscribe_message_however_many_jobs_race(
    client, services, wechat, metro, wechat_mini_sandbox: WechatMiniSandbox
):
    person = await wechat_real_named(client, services, wechat_mini_sandbox)
    template = await wechat_grant(client, wechat_mini_sandbox, person, "fare_debt")
    deduction = await _waiting_deduction(client, services, wechat, metro, person)

    # Three check jobs past the deduction window at once: the deduction becomes one debt, told once.
    window = services.payments.transit.policy.deduction_window
    later = dt.datetime.now(dt.UTC) + window
    await asyncio.gather(*(check_transit_deductions(_ctx(services), now=later) for _ in range(3)))
    (debt,) = await _deductions(services, person)
    assert (debt["status"], debt["failure"]) == ("failed", "unanswered")
    (stored,) = await _fare_debt_messages(services, person)
    assert (stored["sender"], stored["sender_key"]) == ("payments", f"transit-debt:{deduction['id']}")

    (message,) = await inbox_of(client, person)
    assert message["params"]["amount"] == "5.00元" and message["params"]["lines"] == "1"
    assert message["params"]["trips"] == "2" and message["params"]["failure"] == "unanswered"
    assert {d["channel"]: d["status"] for d in message["deliveries"]} == {
        "inbox": "sent",
        "wechat": "pending",
    }
    grants = (await client.get("/api/v1/me/subscribe-grants", headers=bearer(person))).json()["grants"]
    assert [(g["template_id"], g["remaining"]) for g in grants] == [(template, 0)]  # spent once

    await deliver(services)
    sent = await sent_at_wechat(wechat_mini_sandbox, person["openid"])
    assert [(m["template_id"], m["data"]["thing1"]["value"]) for m in sent] == [(template, "乘车欠款待补缴")]

    # Another check run finds the debt recorded: nothing more is sent.
    await check_transit_deductions(_ctx(services), now=later)
    assert len(await _fare_debt_messages(services, person)) == 1


async def test_a_debt_rolled_back_tells_nobody(client, services, wechat, metro):
    person = await real_named(client, services)
    deduction = await _waiting_deduction(client, services, wechat, metro, person)
    transit = services.payments.transit
    later = dt.datetime.now(dt.UTC) + transit.policy.deduction_window

    class Abandoned(Exception):
        pass

    try:
        async with services.pool.acquire() as conn, conn.transaction():
            assert await transit.resolve(conn, deduction["id"], None, later) == "failed"
            # Written in the debt's own transaction ...
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM notifications.messages WHERE resident_id = $1 AND kind = 'fare_debt'",
                    uuid.UUID(person["resident_id"]),
                )
                == 1
            )
            raise Abandoned  # ... which then fails (a crash, a later statement's error)
    except Abandoned:
        pass
    assert await _fare_debt_messages(services, person) == []
    assert await inbox_of(client, person) == []
    assert (await _deductions(services, person))[0]["status"] == "pending"

    # Recorded for real later: told then, once.
    async with services.pool.acquire() as conn, conn.transaction():
        assert await transit.resolve(conn, deduction["id"], None, later) == "failed"
    assert len(await inbox_of(client, person)) == 1
