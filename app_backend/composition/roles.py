"""Two database roles: the owner, as whom migrations run, and the application role the server connects as.

The owner owns every schema, table, sequence and function of the platform. The application role owns nothing and
holds exactly what the server needs: USAGE on each domain schema, SELECT/INSERT/UPDATE/DELETE on ordinary
tables, USAGE/SELECT on sequences, EXECUTE on functions, and on the append-only tables a domain declares
(`DomainModule.append_only`: the audit trail, the ledger) only SELECT and INSERT. Not being the owner, it cannot
`ALTER TABLE … DISABLE TRIGGER`, truncate, or drop; not being a superuser, it cannot
`SET session_replication_role = replica` (which would silence the triggers that keep those tables append-only).

The grants are recomputed after every migration run from what the database holds, so a table or schema a new
migration adds is covered without anyone listing it (docs/decisions/0014-two-database-roles.md)."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

# Every schema of the database except PostgreSQL's own and `public` (which holds only the migrator's record):
# the database is the platform's alone.
_OURS = "n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', 'public')"
_MIGRATIONS_TABLE = "n.nspname = 'public' AND c.relname = 'schema_migrations'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(table: str) -> str:
    """`audit.events` quoted part by part."""
    return ".".join(quote_ident(part) for part in table.split("."))


def user_of(url: str) -> tuple[str, str]:
    """(user, password) a PostgreSQL URL connects with; empty when the URL does not say."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    user = unquote(parts.username or "") or query.get("user", [""])[0]
    password = unquote(parts.password or "") or query.get("password", [""])[0]
    return user, password


def adopt_sql(owner: str) -> str:
    """A statement that makes `owner` the owner of every object of the platform it does not own yet.

    A database migrated before the roles were split has its objects owned by whoever migrated it (often a
    superuser, or the very role that is now to be the application role). Run by a superuser or by a member of the
    earlier owner; a table's sequences and indexes follow the table."""
    return f"""
DO $adopt$
DECLARE
    target text := {quote_literal(owner)};
    target_oid oid := (SELECT oid FROM pg_roles WHERE rolname = {quote_literal(owner)});
    obj record;
BEGIN
    FOR obj IN SELECT n.nspname FROM pg_namespace n WHERE {_OURS} AND n.nspowner <> target_oid LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', obj.nspname, target);
    END LOOP;
    FOR obj IN
        SELECT c.oid::regclass::text AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (({_OURS}) OR ({_MIGRATIONS_TABLE})) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relowner <> target_oid
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
            CASE obj.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
            obj.name, target);
    END LOOP;
    FOR obj IN
        SELECT c.oid::regclass::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_OURS} AND c.relkind = 'S' AND c.relowner <> target_oid
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', obj.name, target);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure::text AS name, p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_OURS} AND p.proowner <> target_oid
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
            CASE obj.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
            obj.name, target);
    END LOOP;
    FOR obj IN
        SELECT t.oid::regtype::text AS name, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {_OURS} AND t.typowner <> target_oid AND t.typelem = 0
          AND (t.typtype IN ('e', 'd', 'r', 'm')
               OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
            CASE obj.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, obj.name, target);
    END LOOP;
END
$adopt$"""


async def adopt_objects(conn: asyncpg.Connection) -> None:
    """The connected role (the owner) takes over what an earlier owner left (see `adopt_sql`)."""
    owner: str = await conn.fetchval("SELECT current_user")
    try:
        await conn.execute(adopt_sql(owner))
    except asyncpg.InsufficientPrivilegeError as exc:
        raise RuntimeError(
            f"some of the platform's objects are owned by another role and {owner} may not take them over "
            f"({exc}); as a superuser, or as their owner, run: REASSIGN OWNED BY <earlier owner> TO {owner} "
            "(see docs/operations.md, 'Database roles')"
        ) from exc


