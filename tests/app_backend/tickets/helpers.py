"""What an organiser, a buyer and the payment channel do in the tickets tests, over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx

from tests.app_backend.events.helpers import published_session
from tests.helpers import bearer, real_named, signed

TICKETS = "/api/v1/tickets"


def sale_body(quota: int = 50, **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body: dict[str, Any] = {
        "classes": [{"name": "A区看台", "price_fen": 8000, "section": "A区", "quota": quota}],
        "opens_at": (now - dt.timedelta(minutes=1)).isoformat(),
        "closes_at": (now + dt.timedelta(hours=1)).isoformat(),
        "per_person": 4,
        "hold_minutes": 10,
        "return_cutoff_hours": 24,
        "admit_per_minute": 0,
    }
    for name, value in fields.items():
        body[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return body


async def put_sale(
    client: Any, organiser: dict[str, Any], session_id: Any, body: dict[str, Any]
) -> httpx.Response:
    return await signed(client, organiser, "PUT", f"{TICKETS}/sessions/{session_id}/sale", body)  # type: ignore[no-any-return]


async def on_sale(
    client: Any,
    services: Any,
    quota: int = 50,
    *,
    starts_in: dt.timedelta = dt.timedelta(days=7),
    gate_verifiers: Any = (),
    **fields: Any,
) -> dict[str, Any]:
    """A published session with a sale open now: {"organiser", "session_id", "class_id", "sale", ...}."""
    session = await published_session(client, services, starts_in=starts_in, gate_verifiers=gate_verifiers)
    answer = await put_sale(client, session["organiser"], session["session_id"], sale_body(quota, **fields))
    assert answer.status_code == 200, answer.text
    sale = answer.json()
    return {**session, "sale": sale, "class_id": sale["classes"][0]["id"]}


async def join(client: Any, person: dict[str, Any], sale: dict[str, Any]) -> httpx.Response:
    """The resident joins the session's virtual queue (or asks again: the place is kept)."""
    return await client.post(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(person))  # type: ignore[no-any-return]


async def admitted_pass(client: Any, person: dict[str, Any], sale: dict[str, Any]) -> str:
    """The resident joins the queue and waits their turn (polling as the page does): their pass for the hold."""
    place = await join(client, person, sale)
    assert place.status_code == 200, place.text
    view = place.json()
    while not view["admitted"]:
        turn = dt.datetime.fromisoformat(view["admitted_at"])
        await asyncio.sleep(max(0.0, (turn - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
        polled = await client.get(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(person))
        assert polled.status_code == 200, polled.text
        view = polled.json()
    assert view["pass_token"], view
    return str(view["pass_token"])


async def hold(
    client: Any,
    person: dict[str, Any],
    sale: dict[str, Any],
    attendees: list[dict[str, Any]] | None = None,
    pass_token: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "session_id": sale["session_id"],
        "class_id": sale["class_id"],
        "attendees": attendees if attendees is not None else [{}],
    }
    if pass_token is not None:
        body["pass_token"] = pass_token
    return await client.post(f"{TICKETS}/holds", json=body, headers=bearer(person))  # type: ignore[no-any-return]


async def pay(client: Any, person: dict[str, Any], hold_id: Any, key: str | None = None) -> httpx.Response:
    return await client.post(  # type: ignore[no-any-return]
        f"{TICKETS}/holds/{hold_id}/pay",
        json={"channel": "wechat", "method": "jsapi", "payer_channel_id": "o-openid-1"},
        headers={**bearer(person), "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def out_trade_no(client: Any, person: dict[str, Any], order_id: Any) -> str:
    order = await client.get(f"/api/v1/payments/orders/{order_id}", headers=bearer(person))
    assert order.status_code == 200, order.text
    return str(order.json()["out_trade_no"])


async def channel_pays(client: Any, wechat: Any, number: str) -> None:
    """The buyer pays at the WeChat sandbox and its notification reaches the app."""
    note = (await wechat.control("POST", f"_sandbox/trades/{number}/pay", {"deliver": False}))["notification"]
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200 and b"SUCCESS" in ack.content, ack.text


async def bought(
    client: Any, wechat: Any, person: dict[str, Any], sale: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """A hold paid through the sandbox: the hold as it stands after the payment."""
    held = await hold(client, person, sale, **kw)
    assert held.status_code == 201, held.text
    paying = await pay(client, person, held.json()["id"])
    assert paying.status_code == 200, paying.text
    await channel_pays(client, wechat, await out_trade_no(client, person, paying.json()["order_id"]))
    after = await client.get(f"{TICKETS}/holds/{held.json()['id']}", headers=bearer(person))
    assert after.status_code == 200 and after.json()["status"] == "paid", after.text
    return after.json()  # type: ignore[no-any-return]


async def remaining(client: Any, sale: dict[str, Any]) -> int:
    client.app.state.tickets._views.clear()  # the public read is a second old at most: the test reads it fresh
    answer = await client.get(f"{TICKETS}/sessions/{sale['session_id']}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["classes"][0]["remaining"])


async def residents(client: Any, services: Any, count: int) -> list[dict[str, Any]]:
    """`count` real-named residents, made ten at a time (the setting up is not what a test measures)."""
    made: list[dict[str, Any]] = []
    while len(made) < count:
        made += await asyncio.gather(
            *(real_named(client, services) for _ in range(min(10, count - len(made))))
        )
    return made
