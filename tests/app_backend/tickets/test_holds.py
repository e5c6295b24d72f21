"""Holding and buying: real-name L2, one ticket per attendee, the per-ID limit across accounts, payment through the
sandbox confirming the tickets, bad input named, and no oversell with many buyers at once."""

from __future__ import annotations

import asyncio

from tests.app_backend.tickets.helpers import (
    TICKETS,
    bought,
    channel_pays,
    hold,
    on_sale,
    out_trade_no,
    pay,
    remaining,
    residents,
)
from tests.helpers import bearer, login, random_id_number, real_named
from tests.payments.helpers import ledger_ok


async def _until_answered(client, buyer, sale):
    """A buyer's app: a 503 (the server shedding what it cannot take now, Retry-After) is asked again."""
    while True:
        answer = await hold(client, buyer, sale)
        if answer.status_code != 503:
            return answer
        assert answer.headers["Retry-After"]
        await asyncio.sleep(0.2)


async def test_an_l1_resident_is_refused(client, services):
    sale = await on_sale(client, services)
    person = await login(client)
    answer = await hold(client, person, sale)
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"].endswith("/real-name-required")
    body = {"session_id": sale["session_id"], "class_id": sale["class_id"], "attendees": [{}]}
    anonymous = await client.post(f"{TICKETS}/holds", json=body)
    assert anonymous.status_code == 401, anonymous.text
    await client.post("/api/v1/auth/logout", headers=bearer(person))
    assert (
        await hold(client, person, sale)
    ).status_code == 401  # the session ended: the gate's checks say so


async def test_a_hold_paid_through_the_sandbox_gives_valid_tickets(client, services, wechat_sandbox):
    sale = await on_sale(client, services, quota=10)
    person = await real_named(client, services)
    friend = random_id_number()
    paid = await bought(
        client, wechat_sandbox, person, sale, attendees=[{}, {"name": "张三", "id_number": friend}]
    )
    assert paid["amount_fen"] == 16000 and [t["status"] for t in paid["tickets"]] == ["valid", "valid"]
    named = next(t for t in paid["tickets"] if not t["attendee_is_buyer"])
    assert (
        named["attendee_name"] == "张*" and named["attendee_id_number"] == friend[:3] + "*" * 11 + friend[-4:]
    )
    assert await remaining(client, sale) == 8
    mine = await client.get(TICKETS, headers=bearer(person))
    assert {t["id"] for t in mine.json()["tickets"]} == {t["id"] for t in paid["tickets"]}
    async with services.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT attendee_id_enc FROM tickets.tickets WHERE id = $1::uuid", named["id"]
        )
    assert friend.encode() not in bytes(stored)
    await ledger_ok(services)


async def test_paying_twice_is_one_order(client, services, wechat_sandbox):
    sale = await on_sale(client, services)
    person = await real_named(client, services)
    held = (await hold(client, person, sale)).json()
    first, second = await asyncio.gather(pay(client, person, held["id"]), pay(client, person, held["id"]))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["order_id"] == second.json()["order_id"]


async def test_the_per_id_limit_counts_the_attendee_across_accounts(client, services):
    sale = await on_sale(client, services, per_person=2)
    someone = random_id_number()
    one, other = await real_named(client, services), await real_named(client, services)
    first = await hold(client, one, sale, attendees=[{"name": "李四", "id_number": someone}, {}])
    assert first.status_code == 201, first.text
    second = await hold(client, other, sale, attendees=[{"name": "李四", "id_number": someone}])
    assert second.status_code == 201, second.text
    third = await hold(client, one, sale, attendees=[{}, {"name": "李四", "id_number": someone}])
    assert third.status_code == 409, third.text
    assert third.json()["type"].endswith("/per-person-limit") and "attendees[1]" in third.text
    # nothing of the refused hold stayed: the buyer still has one ticket left
    assert (await hold(client, one, sale)).status_code == 201
    assert (await hold(client, one, sale)).status_code == 409