async def _ensure_login_role(conn: asyncpg.Connection, role: str, password: str) -> None:
    found = await conn.fetchrow(
        """SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
           FROM pg_roles WHERE rolname = $1""",
        role,
    )
    secret = f" PASSWORD {quote_literal(password)}" if password else ""
    try:
        if found is None:
            # PostgreSQL's defaults: NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS.
            await conn.execute(f"CREATE ROLE {quote_ident(role)} LOGIN{secret}")
            return
        await conn.execute(f"ALTER ROLE {quote_ident(role)} LOGIN{secret}")
    except asyncpg.InsufficientPrivilegeError as exc:
        if found is None:
            raise RuntimeError(
                f"the owner may not create the application role {role} ({exc}): give the owner CREATEROLE, or "
                f"create it once as an administrator: CREATE ROLE {role} LOGIN PASSWORD '…'"
            ) from exc
        # A role an administrator made: its password is theirs to keep; its powers are checked below.
    powers = [name for name, value in (found or {}).items() if value]
    if powers:
        raise RuntimeError(
            f"the application role {role} must be a plain login role, but it has: {', '.join(powers)}; "
            f"as a superuser: ALTER ROLE {role} NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS"
        )


async def grant_application_role(
    conn: asyncpg.Connection, role: str, password: str, append_only: Collection[str]
) -> None:
    """Creates or updates the application role and gives it exactly the server's grants, in one transaction
    (a running server never sees a moment without them). Connected as the owner, after migrations."""
    owner: str = await conn.fetchval("SELECT current_user")
    if role == owner:
        raise RuntimeError(
            f"the application role and the owner are both {role}: give the server a role of its own"
        )
    await _ensure_login_role(conn, role, password)
    if await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", role, owner):
        raise RuntimeError(
            f"the application role {role} is a member of the owner {owner}: REVOKE {owner} FROM {role}"
        )
    schemas = [
        r["nspname"]
        for r in await conn.fetch(f"SELECT n.nspname FROM pg_namespace n WHERE {_OURS} ORDER BY 1")
    ]
    app = quote_ident(role)
    async with conn.transaction():
        for schema in schemas:
            s = quote_ident(schema)
            # Revoked first: what the role held before (an earlier single-role database, a hand-made grant)
            # does not survive; what follows is all it has.
            for statement in (
                f"REVOKE ALL ON SCHEMA {s} FROM {app}",
                f"GRANT USAGE ON SCHEMA {s} TO {app}",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {app}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {app}",
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {app}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {app}",
                f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {app}",
            ):
                await conn.execute(statement)
        for table in sorted(append_only):
            if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
                await conn.execute(f"REVOKE UPDATE, DELETE ON {qualified(table)} FROM {app}")
        if await conn.fetchval("SELECT to_regclass('public.schema_migrations')") is not None:
            await conn.execute(f"REVOKE ALL ON public.schema_migrations FROM {app}")


async def server_role_problems(conn: asyncpg.Connection, append_only: Collection[str]) -> list[str]:
    """What is wrong with the role the server connected as: empty when it is a proper application role."""
    problems: list[str] = []
    role: str = await conn.fetchval("SELECT current_user")
    if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        problems.append(f"{role} is a superuser")
    owned = await conn.fetchval(
        f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_OURS} AND c.relkind IN ('r', 'p')
              AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"""
    )
    if owned:
        problems.append(f"{role} owns {owned} of the platform's tables")
    for table in sorted(append_only):
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            continue
        rights = [
            right
            for right in ("UPDATE", "DELETE", "TRUNCATE")
            if await conn.fetchval("SELECT has_table_privilege($1, $2)", table, right)
        ]
        if rights:
            problems.append(f"{role} may {', '.join(rights)} the append-only table {table}")
    return problems


async def check_server_role(pool: asyncpg.Pool, is_dev: bool, append_only: Collection[str]) -> None:
    """Outside dev the server refuses to start as a superuser or as the owner: either could switch off the
    triggers of the append-only tables. In dev (one role for everything is allowed there) it only warns."""
    async with pool.acquire() as conn:
        problems = await server_role_problems(conn, append_only)
    if not problems:
        return
    message = (
        "the server's database role (DATABASE_URL) must be the application role, not the owner: "
        + "; ".join(problems)
        + " (docs/operations.md, 'Database roles')"
    )
    if not is_dev:
        raise RuntimeError(message)
    import structlog

    structlog.get_logger("tzt.roles").warning("database_role", problem=message)


async def migrated_by_another_role(url: str) -> bool:
    """The role `url` connects as is not the one that migrated this database (nor a superuser): an application
    role, which has nothing to migrate with."""
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval(
                """SELECT c.relowner <> r.oid AND NOT r.rolsuper
                   FROM pg_class c, pg_roles r
                   WHERE c.oid = to_regclass('public.schema_migrations') AND r.rolname = current_user"""
            )
        )
    finally:
        await conn.close()
