"""The platform's own senders (payments' transit debts, code_service's status changes) reach the notification
service through the kernel's SendMessage port: once per key, in the sender's transaction, with templates in the
demo configuration that their messages fill."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from structlog.testing import capture_logs

from app_backend.kernel.messages import PlatformMessage
from code_service.codes.service import code_status_message
from mini_programs.sandbox.config import demo_templates
from payments.transit.repository import DeductionRow, TripRow
from payments.transit.service import fare_debt_message
from tests.app_backend.notifications.helpers import inbox_of, notifications_of
from tests.helpers import login


def _message(key: str, title: str = "乘车欠款待补缴") -> PlatformMessage:
    return PlatformMessage(
        kind="fare_debt",
        title=title,
        body="您有一笔 3.00 元的乘车费用未能扣款",
        sender="payments",
        sender_name="泰州通",
        key=key,
        params={"amount": "3.00元"},
    )


async def _send(services: Any, resident_id: uuid.UUID, message: PlatformMessage) -> bool:
    async with services.pool.acquire() as conn, conn.transaction():
        return await notifications_of(services).send_platform(conn, resident_id, message)


async def test_a_platform_message_is_sent_once_per_key_also_when_senders_race(client, services):
    resident = await login(client)
    resident_id = uuid.UUID(resident["resident_id"])
    key = f"transit-debt:{uuid.uuid4()}"
    assert await _send(services, resident_id, _message(key)) is True
    assert await _send(services, resident_id, _message(key)) is False
    raced = f"transit-debt:{uuid.uuid4()}"
    written = await asyncio.gather(*(_send(services, resident_id, _message(raced)) for _ in range(5)))
    assert sorted(written) == [False] * 4 + [True]
    inbox = await inbox_of(client, resident)
    assert [(m["kind"], m["params"]) for m in inbox] == [("fare_debt", {"amount": "3.00元"})] * 2


async def test_a_message_the_drafts_refuse_is_logged_without_its_content_and_not_sent(client, services):
    resident = await login(client)
    too_long = "乘车欠款待补缴" * 3  # 21 characters: a title has at most 20
    with capture_logs() as logs:
        sent = await _send(services, uuid.UUID(resident["resident_id"]), _message("k", title=too_long))
    assert sent is False
    assert await inbox_of(client, resident) == []
    (refused,) = [e for e in logs if e["event"] == "platform message refused"]
    assert (refused["sender"], refused["kind"], refused["log_level"]) == ("payments", "fare_debt", "error")
    assert too_long not in repr(logs)


def _debt() -> tuple[DeductionRow, list[TripRow]]:
    at = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    debt = DeductionRow(
        id=uuid.uuid4(),
        resident_id=uuid.uuid4(),
        payee_id=uuid.uuid4(),
        agreement_id=None,
        order_id=None,
        out_trade_no=None,
        channel="",
        amount_fen=1250,
        status="failed",
        failure="refused",
        overpaid=False,
        created_at=at,
        sent_at=None,
        resolved_at=at,
        cleared_at=None,
        cleared_by="",
    )
    trips = [
        TripRow(
            id=uuid.uuid4(),
            resident_id=debt.resident_id,
            operator_id=debt.payee_id,
            kind="paired",
            line_in=line,
            station_in="泰州站",
            started_at=at + dt.timedelta(days=day),
            line_out=line,
            station_out="高港",
            ended_at=at + dt.timedelta(days=day, minutes=30),
            day=(at + dt.timedelta(days=day)).date(),
            fare_fen=250,
            charged_fen=250,
            status="debt",
            deduction_id=debt.id,
        )
        for day, line in enumerate(("1", "B1", "B2", "B8", "1"))
    ]
    return debt, trips


def test_a_fare_debt_message_names_the_amount_days_and_lines_but_no_station() -> None:
    debt, trips = _debt()
    message = fare_debt_message(debt, trips)
    assert message.key == f"transit-debt:{debt.id}"
    assert message.body.startswith("您2026年3月1日~2026年3月5日乘坐线路1、B1、B2等的5次行程车费共12.50元，")
    assert "免密扣款被支付渠道拒绝" in message.body and "泰州站" not in message.body + repr(message.params)
    assert (message.params["amount"], message.params["lines"], message.params["trips"]) == (
        "12.50元",
        "1、B1、B2等",
        "5",
    )


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_the_demo_templates_carry_every_platform_message(channel: str) -> None:
    """`make run`'s city apps have a template for both kinds, filled by what the platform's messages hold: a
    demo resident who grants them receives them."""
    templates = demo_templates(channel)
    debt, trips = _debt()
    for message in (
        fare_debt_message(debt, trips),
        *(
            code_status_message(what, uuid.uuid4(), "1")
            for what in ("health", "medical", "blocked", "restored")
        ),
    ):
        template = templates[message.kind]
        assert set(template["fields"].values()) <= {"title", "body", *message.params}, message.kind
