"""Protection under surges: rate limits per verifier organisation and per resident (Redis, shared by every
worker), load shedding with a clear answer, one Redis round trip per verification with the caller's checks
folded in, and requests that fail authentication never keep a database connection."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from app_backend.composition.shedding import LoadShedder
from app_backend.identity import service as identity_service
from app_backend.organisations import service as organisation_service
from app_backend.organisations.signing import sign_request
from code_service.container import CodeServices
from tests.conftest import serving
from tests.helpers import (
    bearer,
    feed_health,
    login,
    machine_credential,
    personal_code,
    rider,
    signed,
    staff,
    verify,
)

WHOAMI = "/api/v1/machine/whoami"
ADMIN = "/api/v1/admin"


def _assert_rate_limited(response: Any, field: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"].endswith("/rate-limited") and body["detail"].startswith(field), body


@pytest.fixture
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request of the test falls in the same fixed window (no flakiness at a window's edge)."""
    fixed = 1_900_000_020.0  # the start of a minute, and so of a second
    monkeypatch.setattr(organisation_service, "rate_clock", lambda: fixed)
    monkeypatch.setattr(identity_service, "rate_clock", lambda: fixed)


async def _limited_gate(client: Any, services: Any, per_second: int) -> dict[str, Any]:
    gate = await machine_credential(client, services, ["verify:transit", "verify:health"])
    changed = await client.put(
        f"{ADMIN}/organisations/{gate['organisation']['id']}/rate-limit",
        headers=bearer(gate["admin"]),
        json={"rate_limit_per_second": per_second},
    )
    assert changed.status_code == 200 and changed.json()["rate_limit_per_second"] == per_second, changed.text
    services.machine_auth._cache.clear()  # this worker's credential cache; others see it within seconds
    return gate


async def test_an_organisation_gets_its_rate_and_429_beyond_it(client, services, one_window):
    gate = await _limited_gate(client, services, 5)
    second_key = await client.post(
        f"{ADMIN}/organisations/{gate['organisation']['id']}/credentials",
        headers=bearer(gate["admin"]),
        json={"scopes": ["verify:health"]},
    )
    other_gate = {**second_key.json()}
    answers = await asyncio.gather(
        *(signed(client, gate if i % 2 else other_gate, "GET", WHOAMI) for i in range(20))
    )
    # The limit is the organisation's, whichever of its credentials signs.
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 15
    for refused in (a for a in answers if a.status_code == 429):
        _assert_rate_limited(refused, "X-Tzt-Key-Id")
        assert refused.headers["retry-after"] == "1"
    # Another organisation is not affected.
    neighbour = await machine_credential(client, services, ["verify:health"])
    assert (await signed(client, neighbour, "GET", WHOAMI)).status_code == 200


