"""The payment tests' fixtures: the channel sandboxes (started once per session by tests/conftest.py, the app
configured with them from the start), adapters pointed at them, and a payee."""

from __future__ import annotations

from typing import Any

import pytest

from payments.channels.wechat import WechatChannel
from payments.sandbox.launch import free_port
from tests.helpers import machine_credential
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

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
