"""What a venue organiser, a resident and the payment channel do in the booking tests, over HTTP."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from app_backend.bookings.service import BookingService
from tests.app_backend.events.helpers import manage, ok, organiser, venue_body
from tests.helpers import bearer, signed

MANAGE = "/api/v1/bookings/manage"


def bookings_of(services: Any) -> BookingService:
    return services.platform.get(BookingService)  # type: ignore[no-any-return]


async def venue(
    client: Any, services: Any, who: dict[str, Any] | None = None, *, gate_verifiers: Iterable[Any] = ()
) -> dict[str, Any]:
    """A venue of the schedule, published by `who` (a new organiser when absent): {"organiser", "venue_id"}."""
    who = who or await organiser(client, services)
    made = ok(
        await manage(
            client, who, "POST", "/venues", venue_body(gate_verifiers, name=f"体育馆{uuid.uuid4().hex[:6]}")
        )
    )
    return {"organiser": who, "venue_id": made["id"]}


async def offer(client: Any, who: dict[str, Any], method: str, tail: str, body: Any = None) -> httpx.Response:
    return await signed(client, who, method, MANAGE + tail, body)  # type: ignore[no-any-return]


async def slot(
    client: Any,
    services: Any,
    *,
    capacity: int = 4,
    price_fen: int = 3000,
    starts_in: dt.timedelta = dt.timedelta(days=2),
    cancellation_cutoff_minutes: int = 120,
    gate_verifiers: Iterable[Any] = (),
    place: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One slot of a new facility (a badminton court) of a venue: the slot as its organiser sees it, with
    "organiser" and "venue_id"."""
    place = place or await venue(client, services, gate_verifiers=gate_verifiers)
    facility = ok(
        await offer(
            client,
            place["organiser"],
            "POST",
            f"/venues/{place['venue_id']}/facilities",
            {"name": f"羽毛球{uuid.uuid4().hex[:4]}号场", "kind": "court"},
        )
    )
    starts_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + starts_in
    made = ok(
        await offer(
            client,
            place["organiser"],
            "POST",
            f"/facilities/{facility['id']}/slots",
            {
                "slots": [
                    {
                        "starts_at": starts_at.isoformat(),
                        "ends_at": (starts_at + dt.timedelta(hours=1)).isoformat(),
                    }
                ],
                "capacity": capacity,
                "price_fen": price_fen,
                "cancellation_cutoff_minutes": cancellation_cutoff_minutes,
            },
        )
    )
    return {**made["slots"][0], "organiser": place["organiser"], "venue_id": place["venue_id"]}


async def book(
    client: Any, person: dict[str, Any], slot_id: str, places: int = 1, key: str | None = None
) -> httpx.Response:
    return await client.post(  # type: ignore[no-any-return]
        "/api/v1/bookings",
        headers={**bearer(person), "Idempotency-Key": key or uuid.uuid4().hex},
        json={
            "slot_id": slot_id,
            "places": places,
            "channel": "wechat",
            "method": "jsapi",
            "payer_channel_id": "o-openid-1",
        },
    )


async def out_trade_no(client: Any, person: dict[str, Any], booking: dict[str, Any]) -> str:
    order = await client.get(f"/api/v1/payments/orders/{booking['order_id']}", headers=bearer(person))
    assert order.status_code == 200, order.text
    return order.json()["out_trade_no"]  # type: ignore[no-any-return]


async def pay(
    client: Any, wechat: Any, person: dict[str, Any], booking: dict[str, Any], *, notify: bool = True
) -> dict[str, Any]:
    """The resident pays the booking's order in the WeChat Pay sandbox; the notification reaches the app (unless
    `notify` is false). The notification, to deliver again."""
    number = await out_trade_no(client, person, booking)
    paid = await wechat.control("POST", f"_sandbox/trades/{number}/pay", {"deliver": False})
    if notify:
        await deliver(client, paid["notification"])
    return paid["notification"]  # type: ignore[no-any-return]


async def deliver(client: Any, note: dict[str, Any]) -> None:
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200 and b"SUCCESS" in ack.content, ack.text


def beijing_day(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()


async def mine(client: Any, person: dict[str, Any], booking_id: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/bookings/{booking_id}", headers=bearer(person))
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def organiser_slot(client: Any, who: dict[str, Any], slot_id: str) -> dict[str, Any]:
    return ok(await offer(client, who, "GET", f"/slots/{slot_id}"))


async def refunds_of(db: Any, order_id: str) -> list[tuple[int, str]]:
    rows = await db.fetch(
        "SELECT amount_fen, status FROM payments.refunds WHERE order_id = $1 ORDER BY created_at",
        uuid.UUID(order_id),
    )
    return [(r["amount_fen"], r["status"]) for r in rows]


async def paid_orders_of(db: Any, resident_id: str) -> int:
    return int(
        await db.fetchval(
            """SELECT count(*) FROM payments.orders WHERE payer_id = $1 AND purpose = 'venue_booking'
                                                   AND status IN ('paid', 'finished')""",
            uuid.UUID(resident_id),
        )
    )
