"""Builds the payment channel adapters from a JSON config file (`TZT_PAYMENT_CONFIG`), which `tzt serve` writes in
dev for the local sandboxes and operations provide in production (keys by file path, never inline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from payments.channels.base import PaymentChannel


def _resolve_files(section: dict[str, Any]) -> dict[str, Any]:
    """`<name>_file: path` becomes `<name>: the file's text`, so secrets stay in files (or mounted secrets)."""
    resolved = {}
    for key, value in section.items():
        if key.endswith("_file"):
            resolved[key[: -len("_file")]] = Path(value).read_text(encoding="utf-8").strip()
        else:
            resolved[key] = value
    return resolved


def build_channels(config_path: Path | None) -> dict[str, PaymentChannel]:
    if config_path is None or not config_path.exists():
        return {}
    config = {name: _resolve_files(section) for name, section in json.loads(config_path.read_text()).items()}
    channels: dict[str, PaymentChannel] = {}
    if "alipay" in config:
        from payments.channels.alipay.adapter import AlipayChannel, AlipayConfig

        if not config["alipay"].get("seller_id"):
            # Without it a notification signed for our app id but another seller's trade could be credited.
            raise ValueError(f"{config_path}: alipay.seller_id (the merchant's 2088… PID) is required")

        channels["alipay"] = AlipayChannel(AlipayConfig(**config["alipay"]))
    if "wechat" in config:
        channels["wechat"] = _wechat(config_path, config["wechat"])
    return channels


def _wechat(config_path: Path, section: dict[str, Any]) -> PaymentChannel:
    """A WeChat Pay merchant speaks API v2 (the default, wechatpy) or v3 (`"api_version": "v3"`, wechatpayv3):
    one adapter under the one channel name, so orders, refunds and reconciliation do not know which."""
    version = str(section.get("api_version", "v2"))
    if version == "v3":
        from payments.channels.wechat_v3 import WechatV3Channel, WechatV3Config

        return WechatV3Channel(WechatV3Config(**section))
    if version != "v2":
        raise ValueError(f"{config_path}: wechat.api_version is v2 or v3, not {version!r}")
    from payments.channels.wechat.adapter import WechatChannel, WechatConfig

    return WechatChannel(WechatConfig(**{k: v for k, v in section.items() if k != "api_version"}))
