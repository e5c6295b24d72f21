"""Settings of one WeChat Pay API v3 merchant."""

from __future__ import annotations

from dataclasses import dataclass

PRODUCTION_GATEWAY = "https://api.mch.weixin.qq.com"


@dataclass(frozen=True)
class WechatV3Config:
    """`private_key` is the merchant API certificate's private key (PEM) and `cert_serial_no` that certificate's
    serial number (hex, as the merchant platform shows it); `apiv3_key` is the 32-character APIv3 key that
    encrypts notifications and platform certificates. In the payment config they come by file
    (`private_key_file`, `apiv3_key_file`), never inline.

    `api_base_url` is the gateway (the real one by default, a local sandbox in dev and tests). Platform
    certificates are downloaded when needed and again when a signature names a serial we do not hold, at most
    `certificate_refreshes` times per `certificate_refresh_interval_s` and once per unknown serial in that
    time, and at the latest after `certificate_max_age_s`."""

    appid: str
    mchid: str
    cert_serial_no: str
    private_key: str
    apiv3_key: str
    api_base_url: str = PRODUCTION_GATEWAY
    timeout: float = 10.0
    client_ip: str = "127.0.0.1"
    refund_notify_url: str | None = None
    certificate_refresh_interval_s: float = 60.0
    certificate_refreshes: int = 3
    certificate_max_age_s: float = 12 * 3600.0
    notification_max_skew_s: float = 300.0
    api_version: str = "v3"

    def __post_init__(self) -> None:
        if self.api_version != "v3":
            raise ValueError(f"api_version must be v3 here, not {self.api_version!r}")
        for name in ("appid", "mchid", "cert_serial_no", "private_key", "apiv3_key"):
            if not getattr(self, name):
                raise ValueError(f"wechat (v3): {name} is required")
        if len(self.apiv3_key.encode("utf-8")) != 32:
            raise ValueError("wechat (v3): apiv3_key must be 32 bytes (the APIv3 key, not the v2 API key)")
        if not self.api_base_url.startswith(("http://", "https://")):
            raise ValueError("wechat (v3): api_base_url must be an http(s) URL")
        if self.timeout <= 0 or self.certificate_refresh_interval_s < 0 or self.certificate_refreshes < 1:
            raise ValueError("wechat (v3): timeouts and refresh bounds must be positive")

    @property
    def gateway(self) -> str:
        """The base URL without a trailing slash: wechatpayv3 appends paths that start with '/'."""
        return self.api_base_url.rstrip("/")
