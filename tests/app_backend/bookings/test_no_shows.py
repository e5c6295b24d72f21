"""After each slot ends, paid bookings never admitted are no-shows; repeated no-shows (N within D days, the city's
rule) limit booking for a period, with a 403 saying until when; residents see their no-shows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from tests.app_backend.bookings.helpers import book, bookings_of, mine, pay, slot, venue
from tests.helpers import bearer, machine_credential, real_named


async def test_repeated_no_shows_limit_booking_until_a_date(
    client: Any, services: Any, wechat_sandbox: Any
) -> None:
    service = bookings_of(services)
    rules = service.rules
    service.rules = msgspec.structs.replace(
        rules, no_show_limit=2, no_show_window_days=30, restriction_days=7
    )
    try:
        verifier = await machine_credential(client, services, ["verify:event"])
        gate = uuid.UUID(verifier["organisation"]["id"])
        place = await venue(client, services, gate_verifiers=[gate])
        slots = [
            await slot(client, services, place=place, starts_in=dt.timedelta(days=2, hours=n))
            for n in range(3)
        ]
        absent, present = await real_named(client, services), await real_named(client, services)
        absent_bookings = []
        for made in slots[:2]:
            booking = (await book(client, absent, made["id"])).json()
            await pay(client, wechat_sandbox, absent, booking)
            absent_bookings.append(booking)
        came = (await book(client, present, slots[0]["id"])).json()
        await pay(client, wechat_sandbox, present, came)
        async with services.pool.acquire() as conn, conn.transaction():
            admitted = await service.admissions.admit(
                conn,
                uuid.UUID(slots[0]["id"]),
                "东门",
                gate,
                dt.datetime.fromisoformat(slots[0]["starts_at"]),
                resident_id=uuid.UUID(present["resident_id"]),
            )
        assert admitted is not None and admitted.admitted

        # Before the slots end nothing is marked; after they end, the job marks once.
        await service.mark_no_shows(services.pool, now=dt.datetime.fromisoformat(slots[0]["starts_at"]))
        assert (await mine(client, absent, absent_bookings[0]["id"]))["no_show"] is False
        after = dt.datetime.fromisoformat(slots[1]["ends_at"]) + dt.timedelta(minutes=1)
        counts = await service.mark_no_shows(services.pool, now=after)
        assert counts["no_shows"] >= 2 and counts["restricted"] >= 1, counts
        assert (await service.mark_no_shows(services.pool, now=after))["no_shows"] == 0  # once per slot
        assert (await mine(client, absent, absent_bookings[0]["id"]))["no_show"] is True
        assert (await mine(client, present, came["id"]))["no_show"] is False

        seen = await client.get("/api/v1/bookings/no-shows", headers=bearer(absent))
        assert seen.status_code == 200, seen.text
        assert sorted(n["booking_id"] for n in seen.json()["no_shows"]) == sorted(
            b["id"] for b in absent_bookings
        )
        until = seen.json()["restricted_until"]
        assert until is not None and seen.json()["limit"] == 2
        refused = await book(client, absent, slots[2]["id"])
        assert refused.status_code == 403, refused.text
        problem = refused.json()
        assert problem["type"].endswith("booking-restricted") and problem["restricted_until"] == until
        assert dt.datetime.fromisoformat(until) > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
        assert (await book(client, present, slots[2]["id"])).status_code == 201
        clean = await client.get("/api/v1/bookings/no-shows", headers=bearer(present))
        assert clean.json() == {"no_shows": [], "limit": 2, "window_days": 30, "restricted_until": None}
    finally:
        service.rules = rules
