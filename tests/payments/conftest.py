"""Payment sandboxes as real servers: started once per session as subprocesses, shared by the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.channels.wechat import WechatChannel, WechatConfig
from payments.sandbox.launch import free_port, running_sandbox

_free_port = free_port  # test_wechat_channel.py's name for it (a port where nothing listens)


class Sandbox:
    def __init__(self, base_url: str, merchant: dict[str, str]) -> None:
        self.base_url = base_url
        self.merchant = merchant

    def channel(self, **overrides: Any) -> WechatChannel:
        settings: dict[str, Any] = {
            "appid": self.merchant["appid"],
            "mch_id": self.merchant["mch_id"],
            "api_key": self.merchant["api_key"],
            "api_base_url": self.base_url,
            "papay_plan_id": self.merchant["plan_id"],
            "timeout": 5.0,
        }
        settings.update(overrides)
        return WechatChannel(WechatConfig(**settings))

    async def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            answer = await http.request(method, path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def fault(self, path: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"path": path, "mode": mode, "times": 1, **extra})


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running_sandbox("wechat", tmp_path_factory.mktemp("wechat-sandbox")) as started:
        base = started.base_url + "/"
        merchant = json.loads((started.state_dir / "wechat.json").read_text())
        assert merchant["base_url"] == base
        yield Sandbox(base, merchant)


@pytest.fixture(scope="session")
def hmac_channel(sandbox: Sandbox) -> WechatChannel:
    return sandbox.channel()
