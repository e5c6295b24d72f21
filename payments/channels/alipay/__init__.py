"""The Alipay channel adapter (alipay-sdk-python for models and RSA2 signatures, httpx for transport)."""

from payments.channels.alipay.adapter import AlipayChannel
from payments.channels.alipay.config import AlipayConfig
from payments.channels.alipay.errors import AlipayInvalidResponse, AlipayRefused

__all__ = ["AlipayChannel", "AlipayConfig", "AlipayInvalidResponse", "AlipayRefused"]
