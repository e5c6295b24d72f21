"""Dev only: many real-named residents, logged in, in one call (the ticket rush's 100,000 buyers cannot each go
through OTP and the registry before a load test). Outside dev the route is not mounted (test_module.py)."""

from __future__ import annotations

import asyncio

from tests.helpers import bearer


async def test_a_load_test_gets_real_named_residents_logged_in(client, services):
    made = await client.post("/api/v1/dev/residents", json={"count": 40})
    assert made.status_code == 201, made.text
    residents = made.json()["residents"]
    assert 35 <= len(residents) <= 40  # a random phone or person already held is skipped
    assert (
        len({r["resident_id"] for r in residents}) == len({r["phone"] for r in residents}) == len(residents)
    )
    profiles = await asyncio.gather(*(client.get("/api/v1/me", headers=bearer(r)) for r in residents[:5]))
    for answer in profiles:
        assert answer.status_code == 200, answer.text
        assert answer.json()["level"] == "L2"
    # The refresh token is a real session's.
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": residents[0]["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    async with services.pool.acquire() as conn:
        stored = await conn.fetchrow(
            "SELECT name_enc, id_number_enc FROM identity.residents WHERE id = $1::uuid",
            residents[0]["resident_id"],
        )
    assert b"\xe6\xb5\x8b\xe8\xaf\x95" not in bytes(stored["name_enc"]), "the name is stored encrypted"


async def test_the_count_is_bounded_and_named(client):
    for bad in (0, 2001, "many"):
        answer = await client.post("/api/v1/dev/residents", json={"count": bad})
        assert answer.status_code == 400, answer.text
        assert "count" in answer.text
