"""Real PostgreSQL and Redis for every test: embedded by default, the given servers when DATABASE_URL / REDIS_URL
are set (DATABASE_URL then names a superuser, who makes the run's database and roles). Each run gets a database of
its own and two roles of its own, as production has them: an owner that migrates, and an application role that
the app, the services and the `db` fixture use (so a grant the server lacks fails here, not in production). All
three are dropped at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis
from litestar import Litestar

from app_backend.composition.app import create_app
from app_backend.composition.embedded import EmbeddedServices
from app_backend.composition.migrator import apply_migrations
from app_backend.composition.modules import MODULES
from app_backend.composition.roles import user_of
from app_backend.composition.wiring import Services
from app_backend.kernel.module import DomainModule
from app_backend.kernel.settings import Settings, load_settings
from mini_programs.sandbox.config import sandbox_config
from payments.sandbox.keys import load_alipay_keys
from payments.sandbox.launch import running_sandbox
from tests.mini_programs.sandboxes import AlipayMiniSandbox, WechatMiniSandbox
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def as_role(url: str, database: str, user: str, password: str) -> str:
    """The same server as `url`, another database and role."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path="/" + database))


async def create_owned_database(admin_dsn: str, name: str, owner: str, password: str) -> None:
    """A database owned by a login role that may create roles (the application role), not a superuser."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE ROLE \"{owner}\" LOGIN CREATEROLE PASSWORD '{password}'")
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    finally:
        await conn.close()


async def drop_database_and_roles(admin_dsn: str, name: str, roles: Sequence[str]) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


class Backing(NamedTuple):
    """The run's servers. [0] and [1] are what the server is given (DATABASE_URL, REDIS_URL)."""

    database_url: str  # the application role
    redis_url: str
    migration_database_url: str  # the owner
    admin_url: str  # a superuser of the same server (databases and roles for tests of their own)

    def env(self) -> dict[str, str]:
        """The environment a `tzt` command of this run needs."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "MIGRATION_DATABASE_URL": self.migration_database_url,
        }


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tzt-data")


@pytest.fixture(scope="session")
def backing(data_dir: Path) -> Iterator[Backing]:
    """A fresh database migrated by its owner, the application role with its grants, an empty Redis database."""
    given_db, given_redis = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    embedded = EmbeddedServices(data_dir)
    embedded.start(want_postgres=not given_db, want_redis=not given_redis, persistent_redis=False)
    try:
        admin_dsn = given_db or embedded.admin_url
        name = f"tzt_test_{uuid.uuid4().hex[:10]}"
        owner, app = f"{name}_owner", f"{name}_app"
        owner_password, app_password = secrets.token_hex(16), secrets.token_hex(16)
        asyncio.run(create_owned_database(admin_dsn, name, owner, owner_password))
        owner_url = as_role(admin_dsn, name, owner, owner_password)
        database_url = as_role(admin_dsn, name, app, app_password)
        redis_url = _with_path(given_redis, "/15") if given_redis else embedded.redis_url
        redis.Redis.from_url(redis_url).flushdb()
        asyncio.run(apply_migrations(owner_url, app_url=database_url))
        yield Backing(database_url, redis_url, owner_url, admin_dsn)
        asyncio.run(drop_database_and_roles(admin_dsn, name, [app, owner]))
        if given_redis:
            redis.Redis.from_url(redis_url).flushdb()
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def wechat_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatSandbox]:
    with running_sandbox("wechat", tmp_path_factory.mktemp("wechat-sandbox")) as started:
        base = started.base_url + "/"
        merchant = json.loads((started.state_dir / "wechat.json").read_text())
        assert merchant["base_url"] == base
        yield WechatSandbox(base, merchant, started.state_dir)


@pytest.fixture(scope="session")
def alipay_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlipaySandbox]:
    state = tmp_path_factory.mktemp("alipay-sandbox")
    with running_sandbox("alipay", state, log=state.parent / "alipay-sandbox.log") as started:
        yield AlipaySandbox(started.base_url, state, load_alipay_keys(state))


@pytest.fixture(scope="session")
def wechat_mini_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatMiniSandbox]:
    with running_sandbox(
        "wechat", tmp_path_factory.mktemp("wechat-mini-sandbox"), module="mini_programs.sandbox"
    ) as started:
        yield WechatMiniSandbox(started.base_url, started.state_dir)


@pytest.fixture(scope="session")
def alipay_mini_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlipayMiniSandbox]:
    with running_sandbox(
        "alipay", tmp_path_factory.mktemp("alipay-mini-sandbox"), module="mini_programs.sandbox"
    ) as started:
        yield AlipayMiniSandbox(started.base_url, started.state_dir)


@pytest.fixture(scope="session")
def settings(
    backing: Backing,
    data_dir: Path,
    wechat_sandbox: WechatSandbox,
    alipay_sandbox: AlipaySandbox,
    wechat_mini_sandbox: WechatMiniSandbox,
    alipay_mini_sandbox: AlipayMiniSandbox,
) -> Settings:
    """The session's settings: the app is configured with both channel sandboxes and both mini-program sandboxes
    from the start, the way `tzt serve` configures it in dev, so no test installs a channel into the running app."""
    database_url, redis_url = backing.database_url, backing.redis_url
    channels = data_dir / "payment-channels.json"
    channels.write_text(
        json.dumps({"wechat": wechat_sandbox.settings(), "alipay": alipay_sandbox.settings()})
    )
    mini_programs = data_dir / "mini-programs.json"
    mini_programs.write_text(
        json.dumps(sandbox_config(wechat_mini_sandbox.state_dir, alipay_mini_sandbox.state_dir, timeout_s=2))
    )
    return load_settings(
        {
            "TZT_ENV": "test",
            "TZT_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "MIGRATION_DATABASE_URL": backing.migration_database_url,
            "REDIS_URL": redis_url,
            "TZT_TRUSTED_PROXIES": "testclient",
            "TZT_LOG_LEVEL": "WARNING",
            "TZT_PAYMENT_CONFIG": str(channels),
            "TZT_MINI_PROGRAM_CONFIG": str(mini_programs),
        }
    )


class ApiClient(httpx.AsyncClient):
    """httpx on the app's own ASGI interface, in the tests' event loop, so tests and app share one loop."""

    app: Litestar


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, client_port: int = 50000, modules: Sequence[DomainModule] = MODULES
) -> AsyncIterator[ApiClient]:
    """An app of its own on these settings, started and stopped around the block: a test that needs other
    settings builds its own app instead of changing the session's."""
    app = create_app(settings, modules)
    # What the lifespan hook does, done here because httpx's ASGI transport sends no lifespan events (the
    # end-to-end test of `tzt serve` covers the real start-up).
    (await Services.create(settings, modules)).install(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("testclient", client_port))
        async with ApiClient(transport=transport, base_url="http://testserver.local") as api:
            api.app = app
            yield api
    finally:
        await app.state.services.close()


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[ApiClient]:
    async with serving(settings) as api:
        yield api


