"""Two database roles: the owner migrates, the server runs as an application role with only the grants it needs.

The whole suite runs as the application role (tests/conftest.py), so a missing grant fails here. These tests show
that the role cannot rewrite the append-only tables by any of the ways the owner or a superuser could: no UPDATE,
DELETE or TRUNCATE grant, no trigger control, no `session_replication_role`, no way to become the owner."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest

from app_backend.composition.cli import NoOwnerURL, _migrate
from app_backend.composition.embedded import APP_ROLE, OWNER_ROLE, EmbeddedServices
from app_backend.composition.migrator import append_only_tables, apply_migrations
from app_backend.composition.modules import MODULES
from app_backend.composition.roles import check_server_role, server_role_problems, user_of
from tests.conftest import Backing, as_role
from tests.helpers import staff

APPEND_ONLY = ["audit.events", "oidc.releases", "payments.ledger_entries", "payments.ledger_postings"]


@pytest.fixture
async def owner(backing: Backing) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(backing.migration_database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _refused(db: asyncpg.Connection, statement: str, *args: object) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.transaction():
            await db.execute(statement, *args)


async def _latest_event(client, services, db) -> asyncpg.Record:
    admin = await staff(client, services)
    assert await client.get(
        "/api/v1/admin/audit", headers={"Authorization": f"Bearer {admin['access_token']}"}
    )
    row = await db.fetchrow(
        "SELECT id, action, outcome, at FROM audit.events WHERE actor_id = $1 ORDER BY id DESC LIMIT 1",
        admin["resident_id"],
    )
    assert row is not None
    return row


def test_the_append_only_tables_are_declared_by_their_domains():
    assert append_only_tables(MODULES) == set(APPEND_ONLY)


async def test_the_server_runs_as_a_plain_role_that_owns_nothing(services, backing, db):
    role = await db.fetchval("SELECT current_user")
    assert role == user_of(backing.database_url)[0] != user_of(backing.migration_database_url)[0]
    powers = await db.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert not any(powers.values())
    assert await server_role_problems(db, APPEND_ONLY) == []


async def test_the_application_role_adds_and_reads_audit_rows_but_cannot_change_them(client, services, db):
    row = await _latest_event(client, services, db)
    await db.execute(
        "INSERT INTO audit.events (actor_type, actor_id, action, outcome) VALUES ('test', 'roles', 'probe', 'ok')"
    )
    assert await db.fetchval("SELECT count(*) FROM audit.events WHERE actor_id = 'roles'") >= 1

    await _refused(db, "UPDATE audit.events SET outcome = 'failure' WHERE id = $1", row["id"])
    await _refused(db, "DELETE FROM audit.events WHERE id = $1", row["id"])
    await _refused(db, "TRUNCATE audit.events")
    # What the owner could do to silence the append-only triggers, and a superuser besides:
    await _refused(db, "ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
    await _refused(db, "ALTER TABLE audit.events DISABLE TRIGGER ALL")
    await _refused(db, "DROP TRIGGER events_append_only ON audit.events")
    await _refused(db, "SET session_replication_role = replica")
    owner = await db.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'audit.events'::regclass"
    )
    await _refused(db, f'SET ROLE "{owner}"')

    after = await db.fetchrow("SELECT id, action, outcome, at FROM audit.events WHERE id = $1", row["id"])
    assert dict(after) == dict(row)


async def test_the_ledger_is_append_only_for_the_application_role_too(db):
    for table, column in (("payments.ledger_entries", "memo"), ("payments.ledger_postings", "account")):
        await _refused(db, f"UPDATE {table} SET {column} = {column}")
        await _refused(db, f"DELETE FROM {table}")
        await _refused(db, f"TRUNCATE {table} CASCADE")
        assert await db.fetchval(f"SELECT count(*) >= 0 FROM {table}")


async def test_even_the_owner_meets_the_triggers(client, services, db, owner):
    """Defence in depth: what the grants already refuse the server, the triggers refuse whoever owns the table."""
    row = await _latest_event(client, services, db)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with owner.transaction():
            await owner.execute("UPDATE audit.events SET outcome = 'failure' WHERE id = $1", row["id"])
    with pytest.raises(asyncpg.RaiseError, match="185 days"):
        async with owner.transaction():
            await owner.execute("DELETE FROM audit.events WHERE id = $1", row["id"])
    with pytest.raises(asyncpg.RaiseError, match="truncated"):
        async with owner.transaction():
            await owner.execute("TRUNCATE audit.events")


async def test_the_retention_purge_still_runs_as_the_application_role(services, owner):
    now = dt.datetime.now(dt.UTC)
    marker = f"purge-{uuid.uuid4().hex[:8]}"
    for days in (400, 100):  # one past the retention period, one within it
        await owner.execute(
            "INSERT INTO audit.events (at, actor_type, actor_id, action, outcome) VALUES ($1, 'test', $2, 'x', 'ok')",
            now - dt.timedelta(days=days),
            marker,
        )
    async with services.pool.acquire() as conn, conn.transaction():
        assert await services.audit.purge(conn, 185) >= 1
        # The function deletes nothing younger than 185 days, whatever cutoff it is given.
        await services.audit.purge(conn, 10)
    kept = await owner.fetch("SELECT at FROM audit.events WHERE actor_id = $1", marker)
    assert len(kept) == 1 and kept[0]["at"] > now - dt.timedelta(days=101)


async def test_outside_dev_the_server_refuses_to_run_as_the_owner(backing):
    owner_pool = await asyncpg.create_pool(backing.migration_database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(RuntimeError, match="owns"):
            await check_server_role(owner_pool, False, APPEND_ONLY)
        await check_server_role(owner_pool, True, APPEND_ONLY)  # dev may run as one role: a warning only
    finally:
        await owner_pool.close()


async def test_production_migrates_only_with_the_owner_url(settings):
    production = msgspec.structs.replace(settings, env="production", migration_database_url="")
    with pytest.raises(NoOwnerURL, match="MIGRATION_DATABASE_URL"):
        await _migrate(production, required=True)
    assert await _migrate(production) == []  # `tzt serve` leaves migrating to `tzt migrate`


async def test_a_dev_command_given_only_the_application_role_leaves_migrating_to_the_owner(settings):
    """A `tzt` command in dev with DATABASE_URL alone migrates as that role (one role for everything), except when
    it is the application role of a database the owner migrated: then it has nothing to migrate with."""
    app_only = msgspec.structs.replace(settings, migration_database_url="")
    assert await _migrate(app_only) == []
    with pytest.raises(NoOwnerURL, match="application role"):
        await _migrate(app_only, required=True)


@pytest.fixture
def fresh_database(backing: Backing) -> Iterator[tuple[str, str]]:
    """A database owned by the run's owner, and the name of an application role that does not exist yet."""
    import asyncio

    name = f"tzt_roles_{uuid.uuid4().hex[:8]}"
    app = f"{name}_app"
    owner_name = user_of(backing.migration_database_url)[0]

    async def run(*statements: str) -> None:
        conn = await asyncpg.connect(backing.admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}" OWNER "{owner_name}"'))
    try:
        yield name, app
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{app}"'))


