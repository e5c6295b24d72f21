"""Builds the payment channel adapters from a JSON config file (`TZT_PAYMENT_CONFIG`), which `tzt serve` writes in
dev for the local sandboxes and operations provide in production (keys by file path, never inline)."""

from __future__ import annotations

import json

from app_backend.settings import Settings
from payments.channels.base import PaymentChannel


def build_channels(settings: Settings) -> dict[str, PaymentChannel]:
    if settings.payment_config is None or not settings.payment_config.exists():
        return {}
    config = json.loads(settings.payment_config.read_text())
    channels: dict[str, PaymentChannel] = {}
    if "alipay" in config:
        from payments.channels.alipay.adapter import AlipayChannel, AlipayConfig

        channels["alipay"] = AlipayChannel(AlipayConfig(**config["alipay"]))
    if "wechat" in config:
        from payments.channels.wechat.adapter import WechatChannel, WechatConfig

        channels["wechat"] = WechatChannel(WechatConfig(**config["wechat"]))
    return channels
