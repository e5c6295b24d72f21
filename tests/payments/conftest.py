"""Payment sandboxes as real servers: started once per session as subprocesses, shared by the tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payments.channels.wechat import WechatChannel, WechatConfig

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_MODULE = ("payments.sandbox", "wechat")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    port = _free_port()
    state = tmp_path_factory.mktemp("wechat-sandbox")
    log = state / "sandbox.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *SANDBOX_MODULE, "--port", str(port), "--state-dir", str(state)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "_sandbox/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the WeChat sandbox did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    merchant = json.loads((state / "wechat.json").read_text())
    assert merchant["base_url"] == base
    try:
        yield Sandbox(base, merchant)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def hmac_channel(sandbox: Sandbox) -> WechatChannel:
    return sandbox.channel()
