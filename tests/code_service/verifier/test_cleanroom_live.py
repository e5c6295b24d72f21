"""A verifier written from docs/code-format.md alone (cleanroom_verifier.py beside this file) against live codes
from the running app: genuine ones pass; tampered, expired, wrong-key and revoked ones are refused."""

from __future__ import annotations

import time

from code_service.holder import DeviceWallet
from tests.code_service.verifier import cleanroom_verifier as cleanroom
from tests.helpers import bearer, machine_credential, rider, scene_keys_of, signed


def _tamper(code: str) -> str:
    i = len(code) // 2
    return code[:i] + ("0" if code[i] != "0" else "1") + code[i + 1 :]


async def test_live_codes_through_the_cleanroom_verifier(client, services):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    keys = cleanroom.load_jwks((await client.get("/.well-known/jwks.json")).json())
    transit_keys = cleanroom.load_scene_keys(await scene_keys_of(client, gate), "transit")
    server_code = (await client.post("/api/v1/codes/personal", headers=bearer(person))).json()["code"]
    wallet = DeviceWallet.create()
    made = await client.post(
        "/api/v1/codes/device-credentials", headers=bearer(person), json={"public_key": wallet.public_key_b64}
    )
    wallet.load_credential(made.json()["credential"])
    device_code = wallet.code()
    now = int(time.time())

    for code in (server_code, device_code):
        assert cleanroom.verify(code, now, keys, skew=30, scene="transit").reason == "no-scene-key"
        verdict = cleanroom.verify(code, now, keys, skew=30, scene="transit", scene_keys=transit_keys)
        assert (verdict.reason, verdict.scene_bits) == ("ok", 0x04)  # may ride, and nothing else read
        assert cleanroom.verify(_tamper(code), now, keys, skew=30).reason in (
            "bad-signature",
            "bad-device-signature",
            "malformed",
        )
        assert cleanroom.verify(code, now + 3 * 86400, keys, skew=30).reason == "expired"
        assert cleanroom.verify(code, now, {}, skew=30).reason == "unknown-key"

    deny = {"credential": set(), "account": set(), "debtor": set()}
    first = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    version = cleanroom.apply_deny_document(deny, 0, first.json()["jws"], keys)
    verdict = cleanroom.verify(
        wallet.code(), now, keys, skew=30, scene="transit", scene_keys=transit_keys, deny=deny
    )
    assert verdict.reason == "ok"

    await client.delete(f"/api/v1/codes/device-credentials/{made.json()['id']}", headers=bearer(person))
    delta = await signed(client, gate, "GET", f"/api/v1/gates/deny-list?since={version}")
    cleanroom.apply_deny_document(deny, version, delta.json()["jws"], keys)
    verdict = cleanroom.verify(
        wallet.code(), int(time.time()), keys, skew=30, scene="transit", scene_keys=transit_keys, deny=deny
    )
    assert verdict.reason == "denied-credential"
