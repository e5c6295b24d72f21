"""After the hold: expiry frees tickets for the next buyer (closing the order at the channel first, so a payment
racing the expiry ends as a ticket or a refund), returns before and after the cut-off, and a session cancelled
(every paid ticket refunded, holders messaged) or delayed (holders messaged)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.app_backend.events.helpers import set_session_status
from tests.app_backend.tickets.helpers import (
    TICKETS,
    bought,
    hold,
    on_sale,
    out_trade_no,
    pay,
    remaining,
)
from tests.helpers import bearer, real_named
from tests.payments.helpers import ledger_ok


async def _time_is_up(services: Any, hold_id: str) -> None:
    """As if the hold's minutes had passed."""
    async with services.pool.acquire() as conn:
        await conn.execute(
            "UPDATE tickets.holds SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", hold_id
        )


def _tickets(client: Any) -> Any:
    return client.app.state.tickets


async def test_an_expired_hold_frees_its_ticket_for_the_next_buyer(client, services):
    sale = await on_sale(client, services, quota=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = await hold(client, first, sale)
    assert held.status_code == 201
    assert (await hold(client, second, sale)).status_code == 409  # sold out while held
    await _time_is_up(services, held.json()["id"])
    assert (await _tickets(client).expire_holds(services.pool))["released"] >= 1
    assert (await pay(client, first, held.json()["id"])).status_code == 409  # the hold has ended
    again = await hold(client, second, sale)
    assert again.status_code == 201, again.text


async def test_an_expired_hold_with_an_order_is_closed_at_the_channel_then_freed(
    client, services, wechat_sandbox
):
    sale = await on_sale(client, services, quota=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = (await hold(client, first, sale)).json()
    order_id = (await pay(client, first, held["id"])).json()["order_id"]
    await _time_is_up(services, held["id"])
    await _tickets(client).expire_holds(services.pool)
    order = await client.get(f"/api/v1/payments/orders/{order_id}", headers=bearer(first))
    assert order.json()["status"] == "closed"
    assert (await client.get(f"{TICKETS}/holds/{held['id']}", headers=bearer(first))).json()[
        "status"
    ] == "released"
    assert (await hold(client, second, sale)).status_code == 201


async def test_a_payment_racing_the_expiry_ends_as_a_ticket(client, services, wechat_sandbox):
    """Paid at the channel, its notification not yet here, when the hold's time is up: the expiry's close finds the
    trade paid, records the payment, and the ticket is the buyer's."""
    sale = await on_sale(client, services, quota=1)
    buyer = await real_named(client, services)
    held = (await hold(client, buyer, sale)).json()
    order_id = (await pay(client, buyer, held["id"])).json()["order_id"]
    number = await out_trade_no(client, buyer, order_id)
    await wechat_sandbox.control("POST", f"_sandbox/trades/{number}/pay", {"deliver": False})
    await _time_is_up(services, held["id"])
    counts = await _tickets(client).expire_holds(services.pool)
    assert counts["paid"] == 1, counts
    after = (await client.get(f"{TICKETS}/holds/{held['id']}", headers=bearer(buyer))).json()
    assert after["status"] == "paid" and after["tickets"][0]["status"] == "valid"
    await ledger_ok(services)


async def test_money_arriving_after_the_tickets_went_back_is_refunded(client, services, wechat_sandbox):
    """The order was closed (the hold released, its ticket sold to someone else), then the channel's payment
    notification comes anyway: no ticket is left, so the whole order goes back."""
    sale = await on_sale(client, services, quota=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = (await hold(client, first, sale)).json()
    order_id = (await pay(client, first, held["id"])).json()["order_id"]
    number = await out_trade_no(client, first, order_id)
    note = (await wechat_sandbox.control("POST", f"_sandbox/trades/{number}/pay", {"deliver": False}))[
        "notification"
    ]
    async with services.pool.acquire() as conn, conn.transaction():  # payments closed it (a lost race)
        await conn.execute("UPDATE payments.orders SET status = 'closed' WHERE id = $1::uuid", order_id)
        await _tickets(client).order_closed(conn, order_id)
    assert (await hold(client, second, sale)).status_code == 201
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200
    assert (await client.get(f"{TICKETS}/holds/{held['id']}", headers=bearer(first))).json()[
        "status"
    ] == "unfilled"
    counts = await _tickets(client).refund_due(services.pool)
    assert counts["holds"] >= 1, counts
    async with services.pool.acquire() as conn:
        refunded = await conn.fetchval(
            "SELECT refunded_fen FROM payments.orders WHERE id = $1::uuid", order_id
        )
    assert refunded == 8000
    await ledger_ok(services)


async def test_a_return_before_the_cut_off_is_refunded_and_the_seat_sold_again(
    client, services, wechat_sandbox
):
    sale = await on_sale(client, services, quota=1, return_cutoff_hours=24)
    buyer, next_buyer = await real_named(client, services), await real_named(client, services)
    ticket = (await bought(client, wechat_sandbox, buyer, sale))["tickets"][0]
    assert await remaining(client, sale) == 0
    returned = await client.post(f"{TICKETS}/{ticket['id']}/return", headers=bearer(buyer))
    assert returned.status_code == 200, returned.text
    assert returned.json()["status"] == "returned" and returned.json()["refund_status"] == "refund_sent"
    again = await client.post(f"{TICKETS}/{ticket['id']}/return", headers=bearer(buyer))
    assert again.status_code == 200 and again.json()["status"] == "returned"
    assert await remaining(client, sale) == 1
    await bought(client, wechat_sandbox, next_buyer, sale)
    async with services.pool.acquire() as conn:
        refunds = await conn.fetchval(
            """SELECT count(*) FROM payments.refunds r JOIN tickets.holds h ON h.order_id = r.order_id
               WHERE h.session_id = $1::uuid""",
            sale["session_id"],
        )
    assert refunds == 1
    await ledger_ok(services)


async def test_a_return_after_the_cut_off_is_refused(client, services, wechat_sandbox):
    sale = await on_sale(client, services, starts_in=dt.timedelta(hours=2), return_cutoff_hours=24)
    buyer = await real_named(client, services)
    ticket = (await bought(client, wechat_sandbox, buyer, sale))["tickets"][0]
    answer = await client.post(f"{TICKETS}/{ticket['id']}/return", headers=bearer(buyer))
    assert answer.status_code == 409 and answer.json()["type"].endswith("/return-closed"), answer.text
    stranger = await real_named(client, services)
    assert (
        await client.post(f"{TICKETS}/{ticket['id']}/return", headers=bearer(stranger))
    ).status_code == 404


async def test_a_cancelled_session_refunds_every_paid_ticket_and_tells_the_holders(
    client, services, wechat_sandbox
):
    sale = await on_sale(client, services, quota=10)
    buyers = [await real_named(client, services) for _ in range(3)]
    paid = [await bought(client, wechat_sandbox, b, sale) for b in buyers]
    waiting = await real_named(client, services)
    unpaid = (await hold(client, waiting, sale)).json()
    await pay(client, waiting, unpaid["id"])
    moved = await set_session_status(
        client, sale["organiser"], sale["session_id"], "cancelled", reason="场馆检修"
    )
    assert moved.status_code == 200, moved.text
    tickets = _tickets(client)
    assert (await tickets.refund_due(services.pool))["tickets"] >= 3
    await tickets.expire_holds(services.pool)
    await tickets.tell_holders(services.pool)
    for buyer, bought_hold in zip(buyers, paid, strict=True):
        ticket = (
            await client.get(f"{TICKETS}/{bought_hold['tickets'][0]['id']}", headers=bearer(buyer))
        ).json()
        assert ticket["status"] == "cancelled" and ticket["refund_status"] == "refund_sent"
        inbox = (await client.get("/api/v1/me/inbox", headers=bearer(buyer))).json()["messages"]
        assert {m["title"] for m in inbox if m["kind"] == "event_changed"} == {"赛事取消", "门票退款"}
    assert (await client.get(f"{TICKETS}/holds/{unpaid['id']}", headers=bearer(waiting))).json()[
        "status"
    ] == "released"
    async with services.pool.acquire() as conn:
        orders = await conn.fetch(
            """SELECT o.status, o.amount_fen, o.refunded_fen FROM payments.orders o
               JOIN tickets.holds h ON h.order_id = o.id WHERE h.session_id = $1::uuid""",
            sale["session_id"],
        )
    assert sorted((o["status"], o["refunded_fen"]) for o in orders) == [("closed", 0)] + [("paid", 8000)] * 3
    assert (await hold(client, waiting, sale)).status_code == 409
    await ledger_ok(services)


async def test_a_delayed_session_tells_its_holders(client, services, wechat_sandbox):
    sale = await on_sale(client, services)
    buyer = await real_named(client, services)
    await bought(client, wechat_sandbox, buyer, sale)
    later = dt.datetime.fromisoformat(sale["starts_at"]) + dt.timedelta(days=1)
    moved = await set_session_status(
        client,
        sale["organiser"],
        sale["session_id"],
        "delayed",
        reason="天气原因",
        starts_at=later,
        ends_at=later + dt.timedelta(hours=2),
    )
    assert moved.status_code == 200, moved.text
    await _tickets(client).tell_holders(services.pool)
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(buyer))).json()["messages"]
    assert [m["title"] for m in inbox if m["kind"] == "event_changed"] == ["赛事延期"]
    public = (await client.get(f"{TICKETS}/sessions/{sale['session_id']}")).json()
    assert public["starts_at"].startswith(later.strftime("%Y-%m-%dT%H:%M"))
