"""Plain SQL migrations per package, applied in order under an advisory lock."""

from __future__ import annotations

from importlib import resources

import asyncpg

# Order matters: later packages may reference earlier schemas. app_backend.composition holds the objects that read
# several packages' tables (code_service's ports answered in SQL), so it comes after all of them.
MIGRATION_PACKAGES = ("app_backend", "code_service", "payments", "app_backend.composition")
_LOCK_ID = 0x7A7470  # "tzt"


def _scripts(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package) / "migrations"
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


async def apply_migrations(dsn: str, packages: tuple[str, ...] = MIGRATION_PACKAGES) -> list[str]:
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                   package text NOT NULL, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (package, name))"""
        )
        for package in packages:
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
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
    return applied
