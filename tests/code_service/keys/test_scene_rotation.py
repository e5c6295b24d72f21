"""Scene-key epochs rotate like the signing keys, on the one key schedule (KeySchedule): an epoch is published a
day and an hour before codes use it, so a verifier that refreshed its scene keys just before a scheduled change
reads every code issued after it; an epoch stays until every code of it has expired; a cron job stages the next
epoch, once however many workers run it; the emergency switch works and breaks what the spec says it breaks.

Only the scene keys' clock is moved (SceneKeyService.clock): it alone decides which epoch codes use and which are
published. Codes carry the real time, and the offline gates check them against it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg
import pytest

from app_backend.composition.migrator import apply_migrations
from app_backend.composition.modules import MODULES
from app_backend.kernel.clock import now as utc_now
from code_service.holder import DeviceWallet
from code_service.keys.repository import SceneKeyRepository
from code_service.keys.service import (
    PUBLISH_LEAD,
    RETIRE_AFTER,
    SCENE_ROTATION_PERIOD,
    VERIFIER_REFRESH,
    KeySchedule,
    SceneKeyService,
)
from code_service.keys.tasks import stage_due_scene_epoch
from code_service.verifier import OfflineVerifier
from code_service.verifier.format import MAX_CREDENTIAL_LIFETIME, decode
from tests.helpers import (
    SetClock,
    machine_credential,
    opened,
    personal_code,
    register_device,
    rider,
    scene_keys_of,
)

SECOND = dt.timedelta(seconds=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
CREDENTIAL = dt.timedelta(seconds=MAX_CREDENTIAL_LIFETIME)


@pytest.fixture
async def scene_clock(services: Any, db: asyncpg.Connection) -> AsyncIterator[SetClock]:
    """The scene keys' clock, started a day after every instant of every epoch so far (the session shares one
    database), and everything the test did to the epochs undone afterwards."""
    scene_keys = services.codes.scene_keys
    await scene_keys.current()  # the session's first epoch, made now if no test made one yet
    before = await db.fetch("SELECT epoch, signs_until, retire_at FROM codes.scene_epochs")
    latest = await db.fetchval(
        "SELECT max(greatest(created_at, signs_from, signs_until, retire_at)) FROM codes.scene_epochs"
    )
    clock = SetClock(max(utc_now(), latest or utc_now()) + dt.timedelta(days=1))
    scene_keys.clock = clock
    scene_keys.invalidate()
    try:
        yield clock
    finally:
        scene_keys.clock = utc_now
        await db.execute(
            "DELETE FROM codes.scene_epochs WHERE NOT epoch = ANY($1::bytea[])", [r["epoch"] for r in before]
        )
        await db.executemany(
            "UPDATE codes.scene_epochs SET signs_until = $2, retire_at = $3 WHERE epoch = $1",
            [(r["epoch"], r["signs_until"], r["retire_at"]) for r in before],
        )
        scene_keys.invalidate()


async def _gate(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["verify:transit", "gates:sync"])


async def _offline(client: Any, gate: dict[str, Any]) -> OfflineVerifier:
    """A gate as it stands right after a refresh of the JWKS and of its scene keys."""
    offline = OfflineVerifier((await client.get("/.well-known/jwks.json")).json())
    offline.update_scene_keys(await scene_keys_of(client, gate))
    return offline


def _epoch_of(code: str) -> str:
    return decode(code).epoch.hex()


async def _epochs_published(client: Any, gate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["epoch"]: e for e in (await scene_keys_of(client, gate))["epochs"]}


async def _in_use_since(db: asyncpg.Connection, epoch: str) -> dt.datetime:
    since: dt.datetime = await db.fetchval(
        "SELECT signs_from FROM codes.scene_epochs WHERE epoch = $1", bytes.fromhex(epoch)
    )
    return since


async def test_a_gate_that_refreshed_its_scene_keys_before_an_epoch_change_reads_every_code_issued_after_it(
    client, services, scene_clock, db
):
    person = await rider(client, services)
    gate = await _gate(client, services)
    old_epoch = _epoch_of(await personal_code(client, person))
    old_wallet = DeviceWallet.create()
    await register_device(client, person, old_wallet)

    # The cron job stages the next epoch when the one in use will have been used for its period (a week) by the
    # time the next takes over; a gate refreshed its scene keys just before that, and next refreshes a day later.
    due = await _in_use_since(db, old_epoch) + SCENE_ROTATION_PERIOD - PUBLISH_LEAD
    scene_clock.set(due - SECOND)
    before_staging = await _offline(client, gate)
    context = {"platform": services.platform}
    assert await stage_due_scene_epoch(context) is None  # not due yet
    scene_clock.set(due)
    new_epoch = await stage_due_scene_epoch(context)
    assert new_epoch is not None and new_epoch != old_epoch
    change = due + PUBLISH_LEAD
    assert await _in_use_since(db, new_epoch) == change
    assert {old_epoch, new_epoch} <= set(await _epochs_published(client, gate))  # published at once ...
    assert _epoch_of(await personal_code(client, person)) == old_epoch  # ... and not used yet

    # The gate's daily refresh, the latest the spec allows, and another gate's refresh a second before the change.
    scene_clock.set(due - SECOND + VERIFIER_REFRESH)
    daily = await _offline(client, gate)
    scene_clock.set(change - SECOND)
    assert _epoch_of(await personal_code(client, person)) == old_epoch
    just_before = await _offline(client, gate)

    # The change: from now on every code and credential uses the new epoch ...
    scene_clock.set(change)
    codes = [await personal_code(client, await rider(client, services)) for _ in range(3)]
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    codes.append(wallet.code())
    assert {_epoch_of(code) for code in codes} == {new_epoch}

    # ... and both gates read all of it with the scene keys they held before the change, and the old epoch's
    # credential too, as does the gate whose daily refresh is still to come.
    for gate_cache in (daily, just_before):
        for code in codes:
            verdict = gate_cache.verify(code, "transit")
            assert verdict.allowed, verdict
        assert gate_cache.verify(old_wallet.code(), "transit").allowed
    assert before_staging.verify(old_wallet.code(), "transit").allowed


async def test_an_epoch_is_kept_until_every_code_of_it_has_expired(client, services, scene_clock, db):
    person = await rider(client, services)
    gate = await _gate(client, services)
    old_epoch = _epoch_of(await personal_code(client, person))
    scene_keys = services.codes.scene_keys

    async with services.pool.acquire() as conn, conn.transaction():
        staged = await scene_keys.stage(conn)
    change = staged.key.signs_from
    assert staged.created and change == scene_clock() + PUBLISH_LEAD
    assert staged.previous is not None and staged.previous.kid == old_epoch
    assert staged.previous.retire_at == change + RETIRE_AFTER

    # A credential issued a second before the change carries the old epoch for a day more.
    scene_clock.set(change - SECOND)
    wallet = DeviceWallet.create()
    await register_device(client, person, wallet)
    assert _epoch_of(wallet.code()) == old_epoch

    # Published, and read online, until after that credential (and any skew) has expired; what the answer tells
    # a verifier holds just as long.
    for moment in (change, change + CREDENTIAL, change + RETIRE_AFTER - SECOND):
        scene_clock.set(moment)
        published = await _epochs_published(client, gate)
        assert old_epoch in published, moment
        assert published[old_epoch]["not_after"] == int((change + RETIRE_AFTER).timestamp())
        assert await scene_keys.epoch(bytes.fromhex(old_epoch)) is not None
    scene_clock.set(change + RETIRE_AFTER)
    assert old_epoch not in await _epochs_published(client, gate)
    assert await scene_keys.epoch(bytes.fromhex(old_epoch)) is None
    assert await scene_keys.epoch(bytes.fromhex(staged.key.kid)) is not None

    # Retired, the platform still reads its codes as they stood when scanned: a tap an offline gate uploads days
    # later is proven with the epoch it was issued with (on the old code: no-scene-key once the epoch had gone).
    late_tap = await opened(services, wallet.code(), at=time.time())
    assert (late_tap.valid, late_tap.reason) == (True, "ok"), late_tap


async def test_an_epoch_in_use_is_held_at_least_until_its_earliest_possible_retirement(
    client, services, scene_clock
):
    """Before its successor is staged an epoch has no end yet: the answer's not_after is the earliest the schedule
    could retire it, never earlier than a verifier refreshing daily needs."""
    gate = await _gate(client, services)
    current = (await services.codes.scene_keys.current()).epoch.hex()
    published = await _epochs_published(client, gate)
    assert current in published
    held = dt.datetime.fromtimestamp(published[current]["not_after"], dt.UTC)
    assert held >= scene_clock() + PUBLISH_LEAD + RETIRE_AFTER - SECOND
    assert held >= dt.datetime.fromtimestamp(published[current]["not_before"], dt.UTC) + SCENE_ROTATION_PERIOD


async def test_the_cron_job_stages_one_epoch_however_many_workers_run_it(client, services, scene_clock, db):
    context = {"platform": services.platform}
    current = (await services.codes.scene_keys.current()).epoch.hex()
    due = await _in_use_since(db, current) + SCENE_ROTATION_PERIOD - PUBLISH_LEAD
    scene_clock.set(due)
    runs = await asyncio.gather(*(stage_due_scene_epoch(context) for _ in range(4)))
    staged = [epoch for epoch in runs if epoch is not None]
    assert len(staged) == 1, runs
    assert (
        await db.fetchval("SELECT count(*) FROM codes.scene_epochs WHERE created_at = $1", scene_clock()) == 1
    )
    assert await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'codes.scene_epoch_staged' AND target_id = $1",
        staged[0],
    )

    # Later runs find it staged, until it has been used for a period itself.
    scene_clock.set(due + PUBLISH_LEAD + dt.timedelta(days=3))
    assert await stage_due_scene_epoch(context) is None
    scene_clock.set(due + SCENE_ROTATION_PERIOD)
    assert await stage_due_scene_epoch(context) not in (None, staged[0])


async def test_a_second_worker_waits_for_the_first_and_finds_the_epoch_staged(
    client, services, scene_clock, db
):
    """Deterministic: the first worker's staging is not committed when the second starts; the second must wait
    for it (the advisory lock) rather than stage an epoch of its own."""
    scene_keys = services.codes.scene_keys
    current = (await scene_keys.current()).epoch.hex()
    scene_clock.set(await _in_use_since(db, current) + SCENE_ROTATION_PERIOD)

    async def second_worker() -> Any:
        async with services.pool.acquire() as conn, conn.transaction():
            return await scene_keys.stage_if_due(conn)

    async with services.pool.acquire() as first:
        transaction = first.transaction()
        await transaction.start()
        assert await scene_keys.stage_if_due(first) is not None
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
        await db.fetchval("SELECT count(*) FROM codes.scene_epochs WHERE created_at = $1", scene_clock()) == 1
    )


async def test_an_emergency_rotation_is_used_at_once_and_can_withdraw_the_old_epoch(
    client, services, scene_clock
):
    person = await rider(client, services)
    gate = await _gate(client, services)
    old_code = await personal_code(client, person)
    old_epoch = _epoch_of(old_code)
    async with services.pool.acquire() as conn, conn.transaction():
        staged = await services.codes.scene_keys.stage(conn)
    stale = await _offline(client, gate)

    async with services.pool.acquire() as conn, conn.transaction():
        change = await services.codes.scene_keys.rotate_now(conn, withdraw=True)
    new_code = await personal_code(client, person)
    assert _epoch_of(new_code) == change.key.kid
    published = await _epochs_published(client, gate)
    assert change.key.kid in published
    assert old_epoch not in published  # withdrawn: no verifier receives it any more, nor reads with it online
    assert (
        staged.key.kid not in published
    )  # the staged epoch is never used: it may have leaked with the other
    assert await services.codes.scene_keys.epoch(bytes.fromhex(old_epoch)) is None
    assert (await opened(services, old_code)).reason == "no-scene-key"  # nor a late tap
    refreshed = await _offline(client, gate)
    assert refreshed.verify(new_code, "transit").allowed
    assert refreshed.verify(old_code, "transit").reason == "no-scene-key"

    # What the spec warns of: a gate that has not refreshed its scene keys since cannot read the new codes.
    assert stale.verify(new_code, "transit").reason == "no-scene-key"


async def test_an_emergency_rotation_without_withdrawal_keeps_the_old_epoch_published(
    client, services, scene_clock
):
    person = await rider(client, services)
    gate = await _gate(client, services)
    old_code = await personal_code(client, person)
    stale = await _offline(client, gate)
    async with services.pool.acquire() as conn, conn.transaction():
        change = await services.codes.scene_keys.rotate_now(conn)
    assert change.previous is not None and change.previous.kid == _epoch_of(old_code)
    assert change.previous.retire_at == scene_clock() + RETIRE_AFTER
    new_code = await personal_code(client, person)
    assert _epoch_of(new_code) == change.key.kid
    assert {change.previous.kid, change.key.kid} <= set(await _epochs_published(client, gate))
    refreshed = await _offline(client, gate)
    assert refreshed.verify(old_code, "transit", consume=False).allowed
    assert refreshed.verify(new_code, "transit", consume=False).allowed
    assert stale.verify(old_code, "transit").allowed
    assert stale.verify(new_code, "transit").reason == "no-scene-key"  # until it refreshes


# --- the hot path and the fallback -------------------------------------------------------------------------------


class CountingPool:
    """The real pool, counting the connections taken from it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.taken = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        self.taken += 1
        async with self._pool.acquire() as conn:
            yield conn


