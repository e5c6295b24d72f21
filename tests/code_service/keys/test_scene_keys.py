"""Scene keys (docs/code-format.md 5.4): each verifier gets the keys of the scenes its scopes allow, and nothing
else; epochs are published at least a refresh period (plus a margin) before codes use them and kept until those
codes have expired, so a verifier that refreshes once a day can always read the codes shown to it (the rotation itself:
test_scene_rotation.py)."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from app_backend.kernel.clock import now as utc_now
from code_service.holder import DeviceWallet
from code_service.keys.service import (
    PUBLISH_LEAD,
    SCENE_REFRESH_WITHIN,
    VERIFIER_REFRESH,
    SceneKeyService,
)
from code_service.verifier import OfflineVerifier
from code_service.verifier.format import (
    TYPE_PERSONAL,
    Flags,
    Health,
    encode_server_code,
    kid_for,
)
from code_service.verifier.vectors import jwk
from tests.helpers import (
    feed_health,
    machine_credential,
    personal_code,
    register_device,
    rider,
    scene_keys_of,
    signed,
)

KEYS = "/api/v1/gates/scene-keys"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_each_verifier_gets_the_keys_of_its_scopes_only(client, services):
    cases = {
        ("verify:health",): {"health"},
        ("gates:sync",): {"transit"},
        ("verify:transit", "verify:medical"): {"transit", "medical"},
        ("verify:enterprise", "gates:taps"): {"enterprise"},
        ("verify:transit", "verify:health", "verify:medical", "verify:enterprise"): {
            "transit",
            "health",
            "medical",
            "enterprise",
        },
    }
    now = time.time()
    for scopes, scenes in cases.items():
        verifier = await machine_credential(client, services, list(scopes))
        response = await signed(client, verifier, "GET", KEYS)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        document = response.json()
        assert document["refresh_within"] == SCENE_REFRESH_WITHIN
        assert document["epochs"], document
        for epoch in document["epochs"]:
            assert set(epoch["keys"]) == scenes, (scopes, epoch)
            assert all(len(_b64url(key)) == 32 for key in epoch["keys"].values())
            assert len(bytes.fromhex(epoch["epoch"])) == 4
            assert epoch["not_before"] < epoch["not_after"] and now <= epoch["not_after"]
    # The epoch today's codes carry is among them.
    code_epoch = (await services.codes.scene_keys.current()).epoch.hex()
    assert code_epoch in {e["epoch"] for e in document["epochs"]}


async def test_scene_keys_need_a_verifier_scope_and_a_signature(client, services):
    taps_only = await machine_credential(client, services, ["gates:taps"])
    refused = await signed(client, taps_only, "GET", KEYS)
    assert refused.status_code == 403, refused.text
    feeds = await machine_credential(client, services, ["feeds:health"], kind="department")
    assert (await signed(client, feeds, "GET", KEYS)).status_code == 403
    assert (await client.get(KEYS)).status_code == 401


async def test_a_reader_learns_nothing_and_a_scene_verifier_only_its_scene(client, services):
    """Issue 13 item 5: a v1 code showed colour, may-ride and insured to any reader, and the same subject in every
    code. Now a reader with the public keys alone reads no entitlement, two codes of one holder share no field,
    and a checkpoint's key opens the colour but not may-ride."""
    department = await machine_credential(client, services, ["feeds:health"], kind="department")
    person = await rider(client, services)
    await feed_health(client, department, person["id_number"], "green")
    jwks = (await client.get("/.well-known/jwks.json")).json()
    first, second = await personal_code(client, person), await personal_code(client, person)
    wallet = DeviceWallet.create()
    made = [await register_device(client, person, wallet)]
    device_codes = [wallet.code()]
    made.append(await register_device(client, person, wallet))  # the next day's credential
    device_codes.append(wallet.code())

    stranger = OfflineVerifier(jwks)
    for code in (first, second, *device_codes):
        for scene in ("transit", "health", "medical"):
            verdict = stranger.verify(code, scene, consume=False)
            assert (verdict.valid, verdict.reason) == (True, "no-scene-key"), (scene, verdict)
            assert verdict.flags == Flags()
    # Nothing repeats between two server codes, or between two credentials, past the epoch and the signing kid.
    a, b = (_payload(code) for code in (first, second))
    assert _shared_fields(a, b, layout=((9, 17), (17, 25))) == []
    c, d = (_payload(code) for code in device_codes)
    assert _shared_fields(c, d, layout=((9, 17), (17, 25), (34, 67))) == []

    checkpoint = OfflineVerifier(jwks)
    checkpoint.update_scene_keys(
        await scene_keys_of(client, await machine_credential(client, services, ["verify:health"]))
    )
    for code in (first, *device_codes):
        verdict = checkpoint.verify(code, "health", consume=False)
        assert verdict.reason == "ok" and verdict.flags == Flags(health=Health.GREEN), verdict
        # The same verifier cannot read transit bits: it holds no transit key.
        assert checkpoint.verify(code, "transit", consume=False).reason == "no-scene-key"


