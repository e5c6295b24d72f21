"""The organiser offers facilities and slots of its own venues (signed, events:publish); anyone reads a venue's
slots by day with the places left; bad input is a 4xx naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from tests.app_backend.bookings.helpers import beijing_day, offer, slot, venue
from tests.app_backend.events.helpers import organiser
from tests.helpers import machine_credential


async def test_a_slot_offered_is_read_by_anyone_with_its_places(client: Any, services: Any) -> None:
    made = await slot(client, services, capacity=6, price_fen=2500)
    assert (made["capacity"], made["booked"], made["held"], made["status"]) == (6, 0, 0, "open")
    read = await client.get(
        f"/api/v1/bookings/venues/{made['venue_id']}/slots", params={"date": beijing_day(made["starts_at"])}
    )
    assert read.status_code == 200, read.text
    (public,) = read.json()["slots"]
    assert public["id"] == made["id"] and public["remaining"] == 6 and public["price_fen"] == 2500
    assert public["status"] == "open" and public["kind"] == "court"
    for far in ("9999-12-31", "0001-01-01"):
        refused = await client.get(f"/api/v1/bookings/venues/{made['venue_id']}/slots", params={"date": far})
        assert refused.status_code == 400 and "date" in refused.text, refused.text
    other_day = await client.get(
        f"/api/v1/bookings/venues/{made['venue_id']}/slots", params={"date": "2020-01-01"}
    )
    assert other_day.json()["slots"] == []


async def test_another_organisers_venue_facility_and_slot_are_not_found(client: Any, services: Any) -> None:
    made = await slot(client, services)
    stranger = await organiser(client, services)
    facilities = await offer(
        client, stranger, "POST", f"/venues/{made['venue_id']}/facilities", {"name": "泳池", "kind": "pool"}
    )
    assert facilities.status_code == 404, facilities.text
    assert (await offer(client, stranger, "GET", f"/venues/{made['venue_id']}/facilities")).status_code == 404
    slots = await offer(
        client,
        stranger,
        "POST",
        f"/facilities/{made['facility_id']}/slots",
        {
            "slots": [{"starts_at": "2030-01-01T09:00:00+08:00", "ends_at": "2030-01-01T10:00:00+08:00"}],
            "capacity": 1,
            "price_fen": 100,
        },
    )
    assert slots.status_code == 404, slots.text
    assert (await offer(client, stranger, "GET", f"/slots/{made['id']}")).status_code == 404
    cancel = await offer(client, stranger, "POST", f"/slots/{made['id']}/cancel", {"reason": "场地维修"})
    assert cancel.status_code == 404
    unknown = await offer(
        client, stranger, "POST", f"/venues/{uuid.uuid4()}/facilities", {"name": "馆", "kind": "hall"}
    )
    assert unknown.status_code == 404
    assert (await client.get(f"/api/v1/bookings/venues/{uuid.uuid4()}/slots")).status_code == 404


async def test_a_credential_without_events_publish_is_refused(client: Any, services: Any) -> None:
    place = await venue(client, services)
    merchant = await machine_credential(client, services, ["payments:refund"], kind="department")
    refused = await offer(
        client, merchant, "POST", f"/venues/{place['venue_id']}/facilities", {"name": "馆", "kind": "hall"}
    )
    assert refused.status_code == 403, refused.text


async def test_bad_slots_are_refused_naming_the_field(client: Any, services: Any) -> None:
    made = await slot(client, services)
    who, path = made["organiser"], f"/facilities/{made['facility_id']}/slots"
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)

    def body(starts: dt.datetime | str, ends: dt.datetime | str, **fields: Any) -> dict[str, Any]:
        text = [x.isoformat() if isinstance(x, dt.datetime) else x for x in (starts, ends)]
        return {
            "slots": [{"starts_at": text[0], "ends_at": text[1]}],
            "capacity": 2,
            "price_fen": 100,
            **fields,
        }

    cases = [
        (body(soon, soon - dt.timedelta(hours=1)), "slots[0].ends_at"),
        (body(soon, soon + dt.timedelta(hours=30)), "slots[0].ends_at"),
        (body(soon - dt.timedelta(days=4), soon - dt.timedelta(days=3, hours=23)), "slots[0].starts_at"),
        (body("2030-01-01T09:00:00", "2030-01-01T10:00:00"), "slots[0].starts_at"),
        (body("0001-01-01T00:00:00+14:00", "0001-01-01T01:00:00+14:00"), "slots[0].starts_at"),
        (body("9999-12-31T20:00:00-12:00", "9999-12-31T21:00:00-12:00"), "slots[0].starts_at"),
        (body(soon, soon + dt.timedelta(hours=1), capacity=0), "capacity"),
        (body(soon, soon + dt.timedelta(hours=1), price_fen=-5), "price_fen"),
        ({"slots": [], "capacity": 1, "price_fen": 1}, "slots"),
        ({**body(soon, soon + dt.timedelta(hours=1)), "colour": "red"}, "colour"),
    ]
    for sent, field in cases:
        answer = await offer(client, who, "POST", path, sent)
        assert answer.status_code in (400, 422), (field, answer.text)
        assert field in answer.text, (field, answer.text)
    taken = await offer(client, who, "POST", path, body(made["starts_at"], made["ends_at"]))
    assert taken.status_code == 409 and "slots" in taken.text, taken.text
    facility = await offer(
        client, who, "POST", f"/venues/{made['venue_id']}/facilities", {"name": "  ", "kind": "court"}
    )
    assert facility.status_code == 400 and "name" in facility.text
    kind = await offer(
        client, who, "POST", f"/venues/{made['venue_id']}/facilities", {"name": "馆", "kind": "moon"}
    )
    assert kind.status_code == 400 and "kind" in kind.text
