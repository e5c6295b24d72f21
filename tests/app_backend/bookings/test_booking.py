"""Residents book places and pay, or cancel: no oversell under concurrent requests, no double charge, holds that
expire free their places, a paid booking cancelled before the cut-off is refunded, after it is not."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from tests.app_backend.bookings.helpers import (
    beijing_day,
    book,
    bookings_of,
    deliver,
    mine,
    organiser_slot,
    out_trade_no,
    paid_orders_of,
    pay,
    refunds_of,
    slot,
)
from tests.helpers import bearer, login, real_named
from tests.payments.helpers import ledger_ok


async def test_concurrent_bookings_over_capacity_book_exactly_the_capacity(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=5, price_fen=2000)
    people = await asyncio.gather(*(real_named(client, services) for _ in range(16)))
    answers = await asyncio.gather(*(book(client, p, made["id"]) for p in people))
    held = [(p, a.json()) for p, a in zip(people, answers, strict=True) if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(held) == 5, [a.text for a in answers]
    assert {a.status_code for a in refused} == {409} and {
        a.json()["type"].rsplit("/", 1)[-1] for a in refused
    } == {"slot-full"}
    counts = await organiser_slot(client, made["organiser"], made["id"])
    assert (counts["held"], counts["booked"]) == (5, 0)
    # Everyone pays, some twice (the notification delivered twice): each is charged once, and booked once.
    notes = await asyncio.gather(*(pay(client, wechat_sandbox, p, b) for p, b in held))
    await asyncio.gather(*(deliver(client, note) for note in notes[:2]))
    counts = await organiser_slot(client, made["organiser"], made["id"])
    assert (counts["held"], counts["booked"]) == (0, 5)
    for person, booking in held:
        assert (await mine(client, person, booking["id"]))["status"] == "paid"
        assert await paid_orders_of(db, person["resident_id"]) == 1
    public = await client.get(
        f"/api/v1/bookings/venues/{made['venue_id']}/slots", params={"date": beijing_day(made["starts_at"])}
    )
    assert [(s["remaining"], s["status"]) for s in public.json()["slots"]] == [(0, "full")]
    await ledger_ok(services)


async def test_places_in_one_booking_count_against_capacity(client: Any, services: Any) -> None:
    made = await slot(client, services, capacity=4)
    first, second = await real_named(client, services), await real_named(client, services)
    assert (await book(client, first, made["id"], places=3)).status_code == 201
    too_many = await book(client, second, made["id"], places=2)
    assert too_many.status_code == 409 and too_many.json()["type"].endswith("slot-full")
    assert (await book(client, second, made["id"], places=1)).status_code == 201
    again = await book(client, first, made["id"], places=1)
    assert again.status_code == 409 and again.json()["type"].endswith("already-booked")


async def test_the_same_key_is_the_same_booking_and_another_body_is_refused(
    client: Any, services: Any
) -> None:
    made = await slot(client, services)
    person = await real_named(client, services)
    key = uuid.uuid4().hex
    first, again = await asyncio.gather(
        book(client, person, made["id"], key=key), book(client, person, made["id"], key=key)
    )
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"] and first.json()["order_id"] == again.json()["order_id"]
    assert first.json()["pay"] is not None
    other = await book(client, person, made["id"], places=2, key=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.text
    assert (await organiser_slot(client, made["organiser"], made["id"]))["held"] == 1


async def test_booking_needs_real_name_and_good_input(client: Any, services: Any) -> None:
    made = await slot(client, services)
    plain = await login(client)
    refused = await book(client, plain, made["id"])
    assert refused.status_code == 403 and refused.json()["type"].endswith("level-required"), refused.text
    person = await real_named(client, services)
    headers = {**bearer(person), "Idempotency-Key": uuid.uuid4().hex}
    cases = [
        ({"slot_id": made["id"], "places": 0, "channel": "wechat", "method": "native"}, "places"),
        ({"slot_id": made["id"], "places": 11, "channel": "wechat", "method": "native"}, "places"),
        ({"slot_id": "nope", "places": 1, "channel": "wechat", "method": "native"}, "slot_id"),
        ({"slot_id": str(uuid.uuid4()), "places": 1, "channel": "wechat", "method": "native"}, "slot_id"),
        ({"slot_id": made["id"], "places": 1, "channel": "paypal", "method": "native"}, "channel"),
        ({"slot_id": made["id"], "places": 1, "channel": "wechat", "method": "jsapi"}, "payer_channel_id"),
    ]
    for body, field in cases:
        answer = await client.post(
            "/api/v1/bookings", headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, json=body
        )
        assert 400 <= answer.status_code < 500, (field, answer.text)
        assert field in answer.text, (field, answer.text)
    valid = {"slot_id": made["id"], "places": 1, "channel": "wechat", "method": "native"}
    no_key = await client.post("/api/v1/bookings", headers=bearer(person), json=valid)
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.text
    assert (await organiser_slot(client, made["organiser"], made["id"]))["held"] == 0


async def test_an_expired_hold_frees_its_place_for_the_next_resident(
    client: Any, services: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = (await book(client, first, made["id"])).json()
    assert (await book(client, second, made["id"])).json()["type"].endswith("slot-full")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=bookings_of(services).rules.hold_seconds + 1)
    counts = await bookings_of(services).expire_holds(services.pool, now=later)
    assert counts["released"] >= 1
    assert (await mine(client, first, held["id"]))["status"] == "released"
    order = await db.fetchrow("SELECT status FROM payments.orders WHERE id = $1", uuid.UUID(held["order_id"]))
    assert order["status"] == "closed"  # closed at the channel first, then here
    assert (await book(client, second, made["id"])).status_code == 201


async def test_a_payment_racing_the_expiry_ends_as_a_booking(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=1)
    person = await real_named(client, services)
    held = (await book(client, person, made["id"])).json()
    await pay(client, wechat_sandbox, person, held, notify=False)  # paid at the channel, not yet heard of
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=bookings_of(services).rules.hold_seconds + 1)
    await bookings_of(services).expire_holds(services.pool, now=later)
    assert (await mine(client, person, held["id"]))["status"] == "paid"
    assert (await organiser_slot(client, made["organiser"], made["id"]))["booked"] == 1
    await ledger_ok(services)


async def test_money_for_a_released_hold_is_booked_again_or_refunded(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    """A payment heard of after the hold was released (the places taken meanwhile): the money goes back."""
    made = await slot(client, services, capacity=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = (await book(client, first, made["id"])).json()
    number = await out_trade_no(client, first, held)
    # The hold is released here without the channel (as when the channel refused the close): then the place goes
    # to someone else, and only then does the first payment arrive.
    async with services.pool.acquire() as conn, conn.transaction():
        await bookings_of(services).order_closed(conn, uuid.UUID(held["order_id"]))
    taken = (await book(client, second, made["id"])).json()
    await pay(client, wechat_sandbox, second, taken)
    paid = await wechat_sandbox.control("POST", f"_sandbox/trades/{number}/pay", {"deliver": False})
    await deliver(client, paid["notification"])
    late = await mine(client, first, held["id"])
    assert (late["status"], late["cancelled_by"], late["refund"]) == ("cancelled", "late_payment", "due")
    assert (await bookings_of(services).refund_due(services.pool))["requested"] >= 1
    await services.payments.refunds.settle_pending_refunds(services.pool)
    assert await refunds_of(db, held["order_id"]) == [(3000, "succeeded")]
    assert (await organiser_slot(client, made["organiser"], made["id"]))["booked"] == 1
    await ledger_ok(services)


async def test_cancel_before_the_cut_off_refunds_and_frees_the_place(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    made = await slot(client, services, capacity=1, price_fen=4500)
    person = await real_named(client, services)
    booking = (await book(client, person, made["id"])).json()
    await pay(client, wechat_sandbox, person, booking)
    cancelled = await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(person))
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["refund"]) == ("cancelled", "requested")
    await services.payments.refunds.settle_pending_refunds(services.pool)
    assert await refunds_of(db, booking["order_id"]) == [(4500, "succeeded")]
    again = await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(person))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert await refunds_of(db, booking["order_id"]) == [(4500, "succeeded")]  # one refund, not two
    assert (await organiser_slot(client, made["organiser"], made["id"]))["booked"] == 0
    other = await real_named(client, services)
    assert (await book(client, other, made["id"])).status_code == 201
    await ledger_ok(services)


async def test_cancel_after_the_cut_off_keeps_the_booking(
    client: Any, services: Any, wechat_sandbox: Any, db: Any
) -> None:
    # The slot starts in two hours and paid bookings may be cancelled until three hours before: already past.
    made = await slot(client, services, starts_in=dt.timedelta(hours=2), cancellation_cutoff_minutes=180)
    person = await real_named(client, services)
    booking = (await book(client, person, made["id"])).json()
    await pay(client, wechat_sandbox, person, booking)
    refused = await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(person))
    assert refused.status_code == 409 and refused.json()["type"].endswith("cancellation-closed"), refused.text
    assert (await mine(client, person, booking["id"]))["status"] == "paid"
    assert await refunds_of(db, booking["order_id"]) == []


async def test_an_unpaid_booking_cancelled_closes_its_order(client: Any, services: Any, db: Any) -> None:
    made = await slot(client, services, capacity=1)
    person = await real_named(client, services)
    booking = (await book(client, person, made["id"])).json()
    cancelled = await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(person))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    order = await db.fetchrow(
        "SELECT status FROM payments.orders WHERE id = $1", uuid.UUID(booking["order_id"])
    )
    assert order["status"] == "closed"
    assert (await organiser_slot(client, made["organiser"], made["id"]))["held"] == 0
    stranger = await real_named(client, services)
    assert (
        await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=bearer(stranger))
    ).status_code == 404
    assert (
        await client.get(f"/api/v1/bookings/{booking['id']}", headers=bearer(stranger))
    ).status_code == 404
    listed = await client.get("/api/v1/bookings", headers=bearer(person))
    assert [b["id"] for b in listed.json()["bookings"]] == [booking["id"]]
