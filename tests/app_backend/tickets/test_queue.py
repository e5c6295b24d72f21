"""The fair queue: residents are admitted in the order they joined at the sale's rate, see their position and an
estimate, and the hold refuses anyone without their own valid pass while the queue is on."""

from __future__ import annotations

import asyncio
import datetime as dt

from app_backend.tickets import service as ticket_service
from tests.app_backend.tickets.helpers import TICKETS, hold, join, on_sale
from tests.helpers import bearer, login, real_named


async def test_residents_are_admitted_in_arrival_order_at_the_rate(client, services):
    sale = await on_sale(client, services, admit_per_minute=120)  # one every half second
    first, second, third = [await real_named(client, services) for _ in range(3)]
    places = [(await join(client, p, sale)).json() for p in (first, second, third)]
    # nobody was waiting: the first is admitted at once; the others wait their turn, in order
    assert places[0]["admitted"] is True and places[0]["pass_token"]
    assert [p["position"] for p in places[1:]] == [1, 2]
    assert places[1]["pass_token"] is None and 0 < places[2]["estimate_seconds"] <= 2
    assert places[1]["admitted_at"] < places[2]["admitted_at"]
    # joining again keeps one's place
    assert (await join(client, second, sale)).json()["admitted_at"] == places[1]["admitted_at"]
    turn = dt.datetime.fromisoformat(places[1]["admitted_at"])
    await asyncio.sleep(max(0.0, (turn - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    polled = [
        (await client.get(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(p))).json()
        for p in (second, third)
    ]
    assert polled[0]["admitted"] is True and polled[1]["admitted"] is False and polled[1]["position"] == 1
    held = await hold(client, second, sale, pass_token=polled[0]["pass_token"])
    assert held.status_code == 201, held.text


async def test_the_hold_refuses_a_buyer_without_their_own_pass(client, services):
    sale = await on_sale(client, services, admit_per_minute=60)
    admitted, script = await real_named(client, services), await real_named(client, services)
    token = (await join(client, admitted, sale)).json()["pass_token"]
    for pass_token in (None, token, token[:-2] + "xx", "9999999999.abc"):
        answer = await hold(client, script, sale, pass_token=pass_token)
        assert answer.status_code == 403, answer.text
        assert answer.json()["type"].endswith("/queue-pass-required") and answer.headers["Retry-After"]
    other = await on_sale(client, services, admit_per_minute=60)
    assert (await hold(client, admitted, other, pass_token=token)).status_code == 403  # another session's
    assert (await hold(client, admitted, sale, pass_token=token)).status_code == 201


async def test_before_the_opening_the_queue_estimates_and_the_hold_waits(client, services):
    opens = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    sale = await on_sale(
        client, services, admit_per_minute=60, opens_at=opens, closes_at=opens + dt.timedelta(hours=1)
    )
    early = await real_named(client, services)
    place = (await join(client, early, sale)).json()
    assert place["admitted"] is False and place["position"] == 1 and 590 <= place["estimate_seconds"] <= 601
    answer = await hold(client, early, sale)
    assert answer.status_code == 409 and answer.json()["type"].endswith("/sale-not-open")
    assert 590 <= int(answer.headers["Retry-After"]) <= 601


async def test_an_l1_resident_cannot_join(client, services):
    sale = await on_sale(client, services, admit_per_minute=60)
    answer = await join(client, await login(client), sale)
    assert answer.status_code == 403
    stranger = await real_named(client, services)
    polled = await client.get(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(stranger))
    assert polled.status_code == 404


async def test_once_every_ticket_is_sold_or_held_the_queue_says_sold_out(client, services):
    """A rush of 100,000 for 20,000: the 80,000 behind must hear "sold out" when it is, not when their place
    comes up minutes later; a held ticket that is not paid comes back, and so does the queue."""
    sale = await on_sale(client, services, quota=1, admit_per_minute=6)  # one every ten seconds
    first, waiting = await real_named(client, services), await real_named(client, services)
    token = (await join(client, first, sale)).json()["pass_token"]
    place = (await join(client, waiting, sale)).json()
    assert place["admitted"] is False and place["position"] == 1
    held = await hold(client, first, sale, pass_token=token)
    assert held.status_code == 201, held.text
    client.app.state.tickets._views.clear()  # the sale's view is kept a second per worker
    for answer in (
        await join(client, waiting, sale),
        await client.get(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(waiting)),
    ):
        assert answer.status_code == 409, answer.text
        assert answer.json()["type"].endswith("/sold-out") and answer.headers["Retry-After"]


async def test_a_warm_poll_is_answered_from_redis_alone(client, services, monkeypatch):
    """In a rush every waiting buyer polls: once the worker knows the sale and the buyer, a join or a poll takes
    no PostgreSQL connection (it took a transaction each, which starved the holds and payments of the rush)."""
    monkeypatch.setattr(
        ticket_service, "SALE_VIEW_SECONDS", 600.0
    )  # the view stays warm however slow the run
    sale = await on_sale(client, services, admit_per_minute=6)
    first, waiting = await real_named(client, services), await real_named(client, services)
    assert (await join(client, first, sale)).status_code == 200
    assert (await join(client, waiting, sale)).status_code == 200
    tickets = client.app.state.tickets

    class NoDatabase:
        def acquire(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a warm poll asked PostgreSQL")

    pool, tickets.pool = tickets.pool, NoDatabase()
    try:
        polled = await client.get(f"{TICKETS}/sessions/{sale['session_id']}/queue", headers=bearer(waiting))
    finally:
        tickets.pool = pool
    assert polled.status_code == 200, polled.text
    assert polled.json()["position"] == 1
