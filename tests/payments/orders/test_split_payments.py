"""A payment split between payees at order time (issue 14): an event ticket paid to the organising department with
the venue's share, each share owed and settled to its payee less the platform fee on it, refunds taking back from
every share in proportion, and splits that cannot be honoured refused naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from payments.settlement.service import BUSINESS_TZ
from tests.helpers import bearer, login, machine_credential, signed
from tests.payments.helpers import ledger_ok, signed_with_key
from tests.payments.sandboxes import WechatSandbox


def _body(main: dict[str, Any], amount: int, splits: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "purpose": "ticket",  # 60 basis points of platform fee
        "amount_fen": amount,
        "subject": "省运会 开幕式 门票",
        "payee_id": main["organisation"]["id"],
        "channel": "wechat",
        "method": "jsapi",
        "payer_channel_id": "o-openid-1",
        "splits": splits,
    }


async def _paid(client: Any, wechat: WechatSandbox, body: dict[str, Any]) -> dict[str, Any]:
    person = await login(client)
    created = await client.post(
        "/api/v1/payments/orders", headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex}, json=body
    )
    assert created.status_code == 201, created.text
    order: dict[str, Any] = created.json()
    note = (await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False}))[
        "notification"
    ]
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200
    return order


async def _payables(services: Any, *payees: dict[str, Any]) -> list[int]:
    async with services.pool.acquire() as conn:
        return [
            int(await services.payments.ledger.balance(conn, f"payee_payable:{p['organisation']['id']}"))
            for p in payees
        ]


@pytest.fixture
async def parties(client: Any, services: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    department = await machine_credential(
        client, services, ["payments:refund", "settlements:read"], kind="department"
    )
    venue = await machine_credential(client, services, ["settlements:read"], kind="merchant")
    return department, venue


async def test_a_split_payment_is_owed_and_settled_to_each_payee(client, services, wechat, parties):
    department, venue = parties
    order = await _paid(
        client,
        wechat,
        _body(department, 10_000, [{"payee_id": venue["organisation"]["id"], "amount_fen": 3_000}]),
    )
    # The department is owed 7000 less 42 of platform fee, the venue 3000 less 18.
    assert await _payables(services, department, venue) == [-(7_000 - 42), -(3_000 - 18)]

    seen = await signed(client, venue, "GET", f"/api/v1/payments/payee/orders/{order['id']}")
    assert seen.status_code == 200, seen.text
    assert [(s["payee_id"], s["amount_fen"], s["fee_fen"]) for s in seen.json()["shares"]] == [
        (department["organisation"]["id"], 7_000, 42),
        (venue["organisation"]["id"], 3_000, 18),
    ]
    stranger = await machine_credential(client, services, ["settlements:read"], kind="merchant")
    assert (
        await signed(client, stranger, "GET", f"/api/v1/payments/payee/orders/{order['id']}")
    ).status_code == 404

    today = dt.datetime.now(BUSINESS_TZ).date()
    async with services.pool.acquire() as conn, conn.transaction():
        settled = await services.payments.settlement.settle_day(conn, today)
    by_payee = {str(s.payee_id): s for s in settled}
    mine = by_payee[venue["organisation"]["id"]]
    assert (mine.gross_fen, mine.fees_fen, mine.net_fen) == (3_000, 18, 2_982)
    assert by_payee[department["organisation"]["id"]].net_fen == 6_958
    statement = await signed(client, venue, "GET", f"/api/v1/payments/settlements/{mine.id}/statement.csv")
    line = statement.text.splitlines()[1].split(",")
    assert line[2] == order["out_trade_no"] and line[6:9] == ["3000", "18", "2982"]
    await ledger_ok(services)


async def test_refunds_take_back_from_every_share_in_proportion(client, services, wechat, parties):
    department, venue = parties
    order = await _paid(
        client,
        wechat,
        _body(department, 10_000, [{"payee_id": venue["organisation"]["id"], "amount_fen": 3_000}]),
    )
    path = f"/api/v1/payments/orders/{order['id']}/refunds"
    assert (await signed_with_key(client, department, path, {"amount_fen": 5_000})).status_code in (201, 202)
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    # Half back: the venue gives back 1500 less its 9 of fee, the department 3500 less 21.
    assert await _payables(services, department, venue) == [
        -(7_000 - 42) + (3_500 - 21),
        -(3_000 - 18) + (1_500 - 9),
    ]
    assert (await signed_with_key(client, department, path, {"amount_fen": 5_000})).status_code in (201, 202)
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    assert await _payables(services, department, venue) == [0, 0]
    await ledger_ok(services)


async def test_a_split_the_order_cannot_honour_is_refused_naming_the_field(client, services, parties):
    department, venue = parties
    person = await login(client)
    venue_id = venue["organisation"]["id"]

    async def create(splits: list[dict[str, Any]]) -> Any:
        return await client.post(
            "/api/v1/payments/orders",
            headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
            json=_body(department, 1_000, splits),
        )

    cases = [
        ([{"payee_id": venue_id, "amount_fen": 1_000}], "splits"),
        (
            [{"payee_id": venue_id, "amount_fen": 100}, {"payee_id": venue_id, "amount_fen": 100}],
            "splits[1].payee_id",
        ),
        ([{"payee_id": department["organisation"]["id"], "amount_fen": 100}], "splits[0].payee_id"),
        ([{"payee_id": str(uuid.uuid4()), "amount_fen": 100}], "splits[0].payee_id"),
        ([{"payee_id": venue_id, "amount_fen": 0}], "splits"),
        ([{"payee_id": venue_id, "amount_fen": 1}] * 11, "splits"),
    ]
    for splits, field in cases:
        answer = await create(splits)
        assert answer.status_code == 400, (splits, answer.text)
        assert field in answer.text, (field, answer.text)