async def test_bad_holds_are_4xx_naming_the_field(client, services):
    sale = await on_sale(client, services, per_person=2)
    person = await real_named(client, services)
    cases = {
        "attendees[0].id_number": [{"name": "王五", "id_number": "110105194912310021"}],
        "attendees[0].name": [{"id_number": random_id_number()}],
        "attendees[1]": [{}, {}],
        "attendees": [
            {},
            {"name": "赵六", "id_number": random_id_number()},
            {"name": "钱七", "id_number": random_id_number()},
        ],
    }
    for field, attendees in cases.items():
        answer = await hold(client, person, sale, attendees=attendees)
        assert answer.status_code == 400, (field, answer.text)
        assert field in answer.text, (field, answer.text)
    wrong_class = await hold(client, person, {**sale, "class_id": "00000000-0000-4000-8000-000000000000"})
    assert wrong_class.status_code == 404 and "class_id" in wrong_class.text
    assert await remaining(client, sale) == 50


async def test_many_buyers_at_once_never_oversell(client, services, wechat_sandbox):
    """200 buyers press hold at once for 50 tickets: exactly 50 holds, each paid once, exactly 50 sold."""
    sale = await on_sale(client, services, quota=50)
    buyers = await residents(client, services, 200)
    answers = await asyncio.gather(*(_until_answered(client, b, sale) for b in buyers))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 50 and codes.count(409) == 150, {a.status_code: a.text for a in answers}
    assert all(a.json()["type"].endswith("/sold-out") for a in answers if a.status_code == 409)
    winners = [(b, a.json()) for b, a in zip(buyers, answers, strict=True) if a.status_code == 201]
    paying = await asyncio.gather(*(pay(client, b, h["id"]) for b, h in winners))
    assert [p.status_code for p in paying] == [200] * 50
    numbers = await asyncio.gather(
        *(out_trade_no(client, b, p.json()["order_id"]) for (b, _), p in zip(winners, paying, strict=True))
    )
    assert len(set(numbers)) == 50
    await asyncio.gather(*(channel_pays(client, wechat_sandbox, n) for n in numbers))
    async with services.pool.acquire() as conn:
        sold, held, valid = await conn.fetchrow(
            """SELECT c.sold, c.held, (SELECT count(*) FROM tickets.tickets t WHERE t.class_id = c.id
                                           AND t.status = 'valid')
               FROM tickets.classes c WHERE c.id = $1::uuid""",
            sale["class_id"],
        )
        charged = await conn.fetchval(
            """SELECT count(*) FROM payments.orders o JOIN tickets.holds h ON h.order_id = o.id
               WHERE h.session_id = $1::uuid AND o.status = 'paid'""",
            sale["session_id"],
        )
    assert (sold, held, valid, charged) == (50, 0, 50, 50)
    assert await remaining(client, sale) == 0
    await ledger_ok(services)


async def test_the_sold_out_mark_only_answers_sooner(client, services):
    """Redis marks a class PostgreSQL found sold out; losing the mark sells nothing more, and tickets coming back
    drop it at once."""
    sale = await on_sale(client, services, quota=1)
    first, second = await real_named(client, services), await real_named(client, services)
    held = await hold(client, first, sale)
    assert held.status_code == 201
    assert (await hold(client, second, sale)).status_code == 409
    mark = f"tickets:sold-out:{sale['class_id']}"
    assert await services.redis.exists(mark)
    await services.redis.delete(mark)  # Redis lost it: PostgreSQL still refuses
    refused = await hold(client, second, sale)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/sold-out")
    assert await services.redis.exists(mark)
    async with services.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE tickets.holds SET expires_at = now() WHERE id = $1::uuid", held.json()["id"]
        )
    await client.app.state.tickets.expire_holds(services.pool)
    assert not await services.redis.exists(mark)
    assert (await hold(client, second, sale)).status_code == 201
