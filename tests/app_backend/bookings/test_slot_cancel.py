"""The organiser cancels a slot: every paid booking is refunded by the job, holds end (their orders closed),
every holder is told (kind event_changed), and the ledger stays clean."""

from __future__ import annotations

import uuid
from typing import Any

from tests.app_backend.bookings.helpers import (
    beijing_day,
    book,
    bookings_of,
    mine,
    offer,
    organiser_slot,
    pay,
    refunds_of,
    slot,
)
from tests.helpers import bearer, real_named
from tests.payments.helpers import ledger_ok


async def _inbox(client: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/me/inbox?limit=100", headers=bearer(person))
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]  # type: ignore[no-any-return]


async def test_a_cancelled_slot_refunds_every_paid_booking_and_tells_the_holders(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=5, price_fen=1800)
    payers = [await real_named(client, services) for _ in range(3)]
    paid = []
    for person in payers:
        booking = (await book(client, person, made["id"], places=1)).json()
        await pay(client, wechat_sandbox, person, booking)
        paid.append(booking)
    holder = await real_named(client, services)
    held = (await book(client, holder, made["id"], places=2)).json()

    cancelled = await offer(
        client, made["organiser"], "POST", f"/slots/{made['id']}/cancel", {"reason": "场馆检修"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["booked"]) == ("cancelled", 0)
    again = await offer(
        client, made["organiser"], "POST", f"/slots/{made['id']}/cancel", {"reason": "场馆检修"}
    )
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    for person, booking in zip(payers, paid, strict=True):
        now = await mine(client, person, booking["id"])
        assert (now["status"], now["cancelled_by"], now["refund"]) == ("cancelled", "organiser", "due")
        kinds = [(m["kind"], m["title"]) for m in await _inbox(client, person)]
        assert ("event_changed", "场馆预约已取消") in kinds, kinds
    assert ("event_changed", "场馆预约已取消") in [
        (m["kind"], m["title"]) for m in await _inbox(client, holder)
    ]

    job = bookings_of(services)
    counts = await job.refund_due(services.pool)
    assert counts["requested"] >= 3, counts
    await services.payments.refunds.settle_pending_refunds(services.pool)
    for booking in paid:
        assert await refunds_of(db, booking["order_id"]) == [(1800, "succeeded")]
    assert (await job.refund_due(services.pool))["requested"] == 0  # each refunded once

    # The hold ends at once: its order is closed at the channel, its places go back.
    await job.expire_holds(services.pool)
    assert (await mine(client, holder, held["id"]))["status"] == "released"
    order = await db.fetchrow("SELECT status FROM payments.orders WHERE id = $1", uuid.UUID(held["order_id"]))
    assert order["status"] == "closed"
    assert (await organiser_slot(client, made["organiser"], made["id"]))["held"] == 0
    public = await client.get(
        f"/api/v1/bookings/venues/{made['venue_id']}/slots", params={"date": beijing_day(made["starts_at"])}
    )
    assert [s["status"] for s in public.json()["slots"]] == ["cancelled"]
    late = await real_named(client, services)
    refused = await book(client, late, made["id"])
    assert refused.status_code == 409 and refused.json()["type"].endswith("slot-cancelled")
    await ledger_ok(services)


async def test_money_for_a_hold_of_a_cancelled_slot_is_refunded(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=2, price_fen=900)
    person = await real_named(client, services)
    held = (await book(client, person, made["id"])).json()
    cancelled = await offer(
        client, made["organiser"], "POST", f"/slots/{made['id']}/cancel", {"reason": "暴雨"}
    )
    assert cancelled.status_code == 200
    await pay(client, wechat_sandbox, person, held)  # paid before the expiry job closed the order
    now = await mine(client, person, held["id"])
    assert (now["status"], now["refund"]) == ("cancelled", "due")
    await bookings_of(services).refund_due(services.pool)
    await services.payments.refunds.settle_pending_refunds(services.pool)
    assert await refunds_of(db, held["order_id"]) == [(900, "succeeded")]
    assert (await organiser_slot(client, made["organiser"], made["id"]))["held"] == 0
    await ledger_ok(services)
