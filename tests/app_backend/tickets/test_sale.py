"""The organiser sets up a session's sale (signed, its own sessions only); anyone reads it with what is left."""

from __future__ import annotations

import datetime as dt

from tests.app_backend.events.helpers import organiser, published_session
from tests.app_backend.tickets.helpers import TICKETS, on_sale, put_sale, sale_body


async def test_the_organiser_sets_up_a_sale_and_anyone_reads_it(client, services):
    sale = await on_sale(client, services, quota=30, admit_per_minute=600, re_entry_minutes=30)
    public = await client.get(f"{TICKETS}/sessions/{sale['session_id']}")
    assert public.status_code == 200, public.text
    body = public.json()
    assert body["state"] == "open" and body["queue"] is True and body["re_entry_minutes"] == 30
    assert [(c["name"], c["quota"], c["remaining"], c["section"]) for c in body["classes"]] == [
        ("A区看台", 30, 30, "A区")
    ]


async def test_another_organiser_cannot_set_up_the_sale(client, services):
    session = await published_session(client, services)
    stranger = await organiser(client, services)
    answer = await put_sale(client, stranger, session["session_id"], sale_body())
    assert answer.status_code == 404, answer.text


async def test_bad_set_up_is_a_4xx_naming_the_field(client, services):
    session = await published_session(client, services)
    now = dt.datetime.now(dt.UTC)
    cases = {
        "closes_at": sale_body(opens_at=now, closes_at=now - dt.timedelta(hours=1)),
        "classes[0].section": {
            **sale_body(),
            "classes": [{"name": "x", "price_fen": 1, "section": "Z区", "quota": 1}],
        },
        "classes[1].name": {
            **sale_body(),
            "classes": [
                {"name": "x", "price_fen": 1, "section": "A区", "quota": 1},
                {"name": "x", "price_fen": 1, "section": "B区", "quota": 1},
            ],
        },
        "per_person": sale_body(per_person=0),
        "price_fen": {
            **sale_body(),
            "classes": [{"name": "x", "price_fen": -5, "section": "A区", "quota": 1}],
        },
    }
    for field, body in cases.items():
        answer = await put_sale(client, session["organiser"], session["session_id"], body)
        assert answer.status_code == 400, (field, answer.text)
        assert field in answer.text, (field, answer.text)


async def test_a_sale_of_an_unknown_session_is_404(client):
    answer = await client.get(f"{TICKETS}/sessions/00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 404
