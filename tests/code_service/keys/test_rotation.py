"""Rotating the platform's signing key strands no gate: a staged key is in the JWKS a day and an hour before it
signs, so an offline gate that refreshes daily accepts every code issued after the switch; the old key stays
until what it signed has expired; the cron job rotates by itself, once however many workers run it; the
emergency switch works and breaks what the spec says it breaks.

Only the key schedule's clock is moved (KeyService.clock): it alone decides which key signs and which are
published. Codes and credentials carry the real time, and the offline gates check them against it."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import pytest

from app_backend.composition.migrator import apply_migrations
from app_backend.composition.modules import MODULES
from app_backend.kernel.clock import now as utc_now
from code_service.holder import DeviceWallet
from code_service.keys.repository import KeyRepository
from code_service.keys.service import PUBLISH_LEAD, RETIRE_AFTER, VERIFIER_REFRESH, KeySchedule
from code_service.keys.tasks import stage_due_signing_key
from code_service.verifier import OfflineVerifier
from code_service.verifier.format import MAX_CREDENTIAL_LIFETIME, decode
from tests.helpers import (
    SetClock,
    machine_credential,
    personal_code,
    register_device,
    rider,
    scene_keys_of,
    signed,
)

SECOND = dt.timedelta(seconds=1)
JWKS = "/.well-known/jwks.json"


@pytest.fixture
async def key_clock(services: Any, db: asyncpg.Connection) -> AsyncIterator[SetClock]:
    """The key schedule's clock, started a day after every instant of every key so far (the session shares one
    database), and everything the test did to the keys undone afterwards."""
    keys = services.codes.keys
    before = await db.fetch("SELECT kid, signs_until, retire_at FROM codes.signing_keys")
    latest = await db.fetchval(
        """SELECT max(greatest(created_at, signs_from, signs_until, retire_at)) FROM codes.signing_keys"""
    )
    clock = SetClock(max(utc_now(), latest or utc_now()) + dt.timedelta(days=1))
    keys.clock = clock
    keys.invalidate()
    try:
        yield clock
    finally:
        keys.clock = utc_now
        await db.execute(
            "DELETE FROM codes.signing_keys WHERE NOT kid = ANY($1::text[])", [r["kid"] for r in before]
        )
        await db.executemany(
            "UPDATE codes.signing_keys SET signs_until = $2, retire_at = $3 WHERE kid = $1",
            [(r["kid"], r["signs_until"], r["retire_at"]) for r in before],
        )
        keys.invalidate()


async def _jwks(client: Any) -> dict[str, Any]:
    response = await client.get(JWKS)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _kids(client: Any) -> set[str]:
    return {k["kid"] for k in (await _jwks(client))["keys"]}


async def _sync(client: Any, gate: dict[str, Any], offline: OfflineVerifier) -> None:
    offline.update_scene_keys(await scene_keys_of(client, gate))
    document = await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")
    assert document.status_code == 200, document.text
    offline.deny_list.apply_document(document.json()["jws"], offline.key_for_kid)


async def _stage(services: Any) -> Any:
    async with services.pool.acquire() as conn, conn.transaction():
        return await services.codes.keys.stage(conn)


async def test_an_offline_gate_that_refreshed_before_a_rotation_accepts_every_code_issued_after_it(
    client, services, key_clock
):
    person = await rider(client, services)
    gate = await machine_credential(client, services, ["verify:transit", "gates:sync"])
    old_kid = decode(await personal_code(client, person)).kid.hex()
    old_wallet = DeviceWallet.create()
    await register_device(client, person, old_wallet)

    # A gate refreshes its key set just before `tzt keys rotate`; it will refresh again a day later, as the spec
    # requires, and never in between.
    before_staging = OfflineVerifier(await _jwks(client))
    await _sync(client, gate, before_staging)

    staged_at = key_clock()
    change = await _stage(services)
    new_kid = change.key.kid
    assert change.created and change.key.signs_from == staged_at + PUBLISH_LEAD
    assert {old_kid, new_kid} <= await _kids(client)  # published at once ...
    assert decode(await personal_code(client, person)).kid.hex() == old_kid  # ... and not signing yet

    # The gate's daily refresh, the latest the spec allows, and another gate's refresh a second before the switch.
    key_clock.set(staged_at + VERIFIER_REFRESH)
    daily = OfflineVerifier(await _jwks(client))
    key_clock.set(change.key.signs_from - SECOND)
    assert decode(await personal_code(client, person)).kid.hex() == old_kid
    just_before = OfflineVerifier(await _jwks(client))
    for gate_cache in (daily, just_before):
        await _sync(client, gate, gate_cache)

    # The switch: from now on every code, credential and deny list is signed by the new key ...
    key_clock.set(change.key.signs_from)
    codes = [await personal_code(client, await rider(client, services)) for _ in range(3)]
    assert {decode(code).kid.hex() for code in codes} == {new_kid}
    wallet = DeviceWallet.create()
    assert (await register_device(client, person, wallet))["kid"] == new_kid
    deny_list = (await signed(client, gate, "GET", "/api/v1/gates/deny-list?since=0")).json()["jws"]

    # ... and both gates accept all of it from the key sets they cached before the switch. (On the old code the
    # switch came 30 s after `tzt keys rotate`: these gates refused it all as unknown-key for up to a day.)
    for gate_cache in (daily, just_before):
        for code in [*codes, wallet.code()]:
            verdict = gate_cache.verify(code, "transit")
            assert verdict.allowed, verdict
        gate_cache.deny_list.apply_document(deny_list, gate_cache.key_for_kid)
        assert gate_cache.verify(old_wallet.code(), "transit").allowed  # the old key's credential still works

    # The old key stays published until everything it signed has expired, then leaves.
    old_expired = change.key.signs_from + dt.timedelta(seconds=MAX_CREDENTIAL_LIFETIME)
    key_clock.set(old_expired)
    assert {old_kid, new_kid} <= await _kids(client)
    key_clock.set(change.key.signs_from + RETIRE_AFTER)
    assert old_kid not in await _kids(client) and new_kid in await _kids(client)


async def test_the_cron_job_stages_one_key_however_many_workers_run_it(client, services, key_clock, db):
    context = {"platform": services.platform}
    every = dt.timedelta(days=services.settings.key_rotation_days)
    async with services.pool.acquire() as conn:
        current = await services.codes.keys.ensure(conn)
    signs_from = await db.fetchval("SELECT signs_from FROM codes.signing_keys WHERE kid = $1", current)

    key_clock.set(signs_from + every - PUBLISH_LEAD - SECOND)
    assert await stage_due_signing_key(context) is None  # not due yet

    key_clock.set(signs_from + every - PUBLISH_LEAD)
    runs = await asyncio.gather(*(stage_due_signing_key(context) for _ in range(4)))
    staged = [kid for kid in runs if kid is not None]
    assert len(staged) == 1, runs
    row = await db.fetchrow("SELECT created_at, signs_from FROM codes.signing_keys WHERE kid = $1", staged[0])
    assert row["signs_from"] == signs_from + every  # takes over once the old key has signed for its period
    assert row["created_at"] == key_clock()
    assert await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'codes.key_staged' AND target_id = $1", staged[0]
    )

    # Later runs find it staged, until it has signed for a period itself.
    key_clock.set(signs_from + every + dt.timedelta(days=3))
    assert await stage_due_signing_key(context) is None
    key_clock.set(signs_from + 2 * every - PUBLISH_LEAD)
    assert await stage_due_signing_key(context) not in (None, staged[0])


async def test_a_second_worker_waits_for_the_first_and_finds_the_key_staged(client, services, key_clock, db):
    """Deterministic: the first worker's staging is not committed when the second starts; the second must wait
    for it (the advisory lock) rather than stage a key of its own."""
    keys = services.codes.keys
    every = dt.timedelta(days=services.settings.key_rotation_days)
    signing = await keys.signer()
    signs_from = await db.fetchval("SELECT signs_from FROM codes.signing_keys WHERE kid = $1", signing.kid)
    key_clock.set(signs_from + every)

    async def second_worker() -> Any:
        async with services.pool.acquire() as conn, conn.transaction():
            return await keys.stage_if_due(conn, every)

    async with services.pool.acquire() as first:
        transaction = first.transaction()
        await transaction.start()
        staged = await keys.stage_if_due(first, every)
        assert staged is not None
        second = asyncio.create_task(second_worker())
        # Until the second worker is either finished or waiting on a lock (polled, not timed).
        while not second.done() and not await db.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1""",
            first.get_server_pid(),
        ):
            await asyncio.wait({second}, timeout=0.01)
        await transaction.commit()
    assert await second is None
    assert (
        await db.fetchval("SELECT count(*) FROM codes.signing_keys WHERE created_at = $1", key_clock()) == 1
    )


