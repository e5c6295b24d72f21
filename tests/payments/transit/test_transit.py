"""Transit, ride first and pay later, through the app and the channel sandboxes: agreements decide who may ride,
gates' taps become trips and capped fares, fares are deducted in batches, a failed deduction is a debt that puts
the rider on the deny list (online at once, offline at the next sync) until a repayment clears it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from code_service.holder import DeviceWallet
from code_service.verifier import OfflineVerifier
from code_service.verifier.base45 import b45decode, b45encode
from code_service.verifier.denylist import unpack_ids
from payments.transit.tasks import (
    build_transit_trips,
    check_transit_deductions,
    deduct_transit_fares,
    poll_transit_agreements,
)
from tests.helpers import (
    bearer,
    code_minter,
    machine_credential,
    opened,
    personal_code,
    real_named,
    register_device,
    scene_keys_of,
    signed,
    verify,
)

TRANSIT = "/api/v1/payments/transit"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
BEIJING = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
async def operator(client: Any, services: Any) -> dict[str, Any]:
    """A metro operator: its gates verify, sync the deny list and upload taps; it is paid the fares."""
    return await machine_credential(client, services, ["verify:transit", "gates:sync", "gates:taps"])


# --- helpers ------------------------------------------------------------------------------------------------


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


async def _build_trips(services: Any) -> dict[str, int]:
    """The trip job, run until every uploaded tap is taken over: taps other tests uploaded (the gates' tests upload
    thousands without riders) come first, a batch at a time, and must not hide this test's."""
    total: dict[str, int] = {}
    while True:
        counts = await build_transit_trips(_ctx(services))
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value
        if not counts.get("taken"):
            return total


def _ctx(services: Any) -> dict[str, Any]:
    return {"platform": services.platform}


async def _ledger_ok(services: Any) -> None:
    async with services.pool.acquire() as conn:
        check = await services.payments.ledger.check(conn)
    assert check.ok, check


async def _balance(services: Any, account: str) -> int:
    async with services.pool.acquire() as conn:
        return int(await services.payments.ledger.balance(conn, account))


async def _deliver(client: Any, channel: str, note: dict[str, str]) -> None:
    content_type = FORM if channel == "alipay" else note["content_type"]
    ack = await client.post(
        f"/api/v1/payments/notify/{channel}", content=note["body"], headers={"Content-Type": content_type}
    )
    assert ack.status_code == 200, ack.text


async def _sign_wechat(client: Any, person: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    """The rider asks to sign, opens the papay page and confirms; WeChat's notification reaches the app."""
    made = await client.post(
        f"{TRANSIT}/agreements",
        headers=bearer(person),
        json={"channel": "wechat", "payer_channel_id": "oRider" + uuid.uuid4().hex[:12]},
    )
    assert made.status_code == 201, made.text
    agreement = made.json()
    assert agreement["status"] == "pending" and agreement["sign_params"]["url"]
    async with httpx.AsyncClient() as http:
        confirmed = await http.get(agreement["sign_params"]["url"])
    assert confirmed.status_code == 200, confirmed.text
    if notify:
        await _deliver(client, "wechat", confirmed.json()["notification"])
    return agreement  # type: ignore[no-any-return]


async def _status_of(client: Any, person: dict[str, Any], agreement_id: str) -> str:
    mine = await client.get(f"{TRANSIT}/agreements", headers=bearer(person))
    assert mine.status_code == 200, mine.text
    return next(a["status"] for a in mine.json() if a["id"] == agreement_id)  # type: ignore[no-any-return]


async def _subject(client: Any, person: dict[str, Any]) -> str:
    # A code names its holder to the platform only (docs/code-format.md, version 2): the platform's reading of one
    # stands in for what a tap names, until taps carry the scanned code itself.
    return (await opened(client.app.state.services, await personal_code(client, person))).subject.hex()


async def _ride_answer(client: Any, gate: dict[str, Any], person: dict[str, Any]) -> dict[str, Any]:
    answer = await verify(client, gate, await personal_code(client, person), "transit")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _day(days_ago: int = 2) -> dt.datetime:
    """08:00 Beijing time a few days ago: far from midnight, every tap long uploaded, and still within the upload
    delay gates are allowed (two days ago at 08:00 is at most 64 hours ago)."""
    today = dt.datetime.now(BEIJING).date()
    return dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(8), BEIJING)