def _payload(code: str) -> bytes:
    from code_service.verifier.base45 import b45decode

    return b45decode(code[4:])


def _shared_fields(a: bytes, b: bytes, layout: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    return [(start, end) for start, end in layout if a[start:end] == b[start:end]]


async def test_a_verifier_refreshing_daily_reads_every_code_across_epoch_rotations(services):
    """Thirty days of a platform clock in steps of 3 h, the rotation job run at each step: a verifier that
    refreshes every 24 h exactly (the slowest the spec allows) holds the epoch of every code issued at any moment,
    including right after a new epoch starts and for a credential issued 24 h earlier."""
    snapshot = await _epochs(services)
    clock = [utc_now() + dt.timedelta(days=400)]  # far from the epochs the other tests made
    platform = SceneKeyService(services.pool, services.cipher, clock=lambda: clock[0])
    signing = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [jwk(signing, private=False)]}
    kid = kid_for(signing.public_key())
    try:
        refreshed_at = clock[0]
        document = await _refresh(platform)
        in_use_at_start = (await platform.current()).epoch.hex()
        first_published = {e["epoch"]: clock[0] for e in document["epochs"]}
        first_used: dict[str, dt.datetime] = {}
        issued: list[tuple[dt.datetime, str]] = []
        for _ in range(30 * 8):
            clock[0] += dt.timedelta(hours=3)
            async with services.pool.acquire() as conn, conn.transaction():
                await platform.stage_if_due(conn)  # what the hourly cron job does
            for e in (await _refresh(platform))["epochs"]:  # what the platform publishes at this moment
                first_published.setdefault(e["epoch"], clock[0])
            if clock[0] - refreshed_at >= VERIFIER_REFRESH:
                refreshed_at, document = clock[0], await _refresh(platform)
            epoch = await platform.current()
            first_used.setdefault(epoch.epoch.hex(), clock[0])
            now = int(clock[0].timestamp())
            code = encode_server_code(
                signing,
                kid,
                TYPE_PERSONAL,
                b"\x01" * 8,
                b"\x02" * 8,
                now,
                60,
                Flags(may_ride=True),
                epoch.epoch,
                epoch.keys,
            )
            issued.append((clock[0], epoch.epoch.hex()))
            gate = OfflineVerifier(jwks, clock=lambda: clock[0].timestamp())
            gate.update_scene_keys(document)
            assert gate.verify(code, "transit", consume=False).reason == "ok", (
                clock[0] - refreshed_at,
                epoch,
            )
            # The epoch of a credential issued up to 24 h ago is still held.
            held = {e["epoch"] for e in document["epochs"]}
            assert {e for t, e in issued if clock[0] - dt.timedelta(days=1) <= t} <= held
        assert len(first_used) >= 4  # it rotated (weekly)
        for epoch_id, used in first_used.items():
            if epoch_id != in_use_at_start:
                assert used - first_published[epoch_id] >= PUBLISH_LEAD - dt.timedelta(hours=3), epoch_id
                assert used - first_published[epoch_id] >= VERIFIER_REFRESH
    finally:
        await _restore(services, snapshot)


async def _refresh(platform: SceneKeyService) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(await platform.document(["transit"]))  # type: ignore[no-any-return]


async def _epochs(services: Any) -> list[Any]:
    async with services.pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM codes.scene_epochs"))


async def _restore(services: Any, snapshot: list[Any]) -> None:
    async with services.pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM codes.scene_epochs")
        for row in snapshot:
            await conn.execute(
                "INSERT INTO codes.scene_epochs (epoch, keys_enc, created_at, signs_from, signs_until, retire_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                row["epoch"],
                row["keys_enc"],
                row["created_at"],
                row["signs_from"],
                row["signs_until"],
                row["retire_at"],
            )
    services.codes.scene_keys.invalidate()
