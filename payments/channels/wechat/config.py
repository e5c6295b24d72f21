"""Settings of one WeChat Pay v2 merchant."""

from __future__ import annotations

from dataclasses import dataclass

SIGN_TYPES = ("HMAC-SHA256", "MD5")
PRODUCTION_BASE_URL = "https://api.mch.weixin.qq.com/"


@dataclass(frozen=True)
class WechatConfig:
    """`api_key` is the merchant's API v2 key (32 characters), never the mini program's app secret.

    `mch_cert`/`mch_key` are the paths of the merchant API certificate and its key (PEM): the real gateway wants
    them for refunds (secapi/...); a local sandbox over plain http does not. `client_ip` is the server's own IP,
    sent where WeChat asks for the caller's address and the order has none (native orders, papay deductions).
    `papay_plan_id` is the withholding template (contract plan) of transit ride-first-pay-later."""

    appid: str
    mch_id: str
    api_key: str
    sign_type: str = "HMAC-SHA256"
    api_base_url: str = PRODUCTION_BASE_URL
    mch_cert: str | None = None
    mch_key: str | None = None
    timeout: float = 10.0
    client_ip: str = "127.0.0.1"
    refund_notify_url: str | None = None
    papay_plan_id: str | None = None
    papay_display_account: str = "泰州通"

    def __post_init__(self) -> None:
        if self.sign_type not in SIGN_TYPES:
            raise ValueError(f"sign_type must be one of {SIGN_TYPES}, not {self.sign_type!r}")
        if not (self.appid and self.mch_id and self.api_key):
            raise ValueError("appid, mch_id and api_key are required")
        if bool(self.mch_cert) != bool(self.mch_key):
            raise ValueError("mch_cert and mch_key go together")
        if not self.api_base_url.startswith(("http://", "https://")):
            raise ValueError("api_base_url must be an http(s) URL")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def base_url(self) -> str:
        """The base URL with the trailing slash wechatpy concatenates endpoints to."""
        return self.api_base_url if self.api_base_url.endswith("/") else self.api_base_url + "/"

    @property
    def is_production_gateway(self) -> bool:
        return self.base_url.startswith(("https://api.mch.weixin.qq.com/", "https://api2.mch.weixin.qq.com/"))