# The rider's codes as the platform signs them, issued at any moment (tests.helpers.code_minter): what a gate
# scanned at that time, so taps of past days are proven like any other.
Codes = Callable[[dt.datetime], str]


def _tap(codes: Codes, direction: str, station: str, at: dt.datetime, line: str = "1") -> dict[str, Any]:
    return {
        "tap_id": "tap-" + uuid.uuid4().hex,
        "gate_id": f"gate-{station}",
        "line": line,
        "station": station,
        "direction": direction,
        "tapped_at": at.isoformat(),
        "code": codes(at),
    }


def _ride(
    codes: Codes, start: dt.datetime, entry: str, exit_: str, minutes: int = 25, line: str = "1"
) -> list[dict[str, Any]]:
    return [
        _tap(codes, "in", entry, start, line),
        _tap(codes, "out", exit_, start + dt.timedelta(minutes=minutes), line),
    ]


async def _upload(client: Any, gate: dict[str, Any], taps: list[dict[str, Any]]) -> None:
    sent = await signed(client, gate, "POST", "/api/v1/gates/taps", {"taps": taps})
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == len(taps)


async def _trips(client: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    found = await client.get(f"{TRANSIT}/trips", headers=bearer(person))
    assert found.status_code == 200, found.text
    return sorted(found.json(), key=lambda t: t["started_at"])


async def _deductions(services: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT d.id, d.status, d.failure, d.amount_fen, d.order_id, d.out_trade_no, d.cleared_at,
                      o.status AS order_status, o.purpose, o.payee_id
               FROM payments.transit_deductions d LEFT JOIN payments.orders o ON o.id = d.order_id
               WHERE d.resident_id = $1 ORDER BY d.created_at""",
            uuid.UUID(person["resident_id"]),
        )
    return [dict(r) for r in rows]


async def _deny_document(
    client: Any, gate: dict[str, Any], since: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    response = await signed(client, gate, "GET", f"/api/v1/gates/deny-list?since={since}")
    assert response.status_code == 200, response.text
    document = response.json()
    payload = document["jws"].split(".")[1]
    return document, json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _ids(packed: str) -> set[int]:
    return set(unpack_ids(packed))


# --- agreements decide who may ride -------------------------------------------------------------------------


async def test_only_an_active_agreement_lets_a_rider_ride(client, services, wechat, operator):
    person = await real_named(client, services)
    refused = await _ride_answer(client, operator, person)
    assert refused == {
        "allowed": False,
        "reason": "no-agreement",
        "scene": "transit",
        "code_type": "personal",
    }

    agreement = await _sign_wechat(client, person, notify=False)
    assert await _status_of(client, person, agreement["id"]) == "pending"
    assert (await _ride_answer(client, operator, person))[
        "reason"
    ] == "no-agreement"  # signed is not active yet

    # The notification never came: the polling job asks WeChat and activates the agreement.
    counts = await poll_transit_agreements(_ctx(services))
    assert counts.get("active", 0) >= 1, counts
    assert await _status_of(client, person, agreement["id"]) == "active"
    assert (await _ride_answer(client, operator, person))["allowed"] is True

    # Signing again on the same channel while active is refused; ending the agreement ends riding at once.
    again = await client.post(
        f"{TRANSIT}/agreements", headers=bearer(person), json={"channel": "wechat", "payer_channel_id": "o1"}
    )
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "channel"
    ended = await client.delete(f"{TRANSIT}/agreements/{agreement['id']}", headers=bearer(person))
    assert ended.status_code == 204, ended.text
    assert (await _ride_answer(client, operator, person))["reason"] == "no-agreement"

    stranger = await real_named(client, services)
    assert (
        await client.delete(f"{TRANSIT}/agreements/{agreement['id']}", headers=bearer(stranger))
    ).status_code == 404
    bad = await client.post(
        f"{TRANSIT}/agreements", headers=bearer(person), json={"channel": "unionpay", "payer_channel_id": "x"}
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "channel"


async def test_an_agreement_notification_activates_and_a_termination_ends_it(
    client, services, wechat, operator
):
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    assert await _status_of(client, person, agreement["id"]) == "active"
    assert (await _ride_answer(client, operator, person))["allowed"] is True
    ended = await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/terminate", {"deliver": False}
    )
    for _ in range(2):  # a duplicate changes nothing
        await _deliver(client, "wechat", ended["notification"])
    assert await _status_of(client, person, agreement["id"]) == "ended"
    assert (await _ride_answer(client, operator, person))["reason"] == "no-agreement"


# --- taps, trips, fares, deductions -------------------------------------------------------------------------


async def test_taps_become_a_trip_whose_fare_is_deducted_and_paid(client, services, wechat, operator):
    person = await real_named(client, services)
    await _sign_wechat(client, person)
    codes = await code_minter(client, services, person)
    start = _day()
    await _upload(client, operator, _ride(codes, start, "泰州站", "凤城河"))  # 11.2 km: 2 + 1 yuan
    built = await _build_trips(services)
    assert built["taken"] >= 2 and built["trips"] >= 1, built
    (trip,) = await _trips(client, person)
    assert (trip["kind"], trip["fare_fen"], trip["charged_fen"], trip["status"]) == (
        "paired",
        300,
        300,
        "unbilled",
    )
    assert (trip["station_in"], trip["station_out"]) == ("泰州站", "凤城河")

    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["purpose"], deduction["amount_fen"]) == ("transit_fare", 300)
    assert str(deduction["payee_id"]) == operator["organisation"]["id"]

    # Accepted by WeChat, paid a moment later; no notification reaches us, the check job asks.
    async def paid() -> bool:
        await check_transit_deductions(_ctx(services))
        return (await _deductions(services, person))[0]["status"] == "paid"

    await _eventually(paid)
    order = await client.get(f"/api/v1/payments/orders/{deduction['order_id']}", headers=bearer(person))
    assert order.json()["status"] == "paid" and order.json()["amount_fen"] == 300
    assert [t["status"] for t in await _trips(client, person)] == ["paid"]
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == -300
    assert (await _ride_answer(client, operator, person))["allowed"] is True
    await deduct_transit_fares(_ctx(services))  # nothing is billed twice
    assert len(await _deductions(services, person)) == 1
    await _ledger_ok(services)


async def test_the_daily_cap_and_the_fare_rules(client, services, wechat, operator):
    person = await real_named(client, services)
    await _sign_wechat(client, person)
    codes = await code_minter(client, services, person)
    day = _day(2)
    taps: list[dict[str, Any]] = []
    for n in range(4):  # 泰州站 -> 高港, 23.5 km: 5 yuan, four times in one day
        taps += _ride(codes, day + dt.timedelta(hours=n), "泰州站", "高港", minutes=40)
    taps.append(_tap(codes, "single", "鼓楼路站", day + dt.timedelta(hours=5), line="B1"))  # a bus
    taps += _ride(codes, day + dt.timedelta(days=1), "鼓楼路", "坡子街")  # the next day: 1.7 km
    # An entry whose exit never came (older than the policy's 4 hours) costs the line's maximum.
    taps.append(_tap(codes, "in", "医药城", day + dt.timedelta(days=1, hours=2)))
    # A fresh entry waits for its exit.
    taps.append(_tap(codes, "in", "泰州站", dt.datetime.now(BEIJING) - dt.timedelta(minutes=20)))
    await _upload(client, operator, taps)
    await _build_trips(services)

    trips = await _trips(client, person)
    first_day = [t for t in trips if t["day"] == day.date().isoformat()]
    assert [t["fare_fen"] for t in first_day] == [500, 500, 500, 500, 200]
    assert [t["charged_fen"] for t in first_day] == [500, 500, 500, 0, 0]  # capped at 15 yuan a day
    assert [t["status"] for t in first_day] == ["unbilled"] * 3 + ["waived"] * 2
    second_day = [t for t in trips if t["day"] != day.date().isoformat()]
    assert [(t["kind"], t["charged_fen"]) for t in second_day] == [("paired", 200), ("open_entry", 600)]
    assert sum(t["charged_fen"] for t in trips) == 1500 + 800

    # One deduction for all of it, paid in one go.
    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert deduction["amount_fen"] == 2300

    async def paid() -> bool:
        await check_transit_deductions(_ctx(services))
        return (await _deductions(services, person))[0]["status"] == "paid"

    await _eventually(paid)
    # The late pair of the fresh entry still comes: it makes a trip; the cap holds across runs.
    late = [
        _tap(codes, "out", "坡子街", dt.datetime.now(BEIJING) - dt.timedelta(minutes=5)),
        *_ride(codes, day + dt.timedelta(hours=9), "泰州站", "鼓楼路"),  # uploaded late, the capped day
    ]
    await _upload(client, operator, late)
    await _build_trips(services)
    trips = await _trips(client, person)
    assert sum(t["charged_fen"] for t in trips if t["day"] == day.date().isoformat()) == 1500
    assert len(trips) == 9 and trips[-1]["kind"] == "paired" and trips[-1]["charged_fen"] == 200
    await _ledger_ok(services)


async def test_accepted_is_not_paid_until_the_query_says_so(client, services, wechat, operator):
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions", {"outcome": "accept"}
    )
    codes = await code_minter(client, services, person)
    await _upload(client, operator, _ride(codes, _day(), "坡子街", "泰州站"))
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    await check_transit_deductions(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("pending", "waiting")
    assert [t["status"] for t in await _trips(client, person)] == ["billing"]
    assert (await _ride_answer(client, operator, person))["allowed"] is True  # waiting is no debt either
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == 0

    await wechat.control("POST", f"/_sandbox/trades/{deduction['out_trade_no']}/pay", {"deliver": False})
    await check_transit_deductions(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"]) == ("paid", "paid")
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == -200
    await _ledger_ok(services)


async def test_an_unanswered_deduction_is_a_debt_and_late_money_clears_it(client, services, wechat, operator):
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions", {"outcome": "accept"}
    )
    codes = await code_minter(client, services, person)
    await _upload(client, operator, _ride(codes, _day(), "泰州站", "海陵北路"))  # 8.3 km: 3 yuan
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    window = services.payments.transit.policy.deduction_window
    await check_transit_deductions(_ctx(services), now=dt.datetime.now(dt.UTC) + window)
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["failure"], deduction["order_status"]) == (
        "failed",
        "unanswered",
        "closed",
    )
    assert (await _ride_answer(client, operator, person))["reason"] == "in-debt"
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 300

    # WeChat deducts after all and says so: the money clears the debt.
    done = await wechat.control(
        "POST", f"/_sandbox/trades/{deduction['out_trade_no']}/pay", {"deliver": False}
    )
    await _deliver(client, "wechat", done["notification"])
    (deduction,) = await _deductions(services, person)
    assert deduction["order_status"] == "paid" and deduction["cleared_at"] is not None
    assert [t["status"] for t in await _trips(client, person)] == ["paid"]
    assert (await _ride_answer(client, operator, person))["allowed"] is True
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    assert await _balance(services, f"transit_uncollected:{operator['organisation']['id']}") == 0
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == -300
    await _ledger_ok(services)


async def test_money_racing_the_unanswered_rule_ends_paid_either_way(client, services, wechat, operator):
    """The check job declares a debt while the payment notification arrives: whichever commits first, the rider
    ends up having paid once, owing nothing, and allowed to ride."""
    window = services.payments.transit.policy.deduction_window
    for _ in range(3):
        person = await real_named(client, services)
        agreement = await _sign_wechat(client, person)
        await wechat.control(
            "POST",
            f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions",
            {"outcome": "accept"},
        )
        await _upload(
            client, operator, _ride(await code_minter(client, services, person), _day(), "泰州站", "鼓楼路")
        )
        await _build_trips(services)
        await deduct_transit_fares(_ctx(services))
        (deduction,) = await _deductions(services, person)
        note = await wechat.control(
            "POST",
            f"/_sandbox/trades/{deduction['out_trade_no']}/notification",
            {"result_code": "SUCCESS", "deliver": False},
        )
        await asyncio.gather(
            check_transit_deductions(_ctx(services), now=dt.datetime.now(dt.UTC) + window),
            _deliver(client, "wechat", note["notification"]),
            _deliver(client, "wechat", note["notification"]),
        )
        (deduction,) = await _deductions(services, person)
        assert deduction["order_status"] == "paid"
        assert deduction["status"] == "paid" or deduction["cleared_at"] is not None
        assert [t["status"] for t in await _trips(client, person)] == ["paid"]
        assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
        assert (await _ride_answer(client, operator, person))["allowed"] is True
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == -600
    assert await _balance(services, f"transit_uncollected:{operator['organisation']['id']}") == 0
    await _ledger_ok(services)


# --- debts: the deny list, and repayment --------------------------------------------------------------------


async def test_a_refused_deduction_denies_the_rider_until_repaid(client, services, wechat, operator):
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    offline.update_scene_keys(await scene_keys_of(client, operator))
    credential_id = int.from_bytes(
        bytes.fromhex(offline.verify(wallet.code(), None).credential_id.hex()), "big"
    )
    document, _ = await _deny_document(client, operator, 0)
    offline.deny_list.apply_document(document["jws"], offline.key_for_kid)
    version = document["version"]
    assert offline.verify(wallet.code(), "transit").reason == "ok"

    await wechat.control(
        "POST",
        f"/_sandbox/contracts/{agreement['external_agreement_no']}/deductions",
        {"outcome": "fail", "delay": 0.05},
    )
    codes = await code_minter(client, services, person)
    start = _day()
    await _upload(
        client,
        operator,
        _ride(codes, start, "泰州站", "凤城河")
        + _ride(codes, start + dt.timedelta(hours=10), "凤城河", "泰州站"),
    )
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))

    async def failed() -> bool:
        await check_transit_deductions(_ctx(services))
        return (await _deductions(services, person))[0]["status"] == "failed"

    await _eventually(failed)
    (deduction,) = await _deductions(services, person)
    assert (deduction["failure"], deduction["amount_fen"], deduction["order_status"]) == (
        "refused",
        600,
        "closed",
    )
    assert [t["status"] for t in await _trips(client, person)] == ["debt", "debt"]

    # Online verification knows at once; gates learn it at their next sync.
    assert (await _ride_answer(client, operator, person))["reason"] == "in-debt"
    delta, body = await _deny_document(client, operator, version)
    # The gates' list names the rider's live credential, never the rider.
    assert delta["full"] is (version == 0) and credential_id in _ids(body["debtor"]["add"])
    offline.deny_list.apply_document(delta["jws"], offline.key_for_kid)
    assert offline.verify(wallet.code(), "transit").reason == "denied-debt"
    debts = (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()
    assert debts["total_fen"] == 600 and len(debts["debts"][0]["trips"]) == 2
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 600
    assert await _balance(services, f"transit_uncollected:{operator['organisation']['id']}") == -600
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == 0
    await _ledger_ok(services)

    # The rider repays: a normal order for the whole debt, paid like any other.
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body_ = {"channel": "wechat", "method": "jsapi", "payer_channel_id": "o-rider-repay"}
    repay = await client.post(f"{TRANSIT}/debts/repay", headers={**bearer(person), **key}, json=body_)
    assert repay.status_code == 201, repay.text
    again = await client.post(f"{TRANSIT}/debts/repay", headers={**bearer(person), **key}, json=body_)
    assert again.json()["order"]["id"] == repay.json()["order"]["id"]
    order = repay.json()["order"]
    assert (order["amount_fen"], order["purpose"], repay.json()["remaining_fen"]) == (600, "transit_fare", 0)
    assert order["pay"]["params"]["paySign"]
    assert (await _ride_answer(client, operator, person))["reason"] == "in-debt"  # not paid yet

    paid = await wechat.control("POST", f"/_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False})
    # Twenty copies at once: the debt is cleared, and the rider taken off the deny list, once.
    await asyncio.gather(*(_deliver(client, "wechat", paid["notification"]) for _ in range(20)))
    async with services.pool.acquire() as conn:
        removals = await conn.fetchval(
            "SELECT count(*) FROM codes.deny_changes WHERE kind = 'debtor' AND entry = $1 AND op = 'remove'",
            credential_id.to_bytes(8, "big"),
        )
    assert removals == 1
    assert [t["status"] for t in await _trips(client, person)] == ["repaid", "repaid"]
    assert (await client.get(f"{TRANSIT}/debts", headers=bearer(person))).json()["total_fen"] == 0
    assert (await _ride_answer(client, operator, person))["allowed"] is True
    delta, body = await _deny_document(client, operator, offline.deny_list.version)
    assert credential_id in _ids(body["debtor"]["remove"])
    offline.deny_list.apply_document(delta["jws"], offline.key_for_kid)
    assert offline.verify(wallet.code(), "transit").reason == "ok"
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0
    assert await _balance(services, f"transit_uncollected:{operator['organisation']['id']}") == 0
    assert await _balance(services, f"payee_payable:{operator['organisation']['id']}") == -600
    nothing = await client.post(
        f"{TRANSIT}/debts/repay", headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex}, json=body_
    )
    assert nothing.status_code == 409
    await _ledger_ok(services)


async def test_trips_with_no_agreement_left_are_a_debt(client, services, wechat, operator):
    person = await real_named(client, services)
    agreement = await _sign_wechat(client, person)
    codes = await code_minter(client, services, person)
    await _upload(client, operator, [_tap(codes, "single", "火车站", _day(), line="B2")])
    await _build_trips(services)
    # Ending the last agreement waits while fares are outstanding.
    busy = await client.delete(f"{TRANSIT}/agreements/{agreement['id']}", headers=bearer(person))
    assert busy.status_code == 409
    # The rider ends it in WeChat instead; the next deduction has nothing to go under.
    ended = await wechat.control(
        "POST", f"/_sandbox/contracts/{agreement['external_agreement_no']}/terminate", {"deliver": False}
    )
    await _deliver(client, "wechat", ended["notification"])
    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["failure"], deduction["amount_fen"]) == (
        "failed",
        "no-agreement",
        100,
    )
    assert (await _ride_answer(client, operator, person))["reason"] == "no-agreement"
    await _ledger_ok(services)


# --- only proven taps are billed ----------------------------------------------------------------------------


def _forged(code: str) -> str:
    """The code with one bit of its signature changed."""
    payload = bytearray(b45decode(code[4:]))
    payload[-1] ^= 0x01
    return code[:4] + b45encode(bytes(payload))


async def _send(client: Any, gate: dict[str, Any], taps: list[dict[str, Any]]) -> list[str]:
    """Uploads taps and returns each one's status (and reason, when refused)."""
    sent = await signed(client, gate, "POST", "/api/v1/gates/taps", {"taps": taps})
    assert sent.status_code == 200, sent.text
    return [t["status"] + (":" + t["reason"] if "reason" in t else "") for t in sent.json()["taps"]]


async def _nothing_charged(client: Any, services: Any, person: dict[str, Any]) -> None:
    assert await _trips(client, person) == []
    assert await _deductions(services, person) == []
    debts = await client.get(f"{TRANSIT}/debts", headers=bearer(person))
    assert debts.json() == {"total_fen": 0, "debts": [], "money_back": []}, debts.text
    assert await _balance(services, f"rider_receivable:{person['resident_id']}") == 0


async def test_invented_forged_and_replayed_taps_charge_nobody(client, services, wechat, operator):
    """Issue 13: a gate credential uploaded an invented entry and exit 40 days back with random ids and the
    rider was charged (a rider without an agreement got a debt and landed on the deny list)."""
    with_agreement = await real_named(client, services)
    await _sign_wechat(client, with_agreement)
    without = await real_named(client, services)
    other_operator = await machine_credential(client, services, ["verify:transit", "gates:taps"])
    back = dt.datetime.now(BEIJING) - dt.timedelta(days=40)
    now = dt.datetime.now(BEIJING)
    for person in (with_agreement, without):
        subject = await _subject(client, person)
        codes = await code_minter(client, services, person)
        # The attack as it was: claimed subjects and random code ids are no longer understood at all.
        claimed = [
            {**_tap(codes, "in", "泰州站", back), "subject": subject, "code_id": uuid.uuid4().hex[:16]},
            {**_tap(codes, "out", "高港", back + dt.timedelta(minutes=40)), "subject": subject},
        ]
        for tap in claimed:
            del tap["code"]
        refused = await signed(client, operator, "POST", "/api/v1/gates/taps", {"taps": claimed})
        assert refused.status_code == 400, refused.text
        # Genuine codes of that day, forged codes, a code outside its window, another operator's verification.
        stale = _ride(codes, back, "泰州站", "高港", minutes=40)
        forged = [
            {**tap, "code": _forged(tap["code"])}
            for tap in _ride(codes, now - dt.timedelta(hours=1), "泰州站", "高港")
        ]
        shifted = {**_tap(codes, "in", "泰州站", now - dt.timedelta(hours=1)), "code": codes(now)}
        online = await verify(client, other_operator, await personal_code(client, person), "transit")
        foreign = _tap(codes, "in", "泰州站", now)
        del foreign["code"]
        foreign["verification_id"] = online.json().get("verification_id") or str(uuid.uuid4())
        assert await _send(client, operator, [*stale, *forged, shifted, foreign]) == [
            "refused:too-late",
            "refused:too-late",
            "refused:bad-signature",
            "refused:bad-signature",
            "refused:not-yet-valid",
            "refused:unknown-verification",
        ]
    await _build_trips(services)
    await deduct_transit_fares(_ctx(services))
    for person in (with_agreement, without):
        await _nothing_charged(client, services, person)
    # Nobody owes anything, so nobody is a debtor; the one without an agreement is refused for that alone.
    assert (await _ride_answer(client, operator, without))["reason"] == "no-agreement"
    assert (await _ride_answer(client, operator, with_agreement))["allowed"] is True
    await _ledger_ok(services)


async def test_a_real_ride_is_charged_once_however_often_it_is_uploaded(client, services, wechat, operator):
    person = await real_named(client, services)
    await _sign_wechat(client, person)
    codes = await code_minter(client, services, person)
    ride = _ride(codes, _day(), "泰州站", "凤城河")  # 11.2 km: 3 yuan
    assert await _send(client, operator, ride) == ["accepted", "accepted"]
    # The gate lost the answer and sends the batch again; another operator's gate shows the same codes again.
    assert await _send(client, operator, ride) == ["duplicate", "duplicate"]
    elsewhere = await machine_credential(client, services, ["verify:transit", "gates:taps"])
    again = [{**tap, "tap_id": "bus-" + uuid.uuid4().hex} for tap in ride]
    assert await _send(client, elsewhere, again) == [
        "refused:claimed-by-another-operator",
        "refused:claimed-by-another-operator",
    ]
    await _build_trips(services)
    assert await _send(client, operator, ride) == ["duplicate", "duplicate"]  # after the trip was built, too
    await _build_trips(services)
    (trip,) = await _trips(client, person)
    assert (trip["kind"], trip["charged_fen"]) == ("paired", 300)
    await deduct_transit_fares(_ctx(services))
    await deduct_transit_fares(_ctx(services))
    (deduction,) = await _deductions(services, person)
    assert deduction["amount_fen"] == 300
    await _ledger_ok(services)


# --- Alipay ---------------------------------------------------------------------------------------------------


async def test_an_alipay_agreement_and_deduction(client, services, alipay, operator):
    person = await real_named(client, services)
    made = await client.post(
        f"{TRANSIT}/agreements",
        headers=bearer(person),
        json={"channel": "alipay", "payer_channel_id": "rider-" + uuid.uuid4().hex[:8]},
    )
    assert made.status_code == 201, made.text
    assert made.json()["sign_params"]["alipays_url"].startswith("alipays://")
    external = made.json()["external_agreement_no"]
    await alipay.control(
        "POST", "/_sandbox/open", {"order_string": made.json()["sign_params"]["sign_params"]}
    )
    signed_up = await alipay.control("POST", f"/_sandbox/agreements/{external}/sign", {"deliver": False})
    await _deliver(client, "alipay", signed_up["notification"])
    assert await _status_of(client, person, made.json()["id"]) == "active"
    assert (await _ride_answer(client, operator, person))["allowed"] is True

    codes = await code_minter(client, services, person)
    await _upload(client, operator, _ride(codes, _day(), "稻河古街区", "医药城"))  # 9.9 km: 3 yuan
    await _build_trips(services)
    counts = await deduct_transit_fares(_ctx(services))
    assert counts.get("paid", 0) >= 1, counts  # alipay.trade.pay answers 10000: paid at once
    (deduction,) = await _deductions(services, person)
    assert (deduction["status"], deduction["order_status"], deduction["amount_fen"]) == ("paid", "paid", 300)
    assert [t["status"] for t in await _trips(client, person)] == ["paid"]
    await _ledger_ok(services)
