"""WeChat Pay API v2 (wechatpy): the channel adapter and its configuration."""

from payments.channels.wechat.adapter import WechatChannel
from payments.channels.wechat.config import WechatConfig
from payments.channels.wechat.errors import BillError, InvalidResponse, WechatError

__all__ = ["BillError", "InvalidResponse", "WechatChannel", "WechatConfig", "WechatError"]
