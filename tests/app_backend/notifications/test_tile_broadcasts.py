"""Issue 16: a department broadcasts to the users of one of its tiles, the residents who opened it in a period
(the last N business days, default and maximum from the settings): accepted by the request, written by the same job
as a broadcast to regions, one message per such resident (also when runs overlap), none to residents who did not
open it, opened it before the period or only after the broadcast was accepted; another department's tile (or none)
is one 404 naming `tile_id`; the progress is readable."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.clock import business_day
from tests.app_backend.notifications.helpers import inbox_of
from tests.app_backend.notifications.test_broadcasts import (
    BROADCASTS,
    NOTICE,
    ids,
    per_resident,
    progress,
    write,
)
from tests.app_backend.tiles.helpers import department, live, reviewer, unique
from tests.helpers import bearer, login, signed, staff


async def tile_department(client: Any, services: Any) -> tuple[dict[str, Any], str]:
    """A department that may manage tiles and send messages, with one live tile: (its credential, the tile id)."""
    dept = await department(client, services, ("tiles:manage", "messages:send"))
    tile = await live(client, dept, await reviewer(client, services), name=unique("不动产"))
    return dept, tile["id"]


async def who_opened(client: Any, tile_id: str, n: int) -> list[dict[str, Any]]:
    residents = [await login(client) for _ in range(n)]
    for resident in residents:
        answer = await client.post(f"/api/v1/tiles/{tile_id}/open", headers=bearer(resident))
        assert answer.status_code == 200, answer.text
    return residents


async def backdate(services: Any, tile_id: str, resident: dict[str, Any], days: int) -> None:
    """The resident's opens of the tile as if made `days` days ago."""
    async with services.pool.acquire() as conn:
        await conn.execute(
            """UPDATE tiles.opens SET day = day - $3::int, first_at = first_at - make_interval(days => $3),
                   last_at = last_at - make_interval(days => $3)
               WHERE tile_id = $1 AND resident_id = $2""",
            uuid.UUID(tile_id),
            uuid.UUID(resident["resident_id"]),
            days,
        )


async def to_tile(
    client: Any, dept: dict[str, Any], tile_id: str, key: str | None = None, **fields: Any
) -> Any:
    body = {"broadcast_key": key or uuid.uuid4().hex, "tile_id": tile_id, "message": NOTICE, **fields}
    return await signed(client, dept, "POST", BROADCASTS, body)


async def test_the_residents_who_opened_the_tile_get_one_message_each(client: Any, services: Any) -> None:
    dept, tile_id = await tile_department(client, services)
    openers = await who_opened(client, tile_id, 4)
    again = await client.post(f"/api/v1/tiles/{tile_id}/open", headers=bearer(openers[0]))
    assert again.status_code == 200  # a second open is no second message
    long_ago = (await who_opened(client, tile_id, 1))[0]
    await backdate(services, tile_id, long_ago, 90)  # the 91st day back: before the default period
    recently = openers[3]
    await backdate(services, tile_id, recently, 89)  # the 90th day back: within it
    blocked = (await who_opened(client, tile_id, 1))[0]
    status = await client.post(
        f"/api/v1/admin/residents/{blocked['resident_id']}/status",
        headers=bearer(await staff(client, services)),
        json={"status": "blocked", "reason": "test: blocked accounts get no broadcast"},
    )
    assert status.status_code == 200, status.text
    _, other_tile = await tile_department(client, services)
    elsewhere = await who_opened(client, other_tile, 1)
    never = await login(client)

    accepted = await to_tile(client, dept, tile_id)
    assert accepted.status_code == 201, accepted.text
    sent = accepted.json()
    today = business_day()
    assert (sent["audience"], sent["tile_id"], sent["regions"], sent["status"], sent["total"]) == (
        "tile",
        tile_id,
        [],
        "queued",
        None,
    )
    assert sent["opened_within_days"] == 90
    assert sent["opened_since"] == f"{today - dt.timedelta(days=89):%Y-%m-%d}"
    late = (await who_opened(client, tile_id, 1))[0]  # opened only after the broadcast was accepted
    for resident in openers:
        assert await inbox_of(client, resident) == []  # nothing is written by the request

    await write(services, batch=2)
    done = await progress(client, dept, sent["id"])
    # `total` counts the openers in the period, the blocked one too; nobody blocked is written to.
    assert (done["status"], done["total"], done["written"]) == ("done", 5, 4)
    assert done["finished_at"] is not None
    assert await per_resident(services, sent["id"]) == dict.fromkeys(ids(openers), 1)
    for resident in openers:
        (message,) = await inbox_of(client, resident)
        assert (message["kind"], message["title"], message["sender_name"]) == (
            "public_notice",
            NOTICE["title"],
            dept["organisation"]["name"],
        )
    for resident in [long_ago, *elsewhere, never, late]:  # (the blocked one is not in per_resident above)
        assert await inbox_of(client, resident) == []
    # A run after it is done writes nothing more.
    assert (await write(services))["written"] == 0
    assert await per_resident(services, sent["id"]) == dict.fromkeys(ids(openers), 1)


