"""A department broadcasts to the residents of regions it may address: accepted by the request, written by a job in
batches (one message per resident, also when runs overlap), idempotent per broadcast key, its progress readable by
the sender."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.regions import CITY
from tests.app_backend.notifications.helpers import inbox_of, notifications_of, set_message_regions
from tests.helpers import bearer, login, machine_credential, signed, staff

BROADCASTS = "/api/v1/messages/broadcasts"
NOTICE = {"kind": "public_notice", "title": "停水通知", "body": "明日 9:00-15:00 检修管网，请提前储水"}


async def allowed_department(client: Any, services: Any, regions: list[str]) -> dict[str, Any]:
    hall = await machine_credential(client, services, ["messages:send"], kind="department")
    admin = await staff(client, services)
    granted = await set_message_regions(client, admin, hall["organisation"]["id"], regions)
    assert granted.status_code == 200, granted.text
    return {**hall, "ops": admin}


async def living_in(client: Any, region: str | None, n: int = 1) -> list[dict[str, Any]]:
    residents = [await login(client) for _ in range(n)]
    if region is not None:
        for resident in residents:
            answer = await client.put("/api/v1/me/region", headers=bearer(resident), json={"region": region})
            assert answer.status_code == 200, answer.text
    return residents


async def broadcast(
    client: Any, hall: dict[str, Any], regions: list[str], key: str | None = None, **message: Any
) -> Any:
    body = {"broadcast_key": key or uuid.uuid4().hex, "regions": regions, "message": {**NOTICE, **message}}
    return await signed(client, hall, "POST", BROADCASTS, body)


async def progress(client: Any, hall: dict[str, Any], broadcast_id: str) -> dict[str, Any]:
    answer = await signed(client, hall, "GET", f"{BROADCASTS}/{broadcast_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def write(services: Any, **options: Any) -> dict[str, int]:
    notifications = notifications_of(services)
    return await notifications.write_broadcasts(notifications.pool, **options)


async def per_resident(services: Any, broadcast_id: str) -> dict[uuid.UUID, int]:
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT resident_id, count(*) AS n FROM notifications.messages WHERE broadcast_id = $1
               GROUP BY resident_id""",
            uuid.UUID(broadcast_id),
        )
    return {r["resident_id"]: r["n"] for r in rows}