async def test_staging_twice_leaves_one_staged_key(client, services, key_clock):
    signing = await services.codes.keys.signer()
    first = await _stage(services)
    assert first.previous is not None and first.previous.kid == signing.kid
    second = await _stage(services)
    assert first.created and not second.created and second.key.kid == first.key.kid


async def test_an_emergency_rotation_signs_at_once_and_can_withdraw_the_old_key(client, services, key_clock):
    person = await rider(client, services)
    old_code = await personal_code(client, person)
    old_kid = decode(old_code).kid.hex()
    staged = await _stage(services)
    stale = OfflineVerifier(await _jwks(client))

    async with services.pool.acquire() as conn, conn.transaction():
        change = await services.codes.keys.rotate_now(conn, withdraw=True)
    new_code = await personal_code(client, person)
    assert decode(new_code).kid.hex() == change.key.kid
    kids = await _kids(client)
    assert change.key.kid in kids
    assert old_kid not in kids  # withdrawn: refreshed gates refuse what the compromised key signed
    assert staged.key.kid not in kids  # the staged key never signs: it may have leaked with the other
    refreshed = OfflineVerifier(await _jwks(client))
    await _sync(
        client, await machine_credential(client, services, ["verify:transit", "gates:sync"]), refreshed
    )
    assert refreshed.verify(old_code, "transit").reason == "unknown-key"
    assert refreshed.verify(new_code, "transit").allowed

    # What the spec warns of: a gate that has not refreshed since refuses the new key's codes until it does.
    assert stale.verify(new_code, "transit").reason == "unknown-key"