def test_tzt_migrate_on_a_given_server_creates_the_application_role(backing, fresh_database, data_dir):
    name, app = fresh_database
    owner_name, owner_password = user_of(backing.migration_database_url)
    owner_url = as_role(backing.admin_url, name, owner_name, owner_password)
    app_url = as_role(backing.admin_url, name, app, "s3cret-app-password")
    env = {
        "PATH": "/usr/bin:/bin",
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "test",
        "REDIS_URL": backing.redis_url,
        "MIGRATION_DATABASE_URL": owner_url,
        "DATABASE_URL": app_url,
    }
    for _ in range(2):  # the second run changes nothing and still succeeds
        done = subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    async def check() -> None:
        admin = await asyncpg.connect(urlunsplit(urlsplit(backing.admin_url)._replace(path=f"/{name}")))
        try:
            role = await admin.fetchrow(
                "SELECT rolcanlogin, rolsuper, rolpassword IS NOT NULL AS has_password FROM pg_authid "
                "WHERE rolname = $1",
                app,
            )
            assert role is not None and role["rolcanlogin"] and role["has_password"] and not role["rolsuper"]
        finally:
            await admin.close()
        conn = await asyncpg.connect(app_url)
        try:
            assert await server_role_problems(conn, APPEND_ONLY) == []
            await _refused(conn, "DELETE FROM audit.events")
            assert await conn.fetchval("SELECT count(*) FROM codes.taps") == 0  # and what it needs, it has
        finally:
            await conn.close()

    import asyncio

    asyncio.run(check())


async def test_a_database_migrated_by_the_old_single_role_code_is_upgraded(backing, fresh_database):
    """Before the split, the server's own role migrated and owned everything. Upgrading keeps that role as the
    owner (MIGRATION_DATABASE_URL) and names a new application role: tables made earlier get its grants."""
    name, app = fresh_database
    owner_name, owner_password = user_of(backing.migration_database_url)
    legacy_url = as_role(backing.admin_url, name, owner_name, owner_password)
    await apply_migrations(legacy_url)  # the old code: one role, no grants
    app_url = as_role(backing.admin_url, name, app, "another-password")

    assert await apply_migrations(legacy_url, app_url=app_url) == []
    conn = await asyncpg.connect(app_url)
    try:
        assert await server_role_problems(conn, APPEND_ONLY) == []
        await _refused(conn, "UPDATE audit.events SET outcome = 'x'")
        await conn.execute(
            "INSERT INTO audit.events (actor_type, actor_id, action, outcome) VALUES ('t','t','t','t')"
        )
    finally:
        await conn.close()


def test_the_embedded_default_sets_up_both_roles_and_takes_over_an_old_data_folder(tmp_path: Path):
    import asyncio

    embedded = EmbeddedServices(tmp_path)
    embedded.start(want_postgres=True, want_redis=False)
    try:
        # A data folder from before the split: the superuser migrated and owns everything.
        asyncio.run(apply_migrations(embedded.admin_url))
        embedded.bootstrap_roles()  # what the next start does
        assert user_of(embedded.migration_database_url)[0] == OWNER_ROLE
        assert user_of(embedded.database_url)[0] == APP_ROLE

        async def check() -> None:
            await apply_migrations(embedded.migration_database_url, app_url=embedded.database_url)
            conn = await asyncpg.connect(embedded.database_url)
            try:
                assert await conn.fetchval("SELECT current_user") == APP_ROLE
                assert await server_role_problems(conn, APPEND_ONLY) == []
                await _refused(conn, "ALTER TABLE audit.events DISABLE TRIGGER ALL")
                owners = await conn.fetch(
                    """SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname IN ('audit', 'identity', 'payments', 'codes')"""
                )
                assert [r["owner"] for r in owners] == [OWNER_ROLE]
            finally:
                await conn.close()

        asyncio.run(check())
    finally:
        embedded.stop()
