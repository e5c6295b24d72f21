"""WeChat Pay API v3 (wechatpayv3): the channel adapter and its configuration. The v2 adapter (wechat/) stays for
merchants configured for v2; a merchant's `api_version` picks one."""

from payments.channels.wechat_v3.adapter import WechatV3Channel, WechatV3Error
from payments.channels.wechat_v3.config import WechatV3Config

__all__ = ["WechatV3Channel", "WechatV3Config", "WechatV3Error"]
