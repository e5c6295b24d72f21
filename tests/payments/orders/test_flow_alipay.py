"""Alipay notifications through the app: verified (RSA2 only, our app id and seller id), matched to the order and
its amount, credited once however many copies arrive at once."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.helpers import bearer, login, machine_credential
from tests.payments.sandboxes import AlipaySandbox as Sandbox

FORM = "application/x-www-form-urlencoded; charset=utf-8"


async def _paid_notification(
    client: Any, services: Any, sandbox: Sandbox, amount: int = 4200, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any], str]:
    person = await login(client)
    payee = await machine_credential(client, services, ["payments:refund"], kind="department")
    order = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "non_tax_fee",
            "amount_fen": amount,
            "subject": "泰州市不动产登记费",
            "payee_id": payee["organisation"]["id"],
            "channel": "alipay",
            "method": "native",
        },
    )
    assert order.status_code == 201, order.text
    assert order.json()["pay"]["params"]["qr_code"]
    out_trade_no = order.json()["out_trade_no"]
    await sandbox.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    note = await sandbox.control(
        "POST",
        f"/_sandbox/trades/{out_trade_no}/notification",
        {"deliver": False, **({"fields": fields} if fields else {})},
    )
    return person, order.json(), note["notification"]["body"]


async def _notify(client: Any, body: str) -> Any:
    return await client.post("/api/v1/payments/notify/alipay", content=body, headers={"Content-Type": FORM})


async def _status(client: Any, person: dict[str, Any], order: dict[str, Any]) -> str:
    return (await client.get(f"/api/v1/payments/orders/{order['id']}", headers=bearer(person))).json()[
        "status"
    ]


async def test_fifty_copies_at_once_credit_once(client, services, alipay):
    person, order, body = await _paid_notification(client, services, alipay)
    async with services.pool.acquire() as conn:
        before = await services.payments.ledger.balance(conn, "channel_clearing:alipay")
    acks = await asyncio.gather(*(_notify(client, body) for _ in range(50)))
    assert {(a.status_code, a.content) for a in acks} == {(200, b"success")}
    async with services.pool.acquire() as conn:
        # Alipay holds 4200 less the 0.6% it keeps (25.2, rounded half up).
        assert await services.payments.ledger.balance(conn, "channel_clearing:alipay") - before == 4200 - 25
        assert (await services.payments.ledger.check(conn)).ok
    assert await _status(client, person, order) == "paid"


async def test_a_validly_signed_notification_with_the_wrong_amount_is_refused(client, services, alipay):
    person, order, body = await _paid_notification(client, services, alipay, total_amount="0.01")
    refused = await _notify(client, body)
    assert (refused.status_code, refused.content) == (400, b"failure")
    assert await _status(client, person, order) == "waiting"


async def test_another_apps_notification_is_refused(client, services, alipay):
    person, order, body = await _paid_notification(client, services, alipay, app_id="2021000000009999")
    assert (await _notify(client, body)).status_code == 400
    assert await _status(client, person, order) == "waiting"


async def test_rsa_instead_of_rsa2_and_a_bad_signature_are_refused(client, services, alipay):
    person, order, body = await _paid_notification(client, services, alipay)
    params = dict(parse_qsl(body))
    private = serialization.load_pem_private_key(alipay.keys.alipay_private_key.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("sign", "sign_type"))
    rsa_sha1 = base64.b64encode(private.sign(content.encode(), padding.PKCS1v15(), hashes.SHA1())).decode()  # noqa: S303
    for forged in (
        {**params, "sign": rsa_sha1, "sign_type": "RSA"},
        {**params, "sign": params["sign"][:-4] + "AAA="},
    ):
        assert (await _notify(client, urlencode(forged))).status_code == 400
    assert await _status(client, person, order) == "waiting"
    assert (await _notify(client, body)).status_code == 200 and await _status(client, person, order) == "paid"


def _refused(reason: str) -> float:
    labels = {"channel": "alipay", "reason": reason}
    return REGISTRY.get_sample_value("tzt_payment_notifications_refused_total", labels) or 0.0


async def test_a_notification_for_another_seller_is_refused_while_the_trade_is_unpaid(
    client, services, alipay
):
    """Issue 14, finding 6: signed by Alipay for our app id, but naming another seller's PID, a TRADE_SUCCESS
    for a trade nobody paid was credited."""
    person = await login(client)
    payee = await machine_credential(client, services, ["payments:refund"], kind="department")
    order = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "non_tax_fee",
            "amount_fen": 4200,
            "subject": "泰州市不动产登记费",
            "payee_id": payee["organisation"]["id"],
            "channel": "alipay",
            "method": "native",
        },
    )
    assert order.status_code == 201, order.text
    out_trade_no = order.json()["out_trade_no"]
    buyer = "2088000000123456"
    bodies = [
        (
            await alipay.control(
                "POST",
                f"/_sandbox/trades/{out_trade_no}/notification",
                {"deliver": False, "trade_status": "TRADE_SUCCESS", "fields": fields},
            )
        )["notification"]["body"]
        for fields in (
            {"seller_id": "2088999999999999", "buyer_id": buyer, "gmt_payment": "2026-01-01 12:00:00"},
            {"seller_id": None, "buyer_id": buyer},  # no seller named at all
        )
    ]
    before = _refused("seller_id")
    with capture_logs() as logs:
        answers = [await _notify(client, body) for body in bodies]
    assert {(a.status_code, a.content) for a in answers} == {(400, b"failure")}
    assert await _status(client, person, order.json()) == "waiting"
    assert _refused("seller_id") - before == 2
    refusals = [entry for entry in logs if entry["event"] == "notification refused"]
    assert len(refusals) == 2 and all("seller_id" in entry["reason"] for entry in refusals)
    assert buyer not in repr(logs)  # the buyer is never logged
    async with services.pool.acquire() as conn:
        assert (await services.payments.ledger.check(conn)).ok
    # ours, once paid, is credited as before
    await alipay.control("POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False})
    ours = await alipay.control("POST", f"/_sandbox/trades/{out_trade_no}/notification", {"deliver": False})
    assert (await _notify(client, ours["notification"]["body"])).content == b"success"
    assert await _status(client, person, order.json()) == "paid"