@pytest.fixture(scope="session")
def services(client: ApiClient) -> Services:
    return client.app.state.services  # type: ignore[no-any-return]


@pytest.fixture
async def db(services: Services) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for reading what the API stored (never for writing around it), as the application role."""
    async with services.pool.acquire() as conn:
        yield conn


@pytest.fixture(scope="session", autouse=True)
async def ledger_stays_consistent(services: Services) -> AsyncIterator[None]:
    """After every scenario of the session, the ledger's invariants hold (what `tzt ledger check` checks)."""
    yield
    async with services.pool.acquire() as conn:
        check = await services.payments.ledger.check(conn)
    assert check.ok, f"the ledger is inconsistent after the test session: {check}"


@pytest.fixture
async def empty_database(backing) -> AsyncIterator[str]:
    """A database of its own owned by the run's owner role, dropped afterwards: its URL as the owner."""
    name = f"tzt_empty_{uuid.uuid4().hex[:8]}"
    owner, _ = user_of(backing.migration_database_url)
    admin = await asyncpg.connect(backing.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        yield urlunsplit(urlsplit(backing.migration_database_url)._replace(path=f"/{name}"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedServices]:
    """A Redis server of the test's own, which it may stop and start again on the same port (an outage)."""
    with socket.socket() as sock:  # a port kept across a restart, where the apps' clients expect Redis back
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    redis_server = EmbeddedServices(tmp_path, redis_port=port)
    redis_server.start(want_postgres=False, want_redis=True, persistent_redis=False)
    try:
        yield redis_server
    finally:
        redis_server.stop()