async def test_an_emergency_rotation_without_withdrawal_keeps_the_old_key_published(
    client, services, key_clock
):
    old_kid = decode(await personal_code(client, await rider(client, services))).kid.hex()
    async with services.pool.acquire() as conn, conn.transaction():
        change = await services.codes.keys.rotate_now(conn)
    assert change.previous is not None and change.previous.kid == old_kid
    assert change.previous.retire_at == key_clock() + RETIRE_AFTER
    assert {old_kid, change.key.kid} <= await _kids(client)


async def test_the_jwks_answer_may_be_cached_for_minutes(client):
    response = await client.get(JWKS)
    assert response.headers["cache-control"] == "public, max-age=300"


# --- upgrading a database made before the schedule -----------------------------------------------------------


async def test_an_existing_database_upgrades_and_its_current_key_keeps_signing(empty_database):
    # Everything but code_service's later migrations, as a database made before the schedule has it.
    await apply_migrations(empty_database, [m for m in MODULES if m.migrations != "code_service"])
    folder = resources.files("code_service") / "migrations"
    conn = await asyncpg.connect(empty_database)
    try:
        for name in sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql")):
            if name >= "0007":
                break
            await conn.execute((folder / name).read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO public.schema_migrations (package, name) VALUES ('code_service', $1)", name
            )
        await conn.execute(
            """INSERT INTO codes.signing_keys (kid, private_enc, public_point, created_at, rotated_out_at) VALUES
                 ('0000000a', '', '', now() - interval '90 days', now() - interval '60 days'),
                 ('0000000b', '', '', now() - interval '60 days', now() - interval '2 hours'),
                 ('0000000c', '', '', now() - interval '2 hours', NULL)"""
        )
    finally:
        await conn.close()

    assert "code_service/0007_key_schedule.sql" in await apply_migrations(empty_database)

    conn = await asyncpg.connect(empty_database)
    try:
        at = utc_now()
        live = await KeyRepository().live(conn, at)
        kept = {
            r["kid"]: r["kept"]
            for r in await conn.fetch("SELECT kid, retire_at - signs_until AS kept FROM codes.signing_keys")
        }
    finally:
        await conn.close()
    rows = {r.kid: r for r in live}
    assert set(rows) == {"0000000b", "0000000c"}  # the key rotated out 60 days ago is retired
    current = rows["0000000c"]
    assert KeySchedule().signer(live, at) is current  # keeps signing
    assert (
        current.signs_from == current.created_at and current.signs_until is None and current.retire_at is None
    )
    # Rotated out two hours ago: signed until then, published the 24 h and a minute it was promised.
    previous = rows["0000000b"]
    assert previous.signs_from == previous.created_at and previous.signs_until is not None
    assert previous.signs_until < at and kept["0000000b"] == dt.timedelta(hours=24, minutes=1)
