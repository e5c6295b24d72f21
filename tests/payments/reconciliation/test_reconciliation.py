"""Daily reconciliation through the real sandboxes: orders and refunds made and paid through the app, discrepancies
seeded with the sandboxes' bill edits, and exactly those differences reported, each with its class.

Bill days, as the sandboxes (and the channels) draw them: a payment is on the bill of its payment time (Alipay
gmt_payment, WeChat time_end), a refund on the bill of its refund time, which is always "now" in both sandboxes.
So payment scenarios pay on far-past dates no other test uses (the app's paid_at comes from the notification,
which carries the sandbox's payment time) and are asserted exactly; refund scenarios are on today's bills, which
other tests share, and are asserted exactly for this test's trade numbers. Alipay bill edits replace the day's
edits, WeChat's are appended: every test posts each day's edits once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from app_backend.composition.sandboxes import alipay_config
from payments.reconciliation.schemas import ChannelReport, ReconciliationReport
from payments.reconciliation.service import BUSINESS_TZ
from tests.helpers import bearer, login, machine_credential, staff
from tests.paths import PROJECT
from tests.payments.helpers import signed_with_key
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

ROOT = PROJECT
# Far-past business days, one per scenario, that no other test pays on.
SEEDED_DAY = dt.date(2001, 3, 14)
CLEAN_DAY = dt.date(2001, 4, 2)
CROSSING_DAY = dt.date(2001, 5, 20)
CLI_DAY = dt.date(2001, 6, 11)
ADMIN_DAY = dt.date(2001, 7, 3)


def _at(day: dt.date, hms: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hms), BUSINESS_TZ)


class Shop:
    """A payer, a payee per channel, and the sandboxes: orders made and paid, refunds asked, through the app."""

    def __init__(
        self, client: Any, services: Any, wechat: WechatSandbox, alipay: AlipaySandbox, person: dict[str, Any]
    ) -> None:
        self.client, self.services, self.wechat, self.alipay, self.person = (
            client,
            services,
            wechat,
            alipay,
            person,
        )
        self.payees: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}

    async def payee(self, channel: str) -> dict[str, Any]:
        if channel not in self.payees:
            kind = "merchant" if channel == "wechat" else "department"
            self.payees[channel] = await machine_credential(
                self.client, self.services, ["payments:refund"], kind=kind
            )
        return self.payees[channel]

    async def order(self, channel: str, amount: int) -> dict[str, Any]:
        payee = await self.payee(channel)
        body: dict[str, Any] = {
            "amount_fen": amount,
            "payee_id": payee["organisation"]["id"],
            "channel": channel,
        }
        if channel == "wechat":
            body.update(purpose="ticket", subject="凤城河夜游", method="jsapi", payer_channel_id="o-openid-1")
        else:
            body.update(purpose="non_tax_fee", subject="泰州市不动产登记费", method="native")
        answer = await self.client.post(
            "/api/v1/payments/orders",
            headers={**bearer(self.person), "Idempotency-Key": uuid.uuid4().hex},
            json=body,
        )
        assert answer.status_code == 201, answer.text
        order: dict[str, Any] = answer.json()
        self.orders[order["out_trade_no"]] = order
        return order

    async def paid(
        self, channel: str, amount: int, at: dt.datetime | None = None, ours_at: dt.datetime | None = None
    ) -> str:
        """An order paid at the channel at `at` (now when None) and notified to the app as paid at `ours_at`
        (the same time when None): the app's paid_at is the notification's payment time."""
        out_trade_no = (await self.order(channel, amount))["out_trade_no"]
        if channel == "wechat":
            pay: dict[str, Any] = {"deliver": False}
            if at is not None:
                pay["time_end"] = at.strftime("%Y%m%d%H%M%S")
            note = (await self.wechat.control("POST", f"_sandbox/trades/{out_trade_no}/pay", pay))[
                "notification"
            ]
            if ours_at is not None:
                fields = {"time_end": ours_at.strftime("%Y%m%d%H%M%S")}
                note = (
                    await self.wechat.control(
                        "POST", f"_sandbox/trades/{out_trade_no}/notification", {"fields": fields}
                    )
                )["notification"]
        else:
            pay = {"deliver": False}
            if at is not None:
                pay["paid_at"] = at.strftime("%Y-%m-%d %H:%M:%S")
            note = (await self.alipay.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", pay))[
                "notification"
            ]
            if ours_at is not None:
                fields = {"gmt_payment": ours_at.strftime("%Y-%m-%d %H:%M:%S")}
                note = (
                    await self.alipay.control(
                        "POST", f"/_sandbox/trades/{out_trade_no}/notification", {"fields": fields}
                    )
                )["notification"]
        ack = await self.client.post(
            f"/api/v1/payments/notify/{channel}",
            content=note["body"],
            headers={"Content-Type": note["content_type"]},
        )
        assert ack.status_code == 200, ack.text
        async with self.services.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT status, paid_at FROM payments.orders WHERE out_trade_no = $1", out_trade_no
            )
        assert row["status"] == "paid"
        if at is not None or ours_at is not None:
            assert row["paid_at"] == (ours_at or at)
        return out_trade_no

    async def refund(self, out_trade_no: str, amount: int) -> str:
        order = self.orders[out_trade_no]
        path = f"/api/v1/payments/orders/{order['id']}/refunds"
        answer = await signed_with_key(
            self.client, await self.payee(order["channel"]), path, {"amount_fen": amount}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["out_refund_no"])

    async def settle_refunds(self, out_refund_nos: list[str]) -> None:
        """WeChat refunds are pending until asked about; polled until all of ours have succeeded."""
        deadline = time.monotonic() + 30
        while True:
            async with self.services.pool.acquire() as conn:
                async with conn.transaction():
                    await self.services.payments.refunds.settle_pending(conn)
                statuses = await conn.fetch(
                    "SELECT status FROM payments.refunds WHERE out_refund_no = ANY($1::text[])",
                    out_refund_nos,
                )
            if len(statuses) == len(out_refund_nos) and {r["status"] for r in statuses} == {"succeeded"}:
                return
            assert time.monotonic() < deadline, statuses

    async def bill_edits(self, channel: str, day: dt.date, edits: list[dict[str, Any]]) -> None:
        sandbox: Any = self.wechat if channel == "wechat" else self.alipay
        path = "_sandbox/bill-edits" if channel == "wechat" else "/_sandbox/bill-edits"
        await sandbox.control("POST", path, {"day": day.isoformat(), "edits": edits})

    async def reconcile(self, day: dt.date) -> ReconciliationReport:
        report: ReconciliationReport = await self.services.payments.reconciliation.run(
            day, ["alipay", "wechat"]
        )
        return report


@pytest.fixture
async def shop(client: Any, services: Any, sandbox: WechatSandbox, alipay_sandbox: AlipaySandbox) -> Shop:
    return Shop(client, services, sandbox, alipay_sandbox, await login(client))


def _channel(report: ReconciliationReport, name: str) -> ChannelReport:
    (found,) = [c for c in report.channels if c.channel == name]
    return found


def _classes(channel: ChannelReport, mine: set[str] | None = None) -> set[tuple[str, str, str | None]]:
    return {
        (d.klass, d.out_trade_no, d.out_refund_no)
        for d in channel.differences
        if mine is None or d.out_trade_no in mine
    }


def _unknown_trade_no() -> str:
    return "TZX" + uuid.uuid4().hex[:20].upper()


async def _seed_payment_discrepancies(shop: Shop, channel: str, day: dt.date) -> dict[str, str]:
    """Six orders paid on `day`; five of their lines edited and one unknown trade added."""
    nos = {
        "clean": await shop.paid(channel, 750, _at(day, "09:00:00")),  # 4.5 fen of fee: half up to 5
        "dropped": await shop.paid(channel, 1000, _at(day, "10:00:00")),
        "over": await shop.paid(channel, 1200, _at(day, "11:00:00")),
        "short": await shop.paid(channel, 1300, _at(day, "12:00:00")),
        "fee": await shop.paid(channel, 1400, _at(day, "13:00:00")),
        "status": await shop.paid(channel, 1500, _at(day, "14:00:00")),
        "unknown": _unknown_trade_no(),
    }
    unknown = {"amount_fen": 888, "fee_fen": 5, "at": f"{day.isoformat()} 15:00:00"}
    await shop.bill_edits(
        channel,
        day,
        [
            {"op": "drop", "out_trade_no": nos["dropped"]},
            {"op": "amount", "out_trade_no": nos["over"], "value": 1300},
            {"op": "amount", "out_trade_no": nos["short"], "value": 1299},
            {"op": "fee", "out_trade_no": nos["fee"], "value": 9},  # 1400 fen at 0.6% is 8
            {
                "op": "status",
                "out_trade_no": nos["status"],
                "value": "REVOKED" if channel == "wechat" else "交易关闭",
            },
            {
                "op": "add",
                "out_trade_no": nos["unknown"],
                "value": unknown if channel == "wechat" else {**unknown, "kind": "payment"},
            },
        ],
    )
    return nos


async def test_a_bill_with_seeded_discrepancies_gives_exactly_those_differences(shop, db):
    seeded = {
        channel: await _seed_payment_discrepancies(shop, channel, SEEDED_DAY)
        for channel in ("alipay", "wechat")
    }
    report = await shop.reconcile(SEEDED_DAY)

    assert report.day == SEEDED_DAY and [c.channel for c in report.channels] == ["alipay", "wechat"]
    for channel, nos in seeded.items():
        run = _channel(report, channel)
        assert _classes(run) == {
            ("missing_at_channel", nos["dropped"], None),
            ("amount_over", nos["over"], None),
            ("amount_short", nos["short"], None),
            ("fee_mismatch", nos["fee"], None),
            ("status_mismatch", nos["status"], None),
            ("missing_at_platform", nos["unknown"], None),
        }, channel
        assert (run.status, run.bill_lines, run.our_items, run.matched, run.difference_count) == (
            "differences",
            6,
            6,
            1,
            6,
        )
        assert (run.pooled, run.resolved, run.escalated, run.error) == (0, 0, 0, None)
        assert "0.6%" in run.fee_rule and "half up" in run.fee_rule
        by_class = {d.klass: d for d in run.differences}
        over, short = by_class["amount_over"], by_class["amount_short"]
        assert (over.ours_amount_fen, over.theirs_amount_fen) == (1200, 1300)
        assert (short.ours_amount_fen, short.theirs_amount_fen) == (1300, 1299)
        fee = by_class["fee_mismatch"]
        assert (fee.expected_fee_fen, fee.theirs_fee_fen, fee.ours_amount_fen) == (8, 9, 1400)
        status = by_class["status_mismatch"]
        assert (status.ours_status, status.theirs_status) == (
            "paid",
            "closed" if channel == "wechat" else "交易关闭",
        )
        missing = by_class["missing_at_channel"]
        assert (missing.ours_amount_fen, missing.theirs_amount_fen) == (1000, None)
        unknown = by_class["missing_at_platform"]
        assert (unknown.ours_amount_fen, unknown.theirs_amount_fen, unknown.theirs_fee_fen) == (None, 888, 5)

    # Running the day again replaces its report: the same differences, one run per channel.
    again = await shop.reconcile(SEEDED_DAY)
    for channel in seeded:
        assert _classes(_channel(again, channel)) == _classes(_channel(report, channel))
        assert _channel(again, channel).run_id != _channel(report, channel).run_id
    assert (
        await db.fetchval("SELECT count(*) FROM payments.reconciliation_runs WHERE day = $1", SEEDED_DAY) == 2
    )
    assert (
        await db.fetchval(
            """SELECT count(*) FROM payments.reconciliation_differences d
               JOIN payments.reconciliation_runs r ON r.id = d.run_id WHERE r.day = $1""",
            SEEDED_DAY,
        )
        == 12
    )


async def test_a_clean_day_has_no_differences(shop):
    paid = {
        channel: {
            await shop.paid(channel, amount, _at(CLEAN_DAY, hms))
            for amount, hms in ((750, "08:00:00"), (2500, "12:30:00"), (1, "23:50:00"))
        }
        for channel in ("alipay", "wechat")
    }
    report = await shop.reconcile(CLEAN_DAY)
    for channel in paid:
        run = _channel(report, channel)
        assert (run.status, run.bill_lines, run.our_items, run.matched, run.difference_count, run.pooled) == (
            "balanced",
            3,
            3,
            3,
            0,
            0,
        )
        assert run.differences == [] and run.pool == []


async def test_refunds_are_matched_by_refund_number_and_their_discrepancies_classified(shop):
    now = dt.datetime.now(BUSINESS_TZ)
    if now.time() >= dt.time(23, 50):
        pytest.skip("refunds are billed at the time they happen: too close to midnight for one business day")
    today = now.date()
    for channel in ("alipay", "wechat"):
        orders = [await shop.paid(channel, amount) for amount in (1000, 1000, 1000, 1000, 1000)]
        refunds = {
            name: await shop.refund(no, amount)
            for name, no, amount in zip(
                ("clean", "dropped", "over", "status", "fee"), orders, (100, 200, 300, 400, 500), strict=True
            )
        }
        await shop.settle_refunds(list(refunds.values()))
        unknown_refund = "RX" + uuid.uuid4().hex[:20].upper()
        unknown = {"amount_fen": 50, "fee_fen": 0, "out_refund_no": unknown_refund}
        await shop.bill_edits(
            channel,
            today,
            [
                {"op": "drop", "out_trade_no": orders[1], "out_refund_no": refunds["dropped"]},
                {"op": "amount", "out_trade_no": orders[2], "out_refund_no": refunds["over"], "value": 350},
                {
                    "op": "status",
                    "out_trade_no": orders[3],
                    "out_refund_no": refunds["status"],
                    "value": "FAIL" if channel == "wechat" else "退款失败",
                },
                # 500 fen at 0.6% is 3 fen, given back: -3 on the bill
                {"op": "fee", "out_trade_no": orders[4], "out_refund_no": refunds["fee"], "value": -4},
                {
                    "op": "add",
                    "out_trade_no": orders[0],
                    "value": unknown if channel == "wechat" else {**unknown, "kind": "refund"},
                },
            ],
        )
        report = await shop.reconcile(today)
        run = _channel(report, channel)
        assert run.status == "differences" and run.error is None
        mine = set(orders)
        assert _classes(run, mine) == {
            ("missing_at_channel", orders[1], refunds["dropped"]),
            ("amount_over", orders[2], refunds["over"]),
            ("status_mismatch", orders[3], refunds["status"]),
            ("fee_mismatch", orders[4], refunds["fee"]),
            ("missing_at_platform", orders[0], unknown_refund),
        }, channel
        by_class = {d.klass: d for d in run.differences if d.out_trade_no in mine}
        assert all(d.kind == "refund" for d in by_class.values())
        assert (by_class["amount_over"].ours_amount_fen, by_class["amount_over"].theirs_amount_fen) == (
            300,
            350,
        )
        assert by_class["status_mismatch"].ours_status == "succeeded"
        assert by_class["status_mismatch"].theirs_status == ("failed" if channel == "wechat" else "退款失败")
        assert (by_class["fee_mismatch"].expected_fee_fen, by_class["fee_mismatch"].theirs_fee_fen) == (
            -3,
            -4,
        )
        assert not [p for p in run.pool if p.out_trade_no in mine]


async def test_items_crossing_midnight_wait_in_the_pool_and_the_next_day_resolves_or_escalates_them(shop, db):
    day, next_day = CROSSING_DAY, CROSSING_DAY + dt.timedelta(days=1)
    # WeChat bills it just after midnight; we recorded it just before.
    w_late_bill = await shop.paid("wechat", 1100, _at(next_day, "00:00:02"), ours_at=_at(day, "23:59:58"))
    # Ours just before midnight, and the channel's bill never has it.
    w_lost = await shop.paid("wechat", 1200, _at(day, "23:59:50"))
    # Alipay bills it just before midnight; we recorded it just after.
    a_early_bill = await shop.paid("alipay", 1300, _at(day, "23:59:59"), ours_at=_at(next_day, "00:00:01"))
    # The same, and the bill's amount is 10 fen over ours.
    a_over = await shop.paid("alipay", 1400, _at(day, "23:59:58"), ours_at=_at(next_day, "00:00:03"))
    # A line near midnight for a trade we never had.
    a_unknown = _unknown_trade_no()
    await shop.bill_edits("wechat", day, [{"op": "drop", "out_trade_no": w_lost}])
    await shop.bill_edits(
        "alipay",
        day,
        [
            {"op": "amount", "out_trade_no": a_over, "value": 1410},
            {
                "op": "add",
                "out_trade_no": a_unknown,
                "value": {"kind": "payment", "amount_fen": 500, "fee_fen": 3, "at": f"{day} 23:59:57"},
            },
        ],
    )
    # One same-day pair on each side of midnight, for company.
    w_plain = await shop.paid("wechat", 900, _at(next_day, "09:00:00"))
    a_plain = await shop.paid("alipay", 900, _at(day, "09:00:00"))

    first = await shop.reconcile(day)
    wechat, alipay = _channel(first, "wechat"), _channel(first, "alipay")
    assert wechat.differences == [] and alipay.differences == []
    assert (wechat.status, wechat.bill_lines, wechat.our_items, wechat.matched, wechat.pooled) == (
        "balanced",
        0,
        2,
        0,
        2,
    )
    assert (alipay.status, alipay.bill_lines, alipay.our_items, alipay.matched, alipay.pooled) == (
        "balanced",
        4,
        1,
        1,
        3,
    )
    assert {(p.side, p.out_trade_no, p.state) for p in wechat.pool} == {
        ("ours", w_late_bill, "pending"),
        ("ours", w_lost, "pending"),
    }
    assert {(p.side, p.out_trade_no, p.state) for p in alipay.pool} == {
        ("theirs", a_early_bill, "pending"),
        ("theirs", a_over, "pending"),
        ("theirs", a_unknown, "pending"),
    }

    second = await shop.reconcile(next_day)
    wechat, alipay = _channel(second, "wechat"), _channel(second, "alipay")
    assert _classes(wechat) == {("missing_at_channel", w_lost, None)}
    assert (wechat.matched, wechat.resolved, wechat.escalated, wechat.pooled) == (
        2,
        1,
        1,
        0,
    )  # w_plain, w_late_bill
    assert _classes(alipay) == {("amount_over", a_over, None), ("missing_at_platform", a_unknown, None)}
    assert (alipay.matched, alipay.resolved, alipay.escalated, alipay.pooled) == (1, 2, 1, 0)  # a_early_bill
    over = next(d for d in alipay.differences if d.klass == "amount_over")
    assert (over.ours_amount_fen, over.theirs_amount_fen) == (1400, 1410) and "crossed midnight" in over.note
    lost = next(d for d in wechat.differences if d.klass == "missing_at_channel")
    assert f"in neither the {day} nor the {next_day} bill" in lost.note
    assert {(p.out_trade_no, p.state) for p in wechat.carried + alipay.carried} == {
        (w_late_bill, "resolved"),
        (w_lost, "escalated"),
        (a_early_bill, "resolved"),
        (a_over, "resolved"),
        (a_unknown, "escalated"),
    }
    assert w_plain and a_plain

    # The first day's report shows how its pool was settled; re-running either day changes nothing.
    async with shop.services.pool.acquire() as conn:
        stored = await shop.services.payments.reconciliation.report(conn, day)
    assert {(p.out_trade_no, p.state, p.settled_day) for c in stored.channels for p in c.pool} == {
        (w_late_bill, "resolved", next_day),
        (w_lost, "escalated", next_day),
        (a_early_bill, "resolved", next_day),
        (a_over, "resolved", next_day),
        (a_unknown, "escalated", next_day),
    }
    assert _classes(_channel(await shop.reconcile(next_day), "alipay")) == _classes(alipay)
    assert _classes(_channel(await shop.reconcile(next_day), "wechat")) == _classes(wechat)
    rerun = await shop.reconcile(day)
    assert all(c.differences == [] and c.pooled == len(c.pool) for c in rerun.channels)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payments.reconciliation_pool WHERE origin_day = $1 AND state = 'pending'",
            day,
        )
        == 0
    )


def _payment_config(tmp: Path, wechat: WechatSandbox, alipay: AlipaySandbox) -> Path:
    key_file = tmp / "wechat_api_key.txt"
    key_file.write_text(wechat.merchant["api_key"])
    config = {
        "wechat": {
            "appid": wechat.merchant["appid"],
            "mch_id": wechat.merchant["mch_id"],
            "api_key_file": str(key_file),
            "api_base_url": wechat.base_url,
            "papay_plan_id": str(wechat.merchant.get("plan_id", "")),
        },
        "alipay": alipay_config(alipay.state_dir, alipay.url),
    }
    path = tmp / "payment-channels.json"
    path.write_text(json.dumps(config))
    return path


async def _tzt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, in a thread so the tests' event loop (and the app in it) keeps going."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app_backend.composition.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_tzt_reconcile_prints_the_report(shop, backing, data_dir, tmp_path):
    nos = {
        channel: (
            await shop.paid(channel, 2000, _at(CLI_DAY, "10:00:00")),
            await shop.paid(channel, 3000, _at(CLI_DAY, "11:00:00")),
        )
        for channel in ("alipay", "wechat")
    }
    for channel, (_, short) in nos.items():
        await shop.bill_edits(channel, CLI_DAY, [{"op": "amount", "out_trade_no": short, "value": 2990}])
    env = {
        **os.environ,
        **backing.env(),
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "test",
        "TZT_PAYMENT_CONFIG": str(_payment_config(tmp_path, shop.wechat, shop.alipay)),
    }
    done = await _tzt(env, "reconcile", "--date", CLI_DAY.isoformat())
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"Reconciliation of {CLI_DAY} (Asia/Shanghai)\n"), out  # logs go to stderr
    for channel, (_, short) in nos.items():
        assert (
            f"{channel}: differences - bill lines 2, ours 2, matched 1, differences 1, pooled 0, resolved 0, "
            "escalated 0"
        ) in out
        (line,) = [line for line in out.splitlines() if short in line]
        assert (
            line.split()[:3] == ["amount_short", "payment", short]
            and "ours 3000 paid  theirs 2990 paid" in line
        )
    # What the CLI stored is what operations read.
    async with shop.services.pool.acquire() as conn:
        stored = await shop.services.payments.reconciliation.report(conn, CLI_DAY)
    assert {(c.channel, d.klass, d.out_trade_no) for c in stored.channels for d in c.differences} == {
        (channel, "amount_short", short) for channel, (_, short) in nos.items()
    }

    bad = await _tzt(env, "reconcile", "--date", "2001-13-01")
    assert bad.returncode == 2 and "is not a date" in bad.stderr


async def test_tzt_reconcile_without_channels_says_what_is_missing_and_fails(backing, data_dir, tmp_path):
    """Issue 14, finding 7: without a payment configuration `tzt reconcile` reconciled nothing and exited 0, which
    a cron job reads as a clean day. Now: exit 2 and a message naming what is missing."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "TZT_PAYMENT_CONFIG"},
        **backing.env(),
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "test",
    }
    unset = await _tzt(env, "reconcile", "--date", CLI_DAY.isoformat())
    assert unset.returncode == 2 and "TZT_PAYMENT_CONFIG" in unset.stderr, unset.stderr
    assert "nothing reconciled" in unset.stderr and unset.stdout == ""
    missing = await _tzt(
        {**env, "TZT_PAYMENT_CONFIG": str(tmp_path / "absent.json")},
        "reconcile",
        "--date",
        CLI_DAY.isoformat(),
    )
    assert missing.returncode == 2 and f"{tmp_path / 'absent.json'}, which does not exist" in missing.stderr
    empty = tmp_path / "payment-channels.json"
    empty.write_text("{}")
    none = await _tzt({**env, "TZT_PAYMENT_CONFIG": str(empty)}, "reconcile", "--date", CLI_DAY.isoformat())
    assert none.returncode == 2 and "names no channel" in none.stderr, none.stderr


