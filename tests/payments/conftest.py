"""The payment tests' fixtures: the channel sandboxes (started once per session by tests/conftest.py, the app
configured with them from the start), adapters pointed at them, and a payee; the WeChat Pay v3 sandbox and an app
configured for it."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app_backend.composition.migrator import apply_migrations
from app_backend.kernel.settings import Settings, load_settings
from payments.channels.wechat import WechatChannel
from payments.sandbox.launch import free_port, running_sandbox
from tests.conftest import Backing, as_role, create_owned_database, drop_database_and_roles, serving
from tests.helpers import machine_credential
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox, WechatV3Sandbox

_free_port = free_port  # test_wechat_channel.py's name for it (a port where nothing listens)


@pytest.fixture(scope="session")
def sandbox(wechat_sandbox: WechatSandbox) -> WechatSandbox:
    """The WeChat Pay sandbox, as the adapter's own tests call it."""
    return wechat_sandbox


@pytest.fixture(scope="session")
def hmac_channel(wechat_sandbox: WechatSandbox) -> WechatChannel:
    return wechat_sandbox.channel()


@pytest.fixture
def wechat(wechat_sandbox: WechatSandbox) -> WechatSandbox:
    """The WeChat Pay sandbox the app pays through (its `wechat` channel)."""
    return wechat_sandbox


@pytest.fixture
def alipay(alipay_sandbox: AlipaySandbox) -> AlipaySandbox:
    """The Alipay sandbox the app pays through (its `alipay` channel)."""
    return alipay_sandbox


@pytest.fixture
async def payee(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["payments:refund"], kind="merchant")


# -- WeChat Pay v3: its sandbox, and an app of its own configured for it -------------------------------------------
#
# A merchant is configured for v2 or v3 under the one channel name `wechat`; the session's app is v2's. The v3 app
# has a database of its own (migrated as the session's is), so neither app's jobs or reconciliation ever ask the
# other API about the other's orders, and its ledger is checked on its own.


@pytest.fixture(scope="session")
def wechat_v3_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WechatV3Sandbox]:
    state = tmp_path_factory.mktemp("wechat-v3-sandbox")
    with running_sandbox("wechat_v3", state, log=state.parent / "wechat-v3-sandbox.log") as started:
        merchant = json.loads((state / "wechat_v3.json").read_text())
        assert merchant["base_url"] == started.base_url
        yield WechatV3Sandbox(started.base_url, merchant, state)


@pytest.fixture(scope="session")
def v3_settings(
    backing: Backing, tmp_path_factory: pytest.TempPathFactory, wechat_v3_sandbox: WechatV3Sandbox
) -> Iterator[Settings]:
    name = f"tzt_v3_{uuid.uuid4().hex[:10]}"
    owner, app = f"{name}_owner", f"{name}_app"
    owner_password, app_password = secrets.token_hex(16), secrets.token_hex(16)
    asyncio.run(create_owned_database(backing.admin_url, name, owner, owner_password))
    owner_url = as_role(backing.admin_url, name, owner, owner_password)
    database_url = as_role(backing.admin_url, name, app, app_password)
    asyncio.run(apply_migrations(owner_url, app_url=database_url))
    data_dir = tmp_path_factory.mktemp("tzt-v3-data")
    channels = data_dir / "payment-channels.json"
    channels.write_text(json.dumps({"wechat": wechat_v3_sandbox.settings()}))
    yield load_settings(
        {
            "TZT_ENV": "test",
            "TZT_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "MIGRATION_DATABASE_URL": owner_url,
            "REDIS_URL": backing.redis_url,
            "TZT_TRUSTED_PROXIES": "testclient",
            "TZT_LOG_LEVEL": "WARNING",
            "TZT_PAYMENT_CONFIG": str(channels),
        }
    )
    asyncio.run(drop_database_and_roles(backing.admin_url, name, [app, owner]))


@pytest.fixture(scope="session")
async def v3_client(v3_settings: Settings) -> AsyncIterator[Any]:
    """The app of a city whose WeChat Pay merchant is configured for API v3."""
    async with serving(v3_settings, client_port=50003) as api:
        yield api


@pytest.fixture(scope="session")
def v3_services(v3_client: Any) -> Any:
    return v3_client.app.state.services


@pytest.fixture
async def v3_payee(v3_client: Any, v3_services: Any) -> dict[str, Any]:
    return await machine_credential(v3_client, v3_services, ["payments:refund"], kind="merchant")
