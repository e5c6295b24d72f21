"""Settings of the Alipay channel: app id, the two keys, the gateway, timeouts and the withholding product."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PRODUCTION_GATEWAY = "https://openapi.alipay.com/gateway.do"


def _pem_body(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    return base64.b64decode("".join(line for line in lines if line and not line.startswith("-----")))


def normalize_private_key(text: str) -> str:
    """Any RSA private key Alipay's key tool produces (PKCS#1 or PKCS#8, PEM or bare base64) as the PKCS#1 PEM
    alipay-sdk-python needs."""
    text = text.strip()
    try:
        if text.startswith("-----"):
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        else:
            key = serialization.load_der_private_key(_pem_body(text), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"app_private_key is not an RSA private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("app_private_key is not an RSA key")
    if key.key_size < 2048:
        raise ValueError("app_private_key must be at least 2048 bits for RSA2")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def normalize_public_key(text: str) -> str:
    """Alipay's public key (PEM or the bare base64 Alipay shows) as a SubjectPublicKeyInfo PEM."""
    text = text.strip()
    try:
        if text.startswith("-----"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(_pem_body(text))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"alipay_public_key is not an RSA public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("alipay_public_key is not an RSA key")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(frozen=True)
class AlipayConfig:
    """Everything the adapter needs. Keys are PEM texts (normalized on construction).

    `timeout_s` bounds every gateway call (connect, write, read); past it the outcome is unknown and the adapter
    raises ChannelUnavailable. The `withholding_*` fields describe the periodic-deduction product the merchant
    signed with Alipay (周期扣款: personal product CYCLE_PAY_AUTH_P, deduction product CYCLE_PAY_AUTH)."""

    app_id: str
    app_private_key: str
    alipay_public_key: str
    gateway_url: str = PRODUCTION_GATEWAY
    timeout_s: float = 15.0
    charset: str = "utf-8"
    # The merchant's 2088… PID: sent with every order, and every trade notification must name it (an app id can
    # act for other sellers too). The payment configuration requires it (payments/channels/configured.py).
    seller_id: str | None = None
    mini_app_id: str | None = None  # op_app_id of the mini program, when it differs from app_id
    bill_type: str = "trade"
    withholding_product_code: str = "CYCLE_PAY_AUTH"
    withholding_personal_product_code: str = "CYCLE_PAY_AUTH_P"
    withholding_sign_scene: str = "INDUSTRY|DIGITAL_MEDIA"
    withholding_period_type: str = "DAY"
    withholding_period: int = 1
    withholding_single_amount_fen: int = 50_000  # the most one deduction may take
    sign_access_channel: str = "ALIPAYAPP"

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ValueError("app_id is required")
        if not self.gateway_url.startswith(("https://", "http://")):
            raise ValueError("gateway_url must be an http(s) URL")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.seller_id is not None and not re.fullmatch(r"2088\d{12}", self.seller_id):
            raise ValueError("seller_id must be the merchant's PID: 2088 and 12 more digits")
        if self.charset.lower() not in ("utf-8", "gbk", "gb2312", "gb18030"):
            raise ValueError("charset must be utf-8 or a GB charset")
        object.__setattr__(self, "app_private_key", normalize_private_key(self.app_private_key))
        object.__setattr__(self, "alipay_public_key", normalize_public_key(self.alipay_public_key))

    @classmethod
    def from_keys_dir(
        cls, keys_dir: str | os.PathLike[str], *, app_id: str, gateway_url: str, **options: Any
    ) -> AlipayConfig:
        """Read `app_private_key.pem` and `alipay_public_key.pem` from a directory such as the sandbox's
        (see payments.sandbox.keys)."""
        folder = Path(keys_dir)
        return cls(
            app_id=app_id,
            app_private_key=(folder / "app_private_key.pem").read_text("ascii"),
            alipay_public_key=(folder / "alipay_public_key.pem").read_text("ascii"),
            gateway_url=gateway_url,
            **options,
        )

    def __repr__(self) -> str:  # never print the private key
        return f"AlipayConfig(app_id={self.app_id!r}, gateway_url={self.gateway_url!r}, timeout_s={self.timeout_s})"