async def test_the_epoch_changes_in_every_process_at_once_without_a_database_round_trip(
    client, services, scene_clock
):
    """A staged epoch is loaded a day ahead; at its change, a process works out from the rows it holds that codes
    use it, and online verification finds either epoch, with no new query on the way."""
    async with services.pool.acquire() as conn, conn.transaction():
        staged = await services.codes.scene_keys.stage(conn)
    pool = CountingPool(services.pool)
    process = SceneKeyService(pool, services.cipher, clock=scene_clock)  # type: ignore[arg-type]
    process.reload_every = float("inf")  # only the scene clock moves here; a process reloads every 30 s
    old = await process.current()
    loaded = pool.taken
    assert loaded == 1
    new_epoch = bytes.fromhex(staged.key.kid)
    scene_clock.set(staged.key.signs_from - SECOND)
    for _ in range(100):
        assert await process.epoch(old.epoch) is not None and await process.epoch(new_epoch) is not None
    assert (await process.current()).epoch == old.epoch
    scene_clock.set(staged.key.signs_from)
    assert (await process.current()).epoch == new_epoch
    for _ in range(100):
        assert await process.epoch(old.epoch) is not None
    assert pool.taken == loaded


async def test_with_no_epoch_at_all_the_first_is_used_at_once_and_only_one_is_made(services, scene_clock, db):
    snapshot = await db.fetch("SELECT * FROM codes.scene_epochs")
    try:
        await db.execute("DELETE FROM codes.scene_epochs")
        processes = [SceneKeyService(services.pool, services.cipher, clock=scene_clock) for _ in range(3)]
        firsts = await asyncio.gather(*(p.current() for p in processes))
        assert len({e.epoch for e in firsts}) == 1
        row = await db.fetchrow("SELECT * FROM codes.scene_epochs")
        assert await db.fetchval("SELECT count(*) FROM codes.scene_epochs") == 1
        assert row["created_at"] == row["signs_from"] == scene_clock()
    finally:
        await db.execute("DELETE FROM codes.scene_epochs")
        await db.executemany(
            """INSERT INTO codes.scene_epochs (epoch, keys_enc, created_at, signs_from, signs_until, retire_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [
                (
                    r["epoch"],
                    r["keys_enc"],
                    r["created_at"],
                    r["signs_from"],
                    r["signs_until"],
                    r["retire_at"],
                )
                for r in snapshot
            ],
        )


# --- upgrading a database made before the schedule -----------------------------------------------------------


async def test_an_existing_database_upgrades_and_its_epochs_keep_their_promises(empty_database):
    await apply_migrations(empty_database, [m for m in MODULES if m.migrations != "code_service"])
    folder = resources.files("code_service") / "migrations"
    conn = await asyncpg.connect(empty_database)
    try:
        for name in sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql")):
            if name >= "0008":
                break
            await conn.execute((folder / name).read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO public.schema_migrations (package, name) VALUES ('code_service', $1)", name
            )
        # As the old schedule left them: a long-dead epoch, the one used until two hours ago, the one in use, and
        # one an operator inserted by hand, as docs/operations.md said to, to start 26 h from now.
        t0 = utc_now()
        epochs = {
            "0000000a": (t0 - 21 * DAY, t0 - 14 * DAY, t0 - 21 * DAY + SECOND),
            "0000000b": (t0 - 7 * DAY - 2 * HOUR, t0 - 2 * HOUR, t0 - 9 * DAY),
            "0000000c": (t0 - 2 * HOUR, t0 + 7 * DAY - 2 * HOUR, t0 - 52 * HOUR),
            "0000000d": (t0 + 26 * HOUR, t0 + 26 * HOUR + 7 * DAY, t0 - HOUR),
        }
        await conn.executemany(
            """INSERT INTO codes.scene_epochs (epoch, keys_enc, use_from, use_until, created_at)
               VALUES ($1, '', $2, $3, $4)""",
            [(bytes.fromhex(epoch), *times) for epoch, times in epochs.items()],
        )
    finally:
        await conn.close()

    assert "code_service/0008_scene_epoch_schedule.sql" in await apply_migrations(empty_database)

    conn = await asyncpg.connect(empty_database)
    try:
        at = utc_now()
        live = await SceneKeyRepository().live(conn, at)
        first = await conn.fetchrow("SELECT * FROM codes.scene_epochs WHERE epoch = '\\x0000000a'")
    finally:
        await conn.close()
    schedule = KeySchedule()
    rows = {r.kid: r for r in live}
    assert set(rows) == {"0000000b", "0000000c", "0000000d"}  # the epoch that ended 14 days ago is retired
    assert first["created_at"] == first["signs_from"]  # published as it was made
    # Used until two hours ago: until its successor took over, and kept 25 h after that.
    previous = rows["0000000b"]
    assert previous.signs_until == rows["0000000c"].signs_from == t0 - 2 * HOUR
    assert previous.retire_at == previous.signs_until + RETIRE_AFTER
    # In use until the hand-made epoch takes over, and kept for what verifiers were told: its planned end plus
    # 24 h 2 min, later than the schedule's 25 h after the takeover.
    current = rows["0000000c"]
    assert schedule.signer(live, at) is current and schedule.signer(live, t0 + 26 * HOUR) is rows["0000000d"]
    assert current.signs_until == t0 + 26 * HOUR
    assert current.retire_at == t0 + 7 * DAY - 2 * HOUR + dt.timedelta(hours=24, minutes=2)
    assert schedule.state(rows["0000000d"], at) == "staged" and rows["0000000d"].signs_until is None
    assert [r.kid for r in schedule.published_set(live, at)] == ["0000000d", "0000000c", "0000000b"]
