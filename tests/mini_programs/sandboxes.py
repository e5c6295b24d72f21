"""The two mini-program sandboxes as the tests drive them: what a user's phone does in WeChat and in Alipay.

Both run once per session as real servers (tests/conftest.py starts them, and the session's app is configured
with them from the start, as `tzt serve` configures it in dev)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mini_programs.sandbox import alipay, wechat

WECHAT_CITY, WECHAT_DEPARTMENT = wechat.DEMO_APP_IDS
ALIPAY_CITY, ALIPAY_DEPARTMENT = alipay.DEMO_APP_IDS


async def _control(base_url: str, method: str, path: str, body: dict[str, Any] | None, status: int) -> Any:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        answer = await http.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    return answer.json()


@dataclass
class WechatMiniSandbox:
    base_url: str
    state_dir: Path

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> Any:
        return await _control(self.base_url, method, path, body, status)

    async def login_code(self, app_id: str = WECHAT_CITY, **user: Any) -> dict[str, Any]:
        """What wx.login gives: {"code", "openid", "unionid"} (a new user unless `openid` is given)."""
        return await self.control("POST", "/_sandbox/codes", {"appid": app_id, **user})  # type: ignore[no-any-return]

    async def phone_code(self, phone: str, app_id: str = WECHAT_CITY, **extra: Any) -> str:
        answer = await self.control(
            "POST", "/_sandbox/phone-codes", {"appid": app_id, "phone": phone, **extra}
        )
        return str(answer["code"])

    async def fault(self, path: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"path": path, "mode": mode, "times": 1, **extra})


@dataclass
class AlipayMiniSandbox:
    base_url: str
    state_dir: Path

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200
    ) -> Any:
        return await _control(self.base_url, method, path, body, status)

    async def auth_code(self, app_id: str = ALIPAY_CITY, **user: Any) -> dict[str, Any]:
        """What my.getAuthCode gives: {"code", "user_id", "open_id"} (a new user unless `user_id` is given)."""
        return await self.control("POST", "/_sandbox/codes", {"app_id": app_id, **user})  # type: ignore[no-any-return]

    async def phone_response(self, phone: str, app_id: str = ALIPAY_CITY, **extra: Any) -> str:
        answer = await self.control(
            "POST", "/_sandbox/phone-responses", {"app_id": app_id, "phone": phone, **extra}
        )
        return str(answer["response"])

    async def fault(self, method: str, mode: str, **extra: Any) -> None:
        await self.control("POST", "/_sandbox/faults", {"method": method, "mode": mode, "times": 1, **extra})
