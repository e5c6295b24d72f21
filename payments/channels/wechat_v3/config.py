"""Settings of one WeChat Pay API v3 merchant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    time, and at the latest after `certificate_max_age_s`.

    Payouts (商家转账, `POST /v3/fund-app/mch-transfer/transfer-bills`) need the product signed on the merchant
    platform and one of its transfer scenes granted: `transfer_scene_id` is that scene's id (1000 现金营销, 1002
    佣金报酬, ... as the platform shows it), `transfer_scene_report_infos` the scene's report fields
    ([{"info_type": "岗位类型", "info_content": "商户"}, ...], each field the scene asks for), and
    `transfer_user_recv_perception` what the payee's app shows as the reason (one the scene allows; the scene's
    default when absent). Without `transfer_scene_id` the merchant sends no transfers and its payees are paid by
    bank."""

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
    transfer_scene_id: str | None = None
    transfer_scene_report_infos: Sequence[Mapping[str, str]] = ()
    transfer_user_recv_perception: str | None = None
    transfer_notify_url: str | None = None

    def __post_init__(self) -> None:
        # Kept as a tuple of pairs: the config is frozen and comes from JSON lists.
        object.__setattr__(
            self, "transfer_scene_report_infos", _report_infos(self.transfer_scene_report_infos)
        )
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


def _report_infos(given: Any) -> tuple[Mapping[str, str], ...]:
    if not isinstance(given, (list, tuple)):
        raise ValueError("wechat (v3): transfer_scene_report_infos is a list of {info_type, info_content}")
    infos = []
    for entry in given:
        if not (
            isinstance(entry, Mapping)
            and set(entry) == {"info_type", "info_content"}
            and all(isinstance(v, str) and v for v in entry.values())
        ):
            raise ValueError("wechat (v3): each transfer scene report info is {info_type, info_content}")
        infos.append({"info_type": entry["info_type"], "info_content": entry["info_content"]})
    return tuple(infos)