async def test_operations_read_the_report_and_others_are_refused(shop, client, services, db):
    dropped = await shop.paid("wechat", 4321, _at(ADMIN_DAY, "16:00:00"))
    kept = await shop.paid("alipay", 1234, _at(ADMIN_DAY, "16:00:00"))
    await shop.bill_edits("wechat", ADMIN_DAY, [{"op": "drop", "out_trade_no": dropped}])
    await shop.reconcile(ADMIN_DAY)
    path = "/api/v1/admin/reconciliation"

    for role in ("ops_admin", "auditor"):
        reader = await staff(client, services, role)
        answer = await client.get(path, params={"date": ADMIN_DAY.isoformat()}, headers=bearer(reader))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["day"] == ADMIN_DAY.isoformat() and body["timezone"] == "Asia/Shanghai"
        channels = {c["channel"]: c for c in body["channels"]}
        assert channels["wechat"]["differences"] == [
            {
                "class": "missing_at_channel",
                "kind": "payment",
                "out_trade_no": dropped,
                "out_refund_no": None,
                "ours_amount_fen": 4321,
                "theirs_amount_fen": None,
                "ours_status": "paid",
                "theirs_status": None,
                "expected_fee_fen": None,
                "theirs_fee_fen": None,
                "note": "",
            }
        ]
        assert channels["alipay"]["status"] == "balanced" and channels["alipay"]["matched"] == 1
        assert await db.fetchval(
            """SELECT count(*) FROM audit.events WHERE actor_id = $1 AND action = 'admin.reconciliation_view'
               AND target_id = $2 AND outcome = 'success'""",
            reader["resident_id"],
            ADMIN_DAY.isoformat(),
        )
    assert kept

    admin = await staff(client, services)
    nothing = await client.get(path, params={"date": "1999-01-01"}, headers=bearer(admin))
    assert nothing.status_code == 404
    no_date = await client.get(path, headers=bearer(admin))
    assert no_date.status_code == 400

    for outsider in (await login(client), await staff(client, services, "ops_reviewer")):
        refused = await client.get(path, params={"date": ADMIN_DAY.isoformat()}, headers=bearer(outsider))
        assert refused.status_code == 403
        assert dropped not in refused.text
        assert await db.fetchval(
            """SELECT count(*) FROM audit.events WHERE actor_id = $1 AND action = 'admin.access'
               AND outcome = 'denied'""",
            outsider["resident_id"],
        )
    assert (await client.get(path, params={"date": ADMIN_DAY.isoformat()})).status_code == 401
