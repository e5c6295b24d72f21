"""Plain SQL migrations per domain, applied in the module list's order under an advisory lock, as the owner role;
then the application role's grants are recomputed (app_backend/composition/roles.py)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import asyncpg

from app_backend.composition.roles import adopt_objects, grant_application_role, user_of
from app_backend.kernel.module import DomainModule

_LOCK_ID = 0x7A7470  # "tzt"


def _scripts(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package) / "migrations"
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


async def _adopt_earlier_names(conn: asyncpg.Connection, module: DomainModule, package: str) -> None:
    """A migration that ran under another package's name before its domain had its own is recorded under its
    new name too, so that it does not run again."""
    for name, (old_package, old_name) in module.migrated_as.items():
        await conn.execute(
            """INSERT INTO public.schema_migrations (package, name, applied_at)
               SELECT $1, $2, applied_at FROM public.schema_migrations WHERE package = $3 AND name = $4
               ON CONFLICT DO NOTHING""",
            package,
            name,
            old_package,
            old_name,
        )


def append_only_tables(modules: Sequence[DomainModule]) -> set[str]:
    """Every append-only table the platform declares: the given modules' and the module list's, so that migrating
    with a shorter list never hands the application role more than the platform allows."""
    from app_backend.composition.modules import MODULES

    return {table for module in (*MODULES, *modules) for table in module.append_only}


async def apply_migrations(
    dsn: str, modules: Sequence[DomainModule] | None = None, *, app_url: str = ""
) -> list[str]:
    """Migrates as the role `dsn` connects with (the owner). With `app_url` (the server's DATABASE_URL), the role
    it names is created or updated and given exactly the server's grants; its password, when the URL has one,
    becomes the role's."""
    if modules is None:
        from app_backend.composition.modules import MODULES

        modules = MODULES
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                   package text NOT NULL, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (package, name))"""
        )
        await adopt_objects(conn)
        for module in modules:
            package = module.migrations
            if package is None:
                continue
            await _adopt_earlier_names(conn, module, package)
            done = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM public.schema_migrations WHERE package = $1", package
                )
            }
            for name, sql in _scripts(package):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO public.schema_migrations (package, name) VALUES ($1, $2)", package, name
                    )
                applied.append(f"{package}/{name}")
        if app_url:
            role, password = user_of(app_url)
            if not role:
                raise RuntimeError(
                    "the server's DATABASE_URL names no user: the application role must be named"
                )
            await grant_application_role(conn, role, password, append_only_tables(modules))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
    return applied
