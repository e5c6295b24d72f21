"""The one code end to end: issue, verify per scene, single use, feeds, revocation, deny list, taps, history."""

from __future__ import annotations

import asyncio
import datetime as dt

from code_service.holder import DeviceWallet
from code_service.verifier import DenyList, OfflineVerifier
from tests.helpers import bearer, machine_credential, rider, signed


async def test_personal_code_verifies_at_a_gate_once(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    issued = await client.post("/api/v1/codes/personal", headers=bearer(person))
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]
    assert issued.json()["expires_at"] - issued.json()["issued_at"] <= 60
    first = await signed(client, gate, "POST", "/api/v1/verify", {"code": code, "scene": "transit"})
    assert first.status_code == 200, first.text
    assert first.json()["allowed"] is True and first.json()["rider_token"].startswith("rt_")
    assert set(first.json()) <= {"allowed", "reason", "scene", "code_type", "rider_token", "verification_id"}
    again = await signed(client, gate, "POST", "/api/v1/verify", {"code": code, "scene": "transit"})
    assert again.json() == {
        "allowed": False,
        "reason": "replayed",
        "scene": "transit",
        "code_type": "personal",
    }


async def test_concurrent_replays_open_the_gate_once(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit"])
    code = (await client.post("/api/v1/codes/personal", headers=bearer(person))).json()["code"]
    answers = await asyncio.gather(
        *(
            signed(client, gate, "POST", "/api/v1/verify", {"code": code, "scene": "transit"})
            for _ in range(10)
        )
    )
    assert sum(a.json()["allowed"] for a in answers) == 1


async def test_device_code_online_and_offline(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    wallet = DeviceWallet.create()
    made = await client.post(
        "/api/v1/codes/device-credentials", headers=bearer(person), json={"public_key": wallet.public_key_b64}
    )
    assert made.status_code == 201, made.text
    wallet.load_credential(made.json()["credential"])
    answer = await signed(client, gate, "POST", "/api/v1/verify", {"code": wallet.code(), "scene": "transit"})
    assert answer.json()["allowed"] is True, answer.text

    jwks = (await client.get("/.well-known/jwks.json")).json()
    offline = OfflineVerifier(jwks)
    deny = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    assert deny.status_code == 200, deny.text
    offline.deny_list.apply_document(deny.json()["jws"], offline.key_for_kid)
    code = wallet.code()
    assert (
        offline.verify(code, "transit").reason == "no-scene-key"
    )  # may-ride is masked: the gate needs its key
    offline.update_scene_keys((await signed(client, gate, "GET", "/api/v1/gates/scene-keys")).json())
    assert offline.verify(code, "transit").allowed
    assert offline.verify(code, "transit").reason == "replayed"

    revoked = await client.delete(
        f"/api/v1/codes/device-credentials/{made.json()['id']}", headers=bearer(person)
    )
    assert revoked.status_code == 204
    online = await signed(client, gate, "POST", "/api/v1/verify", {"code": wallet.code(), "scene": "transit"})
    assert online.json()["reason"] == "denied-credential"
    delta = await signed(client, gate, "GET", f"/api/v1/gates/deny-list?since={offline.deny_list.version}")
    offline.deny_list.apply_document(delta.json()["jws"], offline.key_for_kid)
    assert offline.verify(wallet.code(), "transit").reason == "denied-credential"
    assert isinstance(offline.deny_list, DenyList)


async def test_health_feed_reaches_online_verify_at_once(client, services):
    person = await rider(client, services)
    department = await machine_credential(client, services, ["feeds:health"], kind="department")
    checkpoint = await machine_credential(client, services, ["verify:health"])
    for colour in ("green", "red"):
        fed = await signed(
            client,
            department,
            "PUT",
            "/api/v1/feeds/health",
            {"id_number": person["id_number"], "colour": colour},
        )
        assert fed.status_code == 200, fed.text
        code = (await client.post("/api/v1/codes/personal", headers=bearer(person))).json()["code"]
        answer = (
            await signed(client, checkpoint, "POST", "/api/v1/verify", {"code": code, "scene": "health"})
        ).json()
        assert answer["colour"] == colour and answer["masked_name"].endswith("*")
        assert "rider_token" not in answer and "voucher" not in answer


async def test_scans_show_in_history_and_taps_are_idempotent(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "gates:taps"])
    code = (await client.post("/api/v1/codes/personal", headers=bearer(person))).json()["code"]
    verified = await signed(client, gate, "POST", "/api/v1/verify", {"code": code, "scene": "transit"})
    history = (await client.get("/api/v1/me/scans", headers=bearer(person))).json()["scans"]
    assert history and history[0]["organisation"] == gate["organisation"]["name"]
    # The gate names its online verification as the tap's proof.
    tap = {
        "tap_id": "t-" + gate["key_id"],
        "gate_id": "g1",
        "line": "1",
        "station": "泰州站",
        "direction": "in",
        "tapped_at": dt.datetime.now(dt.UTC).isoformat(),
        "verification_id": verified.json()["verification_id"],
    }
    first = await signed(client, gate, "POST", "/api/v1/gates/taps", {"taps": [tap]})
    again = await signed(client, gate, "POST", "/api/v1/gates/taps", {"taps": [tap]})
    assert first.json() == {
        "accepted": 1,
        "duplicates": 0,
        "refused": 0,
        "taps": [{"tap_id": tap["tap_id"], "status": "accepted"}],
    }
    assert again.json() == {
        "accepted": 0,
        "duplicates": 1,
        "refused": 0,
        "taps": [{"tap_id": tap["tap_id"], "status": "duplicate"}],
    }


async def test_svg_and_png(client, services):
    person = await rider(client, services)
    svg = await client.get("/api/v1/codes/personal.svg", headers=bearer(person))
    png = await client.get("/api/v1/codes/personal.png", headers=bearer(person))
    assert (
        svg.status_code == 200 and "<svg" in svg.text and svg.headers["content-type"].startswith("image/svg")
    )
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