async def residents_of(services: Any, region: str | None, created_by: str) -> set[uuid.UUID]:
    """The active residents of a district (None: of the city) whose accounts existed at `created_by`."""
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT id FROM identity.residents WHERE status = 'active' AND created_at <= $2
               AND ($1::text IS NULL OR region = $1)""",
            region,
            dt.datetime.fromisoformat(created_by),
        )
    return {r["id"] for r in rows}


def ids(residents: list[dict[str, Any]]) -> set[uuid.UUID]:
    return {uuid.UUID(r["resident_id"]) for r in residents}


async def test_a_broadcast_is_written_by_the_job_one_message_per_resident_of_the_region(
    client: Any, services: Any
) -> None:
    hall = await allowed_department(client, services, ["321203"])
    gaogang = await living_in(client, "321203", 5)
    elsewhere = await living_in(client, "321202") + await living_in(client, None)
    blocked = (await living_in(client, "321203"))[0]
    status = await client.post(
        f"/api/v1/admin/residents/{blocked['resident_id']}/status",
        headers=bearer(hall["ops"]),
        json={"status": "blocked", "reason": "test: blocked accounts get no broadcast"},
    )
    assert status.status_code == 200, status.text
    token = "push-" + uuid.uuid4().hex
    await client.post(
        "/api/v1/me/push-devices", headers=bearer(gaogang[0]), json={"platform": "android", "token": token}
    )

    accepted = await broadcast(client, hall, ["321203"])
    assert accepted.status_code == 201, accepted.text
    sent = accepted.json()
    assert (sent["status"], sent["total"], sent["written"], sent["regions"]) == (
        "queued",
        None,
        0,
        ["321203"],
    )
    late = (await living_in(client, "321203"))[0]  # joined after the broadcast was accepted
    # Nothing is written by the request.
    for resident in gaogang:
        assert await inbox_of(client, resident) == []

    await write(services, batch=2)
    done = await progress(client, hall, sent["id"])
    expected = await residents_of(services, "321203", sent["created_at"])
    assert ids(gaogang) <= expected and uuid.UUID(blocked["resident_id"]) not in expected
    assert (done["status"], done["total"], done["written"]) == ("done", len(expected), len(expected))
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert await per_resident(services, sent["id"]) == dict.fromkeys(expected, 1)
    for resident in gaogang:
        (message,) = await inbox_of(client, resident)
        assert (message["kind"], message["title"], message["sender_name"]) == (
            "public_notice",
            "停水通知",
            hall["organisation"]["name"],
        )
    for resident in [*elsewhere, late]:  # (the blocked resident is not among `expected`, written to)
        assert await inbox_of(client, resident) == []
    # One more channel, as for any message: the resident with a device gets a push.
    (pushed,) = await inbox_of(client, gaogang[0])
    assert {d["channel"]: d["status"] for d in pushed["deliveries"]} == {"inbox": "sent", "push": "pending"}

    # A run after it is done writes nothing more.
    assert (await write(services))["written"] == 0
    assert await per_resident(services, sent["id"]) == dict.fromkeys(expected, 1)


async def test_job_runs_at_once_write_each_residents_message_once(client: Any, services: Any) -> None:
    hall = await allowed_department(client, services, ["321282", "321204"])
    await living_in(client, "321282", 6)
    await living_in(client, "321204", 3)
    sent = (await broadcast(client, hall, ["321282", "321204"])).json()

    runs = await asyncio.gather(*(write(services, batch=2) for _ in range(4)))
    done = await progress(client, hall, sent["id"])
    expected = (await residents_of(services, "321282", sent["created_at"])) | (
        await residents_of(services, "321204", sent["created_at"])
    )
    assert (done["status"], done["total"], done["written"]) == ("done", len(expected), len(expected))
    assert await per_resident(services, sent["id"]) == dict.fromkeys(expected, 1)
    # Every message was counted by the one run that wrote it.
    assert sum(run["written"] for run in runs) == len(expected)
    assert sum(run["finished"] for run in runs) == 1


async def test_a_city_broadcast_reaches_every_resident_once(client: Any, services: Any) -> None:
    hall = await allowed_department(client, services, [CITY])
    everywhere = await living_in(client, "321281") + await living_in(client, None)
    sent = (await broadcast(client, hall, ["321281", CITY])).json()
    await write(services)
    done = await progress(client, hall, sent["id"])
    expected = await residents_of(services, None, sent["created_at"])
    assert ids(everywhere) <= expected
    assert (done["status"], done["written"]) == ("done", len(expected))
    assert await per_resident(services, sent["id"]) == dict.fromkeys(expected, 1)


async def test_a_broadcast_key_is_one_broadcast(client: Any, services: Any) -> None:
    hall = await allowed_department(client, services, ["321202"])
    first = await broadcast(client, hall, ["321202"], key="outage-7")
    again = await broadcast(client, hall, ["321202"], key="outage-7")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await broadcast(client, hall, ["321202"], key="outage-7", title="停电通知")
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "broadcast_key"
    # Concurrent first requests with one key: one broadcast.
    answers = await asyncio.gather(*(broadcast(client, hall, ["321202"], key="outage-8") for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    # Another organisation's key is its own.
    neighbour = await allowed_department(client, services, ["321202"])
    assert (await broadcast(client, neighbour, ["321202"], key="outage-7")).status_code == 201


async def test_a_broadcast_to_a_region_not_allowed_is_refused(client: Any, services: Any) -> None:
    hall = await allowed_department(client, services, ["321202"])
    refused = await broadcast(client, hall, ["321202", "321203"])
    assert refused.status_code == 403 and refused.json()["type"].endswith("/not-addressable")
    assert refused.json()["errors"][0]["field"] == "regions[1]"
    # A district does not reach the city.
    assert (await broadcast(client, hall, [CITY])).json()["errors"][0]["field"] == "regions[0]"
    bad = await broadcast(client, hall, ["321202", "999999"])
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "regions[1]"
    empty = await signed(
        client, hall, "POST", BROADCASTS, {"broadcast_key": "x", "regions": [], "message": NOTICE}
    )
    assert empty.status_code == 400
    nobody = await machine_credential(client, services, ["messages:send"], kind="department")
    assert (await broadcast(client, nobody, ["321202"])).status_code == 403
    unscoped = await machine_credential(client, services, ["payments:refund"], kind="department")
    assert (await broadcast(client, unscoped, ["321202"])).status_code == 403

    sent = (await broadcast(client, hall, ["321202"])).json()
    assert (await signed(client, nobody, "GET", f"{BROADCASTS}/{sent['id']}")).status_code == 404
    assert (await signed(client, hall, "GET", f"{BROADCASTS}/{uuid.uuid4()}")).status_code == 404


async def test_a_broadcast_stops_when_operations_take_the_region_back(client: Any, services: Any) -> None:
    hall = await allowed_department(client, services, ["321283"])
    residents = await living_in(client, "321283", 2)
    sent = (await broadcast(client, hall, ["321283"])).json()
    taken = await set_message_regions(client, hall["ops"], hall["organisation"]["id"], [])
    assert taken.status_code == 200
    await write(services)
    stopped = await progress(client, hall, sent["id"])
    assert (stopped["status"], stopped["written"]) == ("stopped", 0)
    assert "321283" in stopped["stopped_reason"]
    for resident in residents:
        assert await inbox_of(client, resident) == []
