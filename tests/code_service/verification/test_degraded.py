"""Redis briefly unavailable: online verification keeps answering from the code (signature, validity, signed
entitlements) and the deny list read from PostgreSQL, flagged as degraded; scans and taps are all stored; the
rest refuses cleanly with 503 and Retry-After; everything is back to normal once Redis answers again.

The app here has a Redis of its own (a real server process the test stops and kills) and the suite's
PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from app_backend.composition.app import create_app
from app_backend.composition.embedded import EmbeddedServices
from app_backend.composition.wiring import Services
from app_backend.kernel.settings import Settings
from code_service.holder import DeviceWallet
from code_service.verifier.format import encode_device_code
from tests.conftest import ApiClient
from tests.helpers import (
    bearer,
    code_minter,
    face_verified,
    feed_health,
    feed_insurance,
    machine_credential,
    personal_code,
    register_device,
    rider,
    set_resident_status,
    set_transit,
    signed,
    verify,
)

TAPS = "/api/v1/gates/taps"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedServices]:
    redis_server = EmbeddedServices(tmp_path)
    redis_server.start(want_postgres=False, want_redis=True, persistent_redis=False)
    try:
        yield redis_server
    finally:
        process = redis_server._redis
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        redis_server.stop()


@pytest.fixture
async def app_client(settings: Settings, own_redis: EmbeddedServices) -> AsyncIterator[ApiClient]:
    mine = msgspec.structs.replace(settings, redis_url=own_redis.redis_url, redis_timeout=0.5)
    app = create_app(mine)
    (await Services.create(mine)).install(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("testclient", 50002))
        async with ApiClient(transport=transport, base_url="http://testserver.local") as api:
            api.app = app
            yield api
    finally:
        await app.state.services.close()


def _tap(prefix: str, i: int, code_at: Callable[[dt.datetime], str]) -> dict[str, Any]:
    tapped_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=i)
    return {
        "tap_id": f"{prefix}-{i}",
        "gate_id": "g-outage",
        "line": "2",
        "station": "鼓楼路",
        "direction": "in",
        "tapped_at": tapped_at.isoformat(),
        "code": code_at(tapped_at),
        "rider_token": "rt_outage",
    }


async def _ready(client: ApiClient) -> tuple[dict[str, Any], dict[str, Any], DeviceWallet]:
    services: Services = client.app.state.services
    person = await face_verified(client, await rider(client, services))  # L3: the medical scene too
    department = await machine_credential(
        client, services, ["feeds:health", "feeds:insurance"], kind="department"
    )
    await feed_health(client, department, person["id_number"], "green")
    await feed_insurance(client, department, person["id_number"], True)
    gate = await machine_credential(
        client, services, ["verify:transit", "verify:health", "verify:medical", "gates:taps"]
    )
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    return person, gate, wallet


async def test_verification_answers_from_the_code_while_redis_is_stopped(app_client, own_redis, db):
    client = app_client
    services: Services = client.app.state.services
    person, gate, wallet = await _ready(client)
    codes = [await personal_code(client, person) for _ in range(3)]
    code_at = await code_minter(client, services, person)  # issuing needs Redis, proving taps does not
    online = (await verify(client, gate, codes[0], "health")).json()
    assert online["allowed"] and "degraded" not in online

    os.kill(own_redis._redis.pid, signal.SIGSTOP)  # hung, not gone: the worst case for a client
    try:
        answers = [
            (await verify(client, gate, codes[1], "transit")).json(),
            (await verify(client, gate, codes[1], "transit")).json(),
            (await verify(client, gate, wallet.code(), "health")).json(),
            (await verify(client, gate, codes[2], "medical")).json(),
            (await verify(client, gate, "TZ2:garbage", "health")).json(),
        ]
        ride, replay, device, medical, malformed = answers
        assert ride["allowed"] and ride["degraded"] and ride["rider_token"].startswith("rt_"), ride
        assert not replay["allowed"] and replay["reason"] == "replayed" and replay["degraded"], replay
        assert device["allowed"] and device["colour"] == "green" and device["degraded"], device
        assert "masked_name" not in device  # live facts are not available; nothing is made up
        # Insured, but a voucher lives in Redis: none now, the hospital scans again to settle.
        assert medical["allowed"] and medical["reason"] == "ok-no-voucher" and "voucher" not in medical, (
            medical
        )
        assert malformed == {"allowed": False, "reason": "malformed", "scene": "health"}

        # Taps uploaded now are stored now: they never needed Redis.
        subject = uuid.uuid4().hex[:16]
        taps = [_tap(f"outage-{subject}", i, code_at) for i in range(50)]
        uploaded = await signed(client, gate, "POST", TAPS, {"taps": taps})
        assert uploaded.status_code == 200 and uploaded.json()["accepted"] == 50, uploaded.text

        # Paths without a degraded mode refuse at once and say when to come back.
        shown = await client.post("/api/v1/codes/personal", headers=bearer(person))
        assert shown.status_code == 503 and shown.headers["retry-after"] == "2", shown.text
        assert shown.json()["type"].endswith("/dependency-unavailable")
    finally:
        os.kill(own_redis._redis.pid, signal.SIGCONT)

    stored = await db.fetchval("SELECT count(*) FROM codes.taps WHERE tap_id LIKE $1", f"outage-{subject}-%")
    assert stored == 50
    # Back to normal as soon as Redis answers again (the breaker lets a probe through after its cooldown).
    for _ in range(100):
        again = (await verify(client, gate, codes[0], "health")).json()
        if "degraded" not in again:
            break
        await asyncio.sleep(0.1)
    assert again["allowed"] and again["masked_name"] and "degraded" not in again

    # Every scan made during the outage is in the holder's history (scans never needed Redis either).
    await services.codes.recorder.flush()
    history = (await client.get("/api/v1/me/scans", headers=bearer(person))).json()["scans"]
    seen = [
        (s["scene"], s["verdict"], s["reason"])
        for s in history
        if s["organisation"] == gate["organisation"]["name"]
    ]
    for made_during_the_outage in (
        ("transit", "allowed", "ok"),
        ("transit", "denied", "replayed"),
        ("medical", "allowed", "ok-no-voucher"),
    ):
        assert made_during_the_outage in seen
    assert seen.count(("health", "allowed", "ok")) >= 3  # before, during (device code) and after


async def test_a_device_code_whose_round_trip_fails_is_checked_by_its_signatures(app_client, own_redis):
    """A device code's credential is checked against the platform's record in the decision's Redis round trip.
    When that very round trip fails, the signatures decide: an edited credential is refused, a genuine one
    answered in degraded mode."""
    client = app_client
    _, gate, wallet = await _ready(client)
    edited = bytearray(wallet.credential)
    edited[33] ^= 0x10  # the (masked) flags: whatever the mask, an edit the platform never signed
    forged = encode_device_code(wallet.private_key, bytes(edited), int(time.time()), 1)
    for code, expected in ((forged, "bad-signature"), (wallet.code(), "ok")):
        await _until_online(client, gate, wallet)
        os.kill(own_redis._redis.pid, signal.SIGSTOP)
        try:
            answer = (await verify(client, gate, code, "transit")).json()  # the first request to meet it
        finally:
            os.kill(own_redis._redis.pid, signal.SIGCONT)
        assert answer["reason"] == expected, answer
        assert answer.get("degraded") is (True if expected == "ok" else None), answer


async def _until_online(client: ApiClient, gate: dict[str, Any], wallet: DeviceWallet) -> None:
    for _ in range(100):
        seen = (await verify(client, gate, wallet.code(), "health")).json()
        if "degraded" not in seen:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("verification did not come back online")


async def test_a_lost_phone_a_blocked_account_and_a_debtor_stay_refused_while_redis_is_stopped(
    app_client, own_redis
):
    """The marks online verification reads live in Redis; without it, the deny list is read from PostgreSQL
    (what gates get), so degraded answers still refuse what the deny list refuses."""
    client = app_client
    services: Services = client.app.state.services
    owner, gate, wallet = await _ready(client)
    blocked, debtor = await rider(client, services), await rider(client, services)
    fine, of_blocked, of_debtor = [await personal_code(client, p) for p in (owner, blocked, debtor)]
    lost_phone = wallet.code()

    listed = await client.get("/api/v1/codes/device-credentials", headers=bearer(owner))
    credential_id = listed.json()["credentials"][0]["id"]
    revoked = await client.delete(f"/api/v1/codes/device-credentials/{credential_id}", headers=bearer(owner))
    assert revoked.status_code == 204, revoked.text
    await set_resident_status(client, services, blocked["resident_id"], "blocked")
    await set_transit(
        services, uuid.UUID(debtor["resident_id"]), has_agreement=True, in_debt=True, blocked=False
    )
    async with services.pool.acquire() as conn, conn.transaction():
        await services.codes.transit_gates.deny_debtor(
            conn, uuid.UUID(debtor["resident_id"]), "test: refused"
        )

    os.kill(own_redis._redis.pid, signal.SIGSTOP)
    try:
        answers = {
            name: (await verify(client, gate, code, "transit")).json()
            for name, code in (
                ("lost phone", lost_phone),
                ("blocked", of_blocked),
                ("debtor", of_debtor),
                ("fine", fine),
            )
        }
    finally:
        os.kill(own_redis._redis.pid, signal.SIGCONT)
    assert all(answer["degraded"] for answer in answers.values()), answers
    assert (answers["lost phone"]["allowed"], answers["lost phone"]["reason"]) == (False, "denied-credential")
    assert (answers["blocked"]["allowed"], answers["blocked"]["reason"]) == (False, "denied-account")
    assert (answers["debtor"]["allowed"], answers["debtor"]["reason"]) == (False, "in-debt")
    assert (answers["fine"]["allowed"], answers["fine"]["reason"]) == (True, "ok")


async def test_without_redis_and_a_free_database_connection_the_code_alone_answers(
    app_client, own_redis, settings
):
    """The deny list is read from PostgreSQL only briefly: a verification that cannot get a connection at once
    still answers from the code (flagged degraded), it does not wait the request pool's timeout."""
    import asyncpg

    client = app_client
    verification = client.app.state.services.codes.verification
    person, gate, _ = await _ready(client)
    code = await personal_code(client, person)
    busy = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    request_pool, verification._pool = verification._pool, busy
    os.kill(own_redis._redis.pid, signal.SIGSTOP)
    try:
        async with busy.acquire():  # its only connection is taken
            answer = (await verify(client, gate, code, "transit")).json()
    finally:
        os.kill(own_redis._redis.pid, signal.SIGCONT)
        verification._pool = request_pool
        await busy.close()
    assert answer["allowed"] and answer["reason"] == "ok" and answer["degraded"], answer


async def test_verification_answers_when_redis_is_gone(app_client, own_redis):
    client = app_client
    person, gate, _ = await _ready(client)
    code = await personal_code(client, person)
    own_redis._redis.kill()  # connection refused from now on
    own_redis._redis.wait()
    answer = await verify(client, gate, code, "transit")
    assert answer.status_code == 200 and answer.json()["allowed"] and answer.json()["degraded"]
    # Nonces are still single use within this worker while Redis is away.
    body = {"code": code, "scene": "health"}
    from app_backend.organisations.signing import sign_request

    raw = msgspec.json.encode(body)
    headers = {
        **sign_request(gate["key_id"], gate["secret"], "POST", "/api/v1/verify", raw),
        "Content-Type": "application/json",
    }
    assert (await client.post("/api/v1/verify", content=raw, headers=headers)).status_code == 200
    assert (await client.post("/api/v1/verify", content=raw, headers=headers)).status_code == 401
    # Log-in needs Redis (OTPs live there): a clean 503, never a 500.
    otp = await client.post("/api/v1/auth/otp", json={"phone": "13912345678"})
    assert otp.status_code == 503 and "retry-after" in otp.headers
