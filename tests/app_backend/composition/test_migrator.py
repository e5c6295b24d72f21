"""The migrator applies each domain's SQL once, in module order, and a database migrated before a domain owned its
migrations keeps its history (`DomainModule.migrated_as`): nothing runs twice."""

from __future__ import annotations

from importlib import resources

import asyncpg

from app_backend.audit.module import module as audit
from app_backend.composition.migrator import apply_migrations


async def test_a_database_migrated_under_the_old_names_keeps_its_history(empty_database):
    # As the first design left it: audit's tables made by the app_backend package's migrations 0002 and 0003.
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(
            """CREATE TABLE public.schema_migrations (
                   package text NOT NULL, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (package, name))"""
        )
        folder = resources.files("app_backend.audit") / "migrations"
        for ours, (package, name) in sorted(audit.migrated_as.items()):
            await conn.execute((folder / ours).read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO public.schema_migrations (package, name) VALUES ($1, $2)", package, name
            )
    finally:
        await conn.close()

    # Adopted, not run again (they would fail); only audit's later migrations run.
    assert await apply_migrations(empty_database, [audit]) == ["app_backend.audit/0003_purge_as_owner.sql"]

    conn = await asyncpg.connect(empty_database)
    try:
        recorded = {
            (r["package"], r["name"])
            for r in await conn.fetch("SELECT package, name FROM public.schema_migrations")
        }
    finally:
        await conn.close()
    assert {
        ("app_backend.audit", "0001_audit.sql"),
        ("app_backend.audit", "0002_audit_truncate.sql"),
    } <= recorded


async def test_a_fresh_database_gets_every_domain_in_module_order(empty_database):
    applied = await apply_migrations(empty_database)
    packages = list(dict.fromkeys(name.split("/")[0] for name in applied))
    assert packages == [
        "app_backend.audit",
        "app_backend.identity",
        "app_backend.enterprises",
        "app_backend.organisations",
        "payments",
        "code_service",
        "mini_programs",
        "app_backend.oidc",
        "app_backend.notifications",
        "app_backend.tiles",
        "app_backend.home",
        "app_backend.events",
        "app_backend.bookings",
        "app_backend.tickets",
    ]
    assert await apply_migrations(empty_database) == []
    conn = await asyncpg.connect(empty_database)
    try:
        schemas = {
            r["schema_name"] for r in await conn.fetch("SELECT schema_name FROM information_schema.schemata")
        }
    finally:
        await conn.close()
    assert {
        "identity",
        "enterprises",
        "organisations",
        "audit",
        "codes",
        "payments",
        "code_ports",
        "mini_programs",
        "notifications",
        "tiles",
        "bookings",
        "tickets",
    } <= schemas
