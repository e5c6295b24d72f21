"""The channel sandboxes as the payment tests drive them: their test controls, and adapters pointed at them.

Each runs once per session as a real server: tests/conftest.py starts Alipay's and WeChat Pay v2's, and the session's
app is configured with them from the start, as `tzt serve` configures it in dev; tests/payments/conftest.py starts
WeChat Pay v3's and an app of its own configured for it (a merchant is configured for v2 or v3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from payments.channels.alipay import AlipayConfig
from payments.channels.wechat import WechatChannel, WechatConfig
from payments.channels.wechat_v3 import WechatV3Channel, WechatV3Config
from payments.sandbox.alipay import DEMO_APP_ID, DEMO_SELLER_ID
from payments.sandbox.keys import AlipayKeys

APP_ID = DEMO_APP_ID
SELLER_ID = DEMO_SELLER_ID
# The adapters' timeouts in tests: a sandbox fault of mode "timeout" is then seen within seconds.
WECHAT_TIMEOUT_S = 5.0
ALIPAY_TIMEOUT_S = 5.0


class WechatSandbox:
    def __init__(self, base_url: str, merchant: dict[str, Any], state_dir: Path) -> None:
        self.base_url = base_url
        self.merchant = merchant
        self.state_dir = state_dir

    def settings(self) -> dict[str, Any]:
        return {
            "appid": self.merchant["appid"],
            "mch_id": self.merchant["mch_id"],
            "api_key": self.merchant["api_key"],
            "api_base_url": self.base_url,
            "papay_plan_id": self.merchant["plan_id"],
            "timeout": WECHAT_TIMEOUT_S,
        }

    def channel(self, **overrides: Any) -> WechatChannel:
        return WechatChannel(WechatConfig(**{**self.settings(), **overrides}))

    async def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            answer = await http.request(method, path, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def fault(self, path: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"path": path, "mode": mode, "times": 1, **extra})


@dataclass
class AlipaySandbox:
    url: str
    state_dir: Path
    keys: AlipayKeys

    def config(self, **overrides: Any) -> AlipayConfig:
        config = AlipayConfig.from_keys_dir(
            self.state_dir, app_id=APP_ID, gateway_url=f"{self.url}/gateway.do", seller_id=SELLER_ID
        )
        return dataclasses.replace(config, **{"timeout_s": ALIPAY_TIMEOUT_S, **overrides})

    def settings(self) -> dict[str, Any]:
        """The channel's section of the app's payment config (keys by file, as operations provide them)."""
        return {
            "app_id": APP_ID,
            "seller_id": SELLER_ID,
            "app_private_key_file": str(self.state_dir / "app_private_key.pem"),
            "alipay_public_key_file": str(self.state_dir / "alipay_public_key.pem"),
            "gateway_url": f"{self.url}/gateway.do",
            "timeout_s": ALIPAY_TIMEOUT_S,
        }

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            answer = await http.request(method, path, json=body)
        assert answer.status_code == status, answer.text
        return answer.json()

    async def fault(self, method: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"method": method, "mode": mode, "times": 1, **extra})


class WechatV3Sandbox:
    """The WeChat Pay v3 sandbox (payments/sandbox/wechat_v3.py): the merchant it plays, by file as operations
    configure one, and its test controls."""

    def __init__(self, base_url: str, merchant: dict[str, Any], state_dir: Path) -> None:
        self.base_url = base_url
        self.merchant = merchant
        self.state_dir = state_dir

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The `wechat` section of a payment config for a v3 merchant."""
        return {
            "api_version": "v3",
            "appid": self.merchant["appid"],
            "mchid": self.merchant["mchid"],
            "cert_serial_no": self.merchant["cert_serial_no"],
            "private_key_file": self.merchant["private_key_file"],
            "apiv3_key_file": self.merchant["apiv3_key_file"],
            "api_base_url": self.base_url,
            "timeout": WECHAT_TIMEOUT_S,
            "transfer_scene_id": self.merchant["transfer_scene_id"],
            "transfer_scene_report_infos": self.merchant["transfer_scene_report_infos"],
            **overrides,
        }

    def channel(self, **overrides: Any) -> WechatV3Channel:
        """An adapter of its own (its own certificate cache), as build_channels makes it."""
        section = {k: v for k, v in self.settings(**overrides).items() if not k.endswith("_file")}
        for name in ("private_key", "apiv3_key"):
            section.setdefault(name, Path(self.settings()[f"{name}_file"]).read_text().strip())
        return WechatV3Channel(WechatV3Config(**section))

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            answer = await http.request(method, path, json=body)
        assert answer.status_code == status, answer.text
        return answer.json()

    async def fault(self, path: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"path": path, "mode": mode, "times": 1, **extra})

    async def pay(self, out_trade_no: str, **options: Any) -> dict[str, Any]:
        """Paid at the sandbox, not delivered: the signed notification {body, content_type, headers}."""
        answer = await self.control(
            "POST", f"/_sandbox/trades/{out_trade_no}/pay", {"deliver": False, **options}
        )
        return dict(answer["notification"])

    async def notification(self, out_trade_no: str, **options: Any) -> dict[str, Any]:
        answer = await self.control(
            "POST", f"/_sandbox/trades/{out_trade_no}/notification", {"deliver": False, **options}
        )
        return dict(answer["notification"])

    async def certificate_downloads(self) -> int:
        return int((await self.control("GET", "/_sandbox/platform-certificates"))["downloads"])