async def test_the_rate_limit_recovers_in_the_next_window(client, services, monkeypatch):
    now = [1_900_000_040.0]
    monkeypatch.setattr(organisation_service, "rate_clock", lambda: now[0])
    gate = await _limited_gate(client, services, 2)
    codes = [(await signed(client, gate, "GET", WHOAMI)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    now[0] += 1
    assert (await signed(client, gate, "GET", WHOAMI)).status_code == 200


async def test_a_rate_limit_must_be_positive_and_names_the_field(client, services):
    admin = await staff(client, services)
    made = await client.post(
        f"{ADMIN}/organisations",
        headers=bearer(admin),
        json={
            "name": f"限流-{uuid.uuid4().hex[:8]}",
            "kind": "verifier_operator",
            "rate_limit_per_second": 0,
        },
    )
    assert made.status_code == 400 and made.json()["errors"][0]["field"] == "rate_limit_per_second"


async def test_a_resident_gets_their_rate_and_429_beyond_it(settings, one_window):
    async with serving(msgspec.structs.replace(settings, rate_resident_per_minute=6), 50004) as client:
        await _rate_and_429_beyond_it(client)


async def _rate_and_429_beyond_it(client: Any) -> None:
    resident, neighbour = await login(client), await login(client)
    answers = await asyncio.gather(*(client.get("/api/v1/me", headers=bearer(resident)) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 6 + [429] * 4
    for refused in (a for a in answers if a.status_code == 429):
        _assert_rate_limited(refused, "authorization")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await client.get("/api/v1/me", headers=bearer(neighbour))).status_code == 200


# --- verification settles the caller's checks in its own pipeline ------------------------------------------


async def _transit_setup(client: Any, services: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "verify:health"])
    return person, gate


def _signed_verify(
    gate: dict[str, Any], code: str, scene: str, **signing: Any
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"code": code, "scene": scene}).encode()
    headers = sign_request(gate["key_id"], gate["secret"], "POST", "/api/v1/verify", body, **signing)
    return body, {**headers, "Content-Type": "application/json"}


async def test_a_replayed_verify_request_is_refused_and_does_not_use_up_the_code(client, services):
    person, gate = await _transit_setup(client, services)
    body, headers = _signed_verify(gate, await personal_code(client, person), "transit")
    first = await client.post("/api/v1/verify", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["allowed"], first.text
    replay = await client.post("/api/v1/verify", content=body, headers=headers)
    assert replay.status_code == 401 and "X-Tzt-Nonce" in replay.json()["detail"]

    # A single-use code in a request refused for the request's sake (a spent nonce) stays usable.
    fresh = await personal_code(client, person)
    body, headers = _signed_verify(gate, fresh, "transit", nonce=headers["X-Tzt-Nonce"])
    assert (await client.post("/api/v1/verify", content=body, headers=headers)).status_code == 401
    assert (await verify(client, gate, fresh, "transit")).json()["allowed"]
    assert (await verify(client, gate, fresh, "transit")).json()["reason"] == "replayed"


async def test_verification_refuses_a_revoked_key_and_spends_nonces_on_every_path(client, services):
    person, gate = await _transit_setup(client, services)
    for code in ("TZ1:not-a-code", await personal_code(client, person)):
        body, headers = _signed_verify(gate, code, "health")
        assert (await client.post("/api/v1/verify", content=body, headers=headers)).status_code == 200
        assert (await client.post("/api/v1/verify", content=body, headers=headers)).status_code == 401

    revoked = await client.delete(
        f"{ADMIN}/organisations/{gate['organisation']['id']}/credentials/{gate['key_id']}",
        headers=bearer(gate["admin"]),
    )
    assert revoked.status_code == 204
    refused = await verify(client, gate, await personal_code(client, person), "health")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


async def test_a_rate_limited_verification_does_not_use_up_the_code(
    client, services, monkeypatch, one_window
):
    person = await rider(client, services)
    gate = await _limited_gate(client, services, 1)
    first = await personal_code(client, person)
    assert (await verify(client, gate, first, "transit")).json()["allowed"]
    code = await personal_code(client, person)
    _assert_rate_limited(await verify(client, gate, code, "transit"), "X-Tzt-Key-Id")
    monkeypatch.setattr(organisation_service, "rate_clock", lambda: 1_900_000_021.0)  # the next second
    assert (await verify(client, gate, code, "transit")).json()["allowed"]


# --- a refused request keeps no database connection -----------------------------------------------------


async def test_requests_refused_by_a_dependency_leave_no_open_transaction(client, services, db):
    """Litestar resolves `db` and the caller's principal side by side; a 403 from the staff check used to
    abandon the opened transaction (connection checked out, transaction open) until garbage collection."""
    resident = await login(client)
    answers = await asyncio.gather(
        *(client.get(f"{ADMIN}/organisations", headers=bearer(resident)) for _ in range(40))
    )
    assert {a.status_code for a in answers} == {403}
    open_transactions = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
    )
    assert open_transactions == 0
    # The scan recorder writes the scans of earlier tests from a task of its own, 0.2 s after them: its
    # connection is not the requests'. Its flush waits for a write under way to end.
    await services.platform.get(CodeServices).recorder.flush()
    assert services.pool.get_idle_size() == services.pool.get_size() - 1  # all but the test's own


# --- load shedding ----------------------------------------------------------------------------------------


async def test_past_its_bound_a_worker_answers_503_at_once_and_recovers():
    release, both_in = asyncio.Event(), asyncio.Event()
    entered = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        if len(entered) == 2:
            both_in.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shedder = LoadShedder(limit=2)
    app = shedder.middleware(slow_app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gate.local") as http:
        held = [asyncio.create_task(http.get("/api/v1/verify")) for _ in range(2)]
        await both_in.wait()
        shed = await asyncio.gather(*(http.get("/api/v1/codes/personal") for _ in range(3)))
        assert [r.status_code for r in shed] == [503] * 3
        for response in shed:
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"].endswith("/overloaded")
        # Operations still see the node while it sheds.
        probe = asyncio.create_task(http.get("/readyz"))
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held, probe)] == [200, 200, 200]
        assert shedder.in_flight == 0
        assert (await http.get("/api/v1/codes/personal")).status_code == 200


async def test_the_scanner_dependency_still_settles_its_checks(client, services):
    """Endpoints other than verify (feeds, taps, vouchers) get a scanner whose checks already ran."""
    department = await machine_credential(
        client, services, ["feeds:health", "feeds:insurance"], kind="department"
    )
    person = await rider(client, services)
    await feed_health(client, department, person["id_number"], "green")
    body = json.dumps({"id_number": person["id_number"], "colour": "green"}).encode()
    headers = {
        **sign_request(department["key_id"], department["secret"], "PUT", "/api/v1/feeds/health", body),
        "Content-Type": "application/json",
    }
    assert (await client.put("/api/v1/feeds/health", content=body, headers=headers)).status_code == 200
    assert (await client.put("/api/v1/feeds/health", content=body, headers=headers)).status_code == 401


async def test_the_code_display_settles_session_and_rate_checks_in_its_own_round_trip(
    settings, monkeypatch, one_window
):
    async with serving(msgspec.structs.replace(settings, rate_resident_per_minute=3), 50005) as client:
        await _display_settles_its_checks(client, client.app.state.services, monkeypatch)


async def _display_settles_its_checks(client: Any, services: Any, monkeypatch: Any) -> None:
    person = await rider(client, services)  # its set-up requests fall in the same pinned window
    monkeypatch.setattr(identity_service, "rate_clock", lambda: 1_900_000_080.0)  # a fresh window
    shown = [await client.post("/api/v1/codes/personal", headers=bearer(person)) for _ in range(4)]
    assert [s.status_code for s in shown] == [200, 200, 200, 429]
    _assert_rate_limited(shown[3], "authorization")

    monkeypatch.setattr(identity_service, "rate_clock", lambda: 1_900_000_140.0)
    assert (await client.post("/api/v1/auth/logout", headers=bearer(person))).status_code in (200, 204)
    ended = await client.post("/api/v1/codes/personal", headers=bearer(person))
    assert ended.status_code == 401 and "session has ended" in ended.json()["detail"]