async def test_a_period_of_its_own_reaches_only_who_opened_it_within(client: Any, services: Any) -> None:
    dept, tile_id = await tile_department(client, services)
    today_, two_days, three_days = await who_opened(client, tile_id, 3)
    await backdate(services, tile_id, two_days, 2)
    await backdate(services, tile_id, three_days, 3)
    sent = (await to_tile(client, dept, tile_id, opened_within_days=3)).json()
    assert sent["opened_since"] == f"{business_day() - dt.timedelta(days=2):%Y-%m-%d}"
    await write(services)
    assert (await progress(client, dept, sent["id"]))["written"] == 2
    assert await per_resident(services, sent["id"]) == dict.fromkeys(ids([today_, two_days]), 1)
    assert await inbox_of(client, three_days) == []


async def test_job_runs_at_once_write_each_openers_message_once(client: Any, services: Any) -> None:
    dept, tile_id = await tile_department(client, services)
    openers = await who_opened(client, tile_id, 7)
    sent = (await to_tile(client, dept, tile_id)).json()

    runs = await asyncio.gather(*(write(services, batch=2) for _ in range(4)))
    done = await progress(client, dept, sent["id"])
    assert (done["status"], done["total"], done["written"]) == ("done", 7, 7)
    assert await per_resident(services, sent["id"]) == dict.fromkeys(ids(openers), 1)
    assert sum(run["written"] for run in runs) == 7
    assert sum(run["finished"] for run in runs) == 1


async def test_another_departments_tile_is_refused_like_no_tile(client: Any, services: Any) -> None:
    dept, tile_id = await tile_department(client, services)
    neighbour, neighbours_tile = await tile_department(client, services)
    await who_opened(client, neighbours_tile, 1)

    theirs = await to_tile(client, dept, neighbours_tile)
    nowhere = await to_tile(client, dept, str(uuid.uuid4()))
    for refused in (theirs, nowhere):
        assert refused.status_code == 404, refused.text
        assert refused.json()["errors"] == [
            {"field": "tile_id", "message": "no tile of this organisation with this id"}
        ]
    assert theirs.json()["detail"] == nowhere.json()["detail"]  # nothing tells the two apart
    async with services.pool.acquire() as conn:
        queued = await conn.fetchval(
            "SELECT count(*) FROM notifications.broadcasts WHERE tile_id = $1", uuid.UUID(neighbours_tile)
        )
    assert queued == 0
    # The tile's own department may; another's progress is not readable.
    mine = (await to_tile(client, neighbour, neighbours_tile)).json()
    assert (await signed(client, dept, "GET", f"{BROADCASTS}/{mine['id']}")).status_code == 404
    # Messages need the scope, as any broadcast.
    manager_only = await department(client, services)
    assert (await to_tile(client, manager_only, tile_id)).status_code == 403


async def test_the_audience_and_period_are_checked(client: Any, services: Any) -> None:
    dept, tile_id = await tile_department(client, services)
    maximum = services.platform.settings.tiles.broadcast_max_days
    both = await to_tile(client, dept, tile_id, regions=["321202"])
    assert both.status_code == 400 and both.json()["errors"][0]["field"] == "regions"
    neither = await signed(client, dept, "POST", BROADCASTS, {"broadcast_key": "k", "message": NOTICE})
    assert neither.status_code == 400 and neither.json()["errors"][0]["field"] == "regions"
    too_long = await to_tile(client, dept, tile_id, opened_within_days=maximum + 1)
    assert too_long.status_code == 400 and too_long.json()["errors"][0]["field"] == "opened_within_days"
    assert (await to_tile(client, dept, tile_id, opened_within_days=0)).status_code == 400
    without_tile = await signed(
        client,
        dept,
        "POST",
        BROADCASTS,
        {"broadcast_key": "k", "regions": ["321202"], "opened_within_days": 7, "message": NOTICE},
    )
    assert without_tile.status_code == 400
    assert without_tile.json()["errors"][0]["field"] == "opened_within_days"

    # One key, one broadcast: the same tile and period again is the first, another period a 409.
    first = await to_tile(client, dept, tile_id, key="tile-7", opened_within_days=30)
    again = await to_tile(client, dept, tile_id, key="tile-7", opened_within_days=30)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = await to_tile(client, dept, tile_id, key="tile-7", opened_within_days=7)
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "broadcast_key"
