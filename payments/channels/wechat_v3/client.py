"""wechatpayv3's async client, pointed at our gateway and holding the platform certificates itself.

Three things of the SDK's core are replaced here, on our instance only:

- the gateway: the SDK keeps its base URL in the instance attribute `_gate_way` (every request and the bill's
  download URL go through it); it is set from the config, so a local sandbox is just another URL;
- the platform certificates: the SDK empties its list before each download, keeps nothing when a download fails,
  and downloads again on every answer or notification that names a serial it lacks (so anyone can make us call
  WeChat once per forged request). Here a download replaces the list only when it succeeds, each certificate is
  decrypted with the APIv3 key (AES-256-GCM: a certificate that does not decrypt is not WeChat's) and must be in
  its validity period, and an unknown serial triggers a download at most once per serial and a few times per
  interval;
- the answer check: every 2xx answer's signature is verified against the certificate its Wechatpay-Serial names,
  and a failure raises InvalidResponse (an answer we cannot trust: the outcome is unknown)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.x509 import Certificate
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType
from wechatpayv3.async_.core import AsyncCore
from wechatpayv3.utils import aes_decrypt, load_certificate, rsa_verify

from payments.channels.wechat.errors import InvalidResponse
from payments.channels.wechat_v3.config import WechatV3Config

log = logging.getLogger(__name__)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
_REMEMBERED_SERIALS = 256


class SignatureRefused(Exception):
    """A signed message (an answer or a notification) that does not verify; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def header(headers: Mapping[str, str], name: str) -> str:
    """A header by name whatever its case (httpx's headers ignore case; a plain dict may not)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value or ""


def serial_number(serial_hex: str) -> int | None:
    try:
        return int(serial_hex, 16) if serial_hex and len(serial_hex) <= 64 else None
    except ValueError:
        return None


class PlatformCore(AsyncCore):
    def __init__(self, config: WechatV3Config) -> None:
        super().__init__(
            mchid=config.mchid,
            cert_serial_no=config.cert_serial_no,
            private_key=config.private_key,
            apiv3_key=config.apiv3_key,
            timeout=config.timeout,
        )
        self._gate_way = config.gateway
        # The SDK opens its HTTP client in `async with`; a channel lives as long as the process, so it is opened
        # here (httpx binds it to the event loop on first use).
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)), trust_env=False
        )
        self._config = config
        self._fetched_at: float | None = None
        self._recent_fetches: deque[float] = deque()
        self._asked: OrderedDict[int, float] = OrderedDict()  # unknown serials a download was made for
        self._lock = asyncio.Lock()
        self.downloads = 0  # certificate downloads made (operations' metric; the tests' bound)

    # -- platform certificates -------------------------------------------------------------------------------

    @property
    def certificates(self) -> list[Certificate]:
        return list(self._certificates)

    def _find(self, number: int) -> Certificate | None:
        return next((c for c in self._certificates if c.serial_number == number), None)

    def _stale(self) -> bool:
        return (
            self._fetched_at is None
            or time.monotonic() - self._fetched_at > self._config.certificate_max_age_s
        )

    def _may_download_for(self, number: int) -> bool:
        """Whether an unknown serial may trigger a download now: never for a serial already looked for within the
        interval, and at most `certificate_refreshes` downloads per interval whatever the serials."""
        now = time.monotonic()
        interval = self._config.certificate_refresh_interval_s
        while self._recent_fetches and now - self._recent_fetches[0] > interval:
            self._recent_fetches.popleft()
        asked = self._asked.get(number)
        if asked is not None and now - asked <= interval:
            return False
        return len(self._recent_fetches) < self._config.certificate_refreshes

    def _remember(self, number: int) -> None:
        self._asked[number] = time.monotonic()
        self._asked.move_to_end(number)
        while len(self._asked) > _REMEMBERED_SERIALS:
            self._asked.popitem(last=False)

    async def certificate(self, serial_hex: str) -> Certificate | None:
        """The platform certificate with this serial: held, or downloaded when the serial is new to us (within
        the bounds) or the certificates are older than their maximum age."""
        number = serial_number(serial_hex)
        if number is None:
            return None
        found = self._find(number)
        if found is not None and not self._stale():
            return found
        if found is None and not self._may_download_for(number):
            return None
        async with self._lock:  # requests arriving together share one download
            found = self._find(number)
            if found is None and self._may_download_for(number):
                self._remember(number)
                await self._update_certificates()
            elif self._stale():
                await self._update_certificates()
        return self._find(number)

    async def encryption_certificate(self) -> Certificate | None:
        """The platform certificate sensitive fields are encrypted for (the one valid longest, which is also the
        one the SDK names in Wechatpay-Serial): downloaded first when we hold none or ours are too old."""
        if not self._certificates or self._stale():
            async with self._lock:
                if not self._certificates or self._stale():
                    await self._update_certificates()
        return self._last_certificate() if self._certificates else None

    def _last_certificate(self) -> Certificate:
        # The SDK's own reads the deprecated naive `not_valid_after`; the choice is the same.
        return max(self._certificates, key=lambda c: c.not_valid_after_utc)

    async def _update_certificates(self) -> None:
        """GET /v3/certificates. The list is replaced only by a successful download with at least one valid
        certificate; a failed one keeps what we hold."""
        self._recent_fetches.append(time.monotonic())
        self.downloads += 1
        try:
            status, text = await self.request("/v3/certificates", skip_verify=True)
        except httpx.HTTPError as exc:
            log.warning("wechat v3: platform certificate download failed: %s", type(exc).__name__)
            return
        if status != 200:
            log.warning("wechat v3: platform certificate download answered HTTP %s", status)
            return
        try:
            listed = json.loads(text).get("data") or []
        except (ValueError, AttributeError):
            log.warning("wechat v3: the platform certificate list is not JSON")
            return
        now = dt.datetime.now(dt.UTC)
        fresh: list[Certificate] = []
        for entry in listed:
            certificate = self._decrypted(entry)
            if certificate is None:
                continue
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                continue
            fresh.append(certificate)
        if not fresh:
            log.warning("wechat v3: no platform certificate in the download decrypts and is valid")
            return
        self._certificates = fresh
        self._fetched_at = time.monotonic()

    def _decrypted(self, entry: Any) -> Certificate | None:
        """One entry of the list, decrypted with the APIv3 key; None when it does not decrypt (not WeChat's),
        is not a certificate, or its serial is not the one it is listed under."""
        if not isinstance(entry, dict) or not isinstance(entry.get("encrypt_certificate"), dict):
            return None
        sealed = entry["encrypt_certificate"]
        if sealed.get("algorithm") != "AEAD_AES_256_GCM":
            return None
        try:
            pem = aes_decrypt(
                nonce=str(sealed.get("nonce", "")),
                ciphertext=str(sealed.get("ciphertext", "")),
                associated_data=str(sealed.get("associated_data", "")),
                apiv3_key=self._apiv3_key,
            )
        except ValueError:  # not base64, a nonce of the wrong size
            return None
        certificate = load_certificate(pem) if pem else None
        if certificate is None or certificate.serial_number != serial_number(str(entry.get("serial_no", ""))):
            return None
        return certificate

    # -- signatures ------------------------------------------------------------------------------------------

    async def verify(self, headers: Mapping[str, str], body: str) -> None:
        """Raises SignatureRefused unless `body` is signed by a platform certificate we hold (or may download)."""
        kind = header(headers, "Wechatpay-Signature-Type")
        if kind and kind != SIGNATURE_TYPE:
            raise SignatureRefused(f"signature type {kind!r}")
        serial = header(headers, "Wechatpay-Serial")
        certificate = await self.certificate(serial)
        if certificate is None:
            raise SignatureRefused("signed by a platform certificate we do not know")
        timestamp, nonce = header(headers, "Wechatpay-Timestamp"), header(headers, "Wechatpay-Nonce")
        signature = header(headers, "Wechatpay-Signature")
        if not (timestamp and nonce and signature):
            raise SignatureRefused("no signature headers")
        if not rsa_verify(timestamp, nonce, body, signature, certificate.public_key()):
            raise SignatureRefused("bad signature")

    async def _verify_signature_async(self, headers: Mapping[str, str], body: str) -> bool:
        try:
            await self.verify(headers, body)
        except SignatureRefused as exc:
            raise InvalidResponse(f"wechat v3: the answer's signature: {exc.reason}") from None
        return True

    def decrypt_resource(self, resource: Mapping[str, Any]) -> str | None:
        """A notification's resource (AEAD_AES_256_GCM with the APIv3 key); None when its tag does not verify."""
        try:
            return aes_decrypt(
                nonce=str(resource.get("nonce", "")),
                ciphertext=str(resource.get("ciphertext", "")),
                associated_data=str(resource.get("associated_data") or ""),
                apiv3_key=self._apiv3_key,
            )
        except ValueError:
            return None

    async def aclose(self) -> None:
        await self._client.aclose()


class V3Client(AsyncWeChatPay):
    """AsyncWeChatPay with our core. Its API methods (pay, query, close, refund, query_refund, trade_bill,
    download_bill, mch_transfer_bills, mch_transfer_bills_query, sign) are used as they are."""

    def __init__(self, config: WechatV3Config) -> None:
        super().__init__(
            wechatpay_type=WeChatPayType.MINIPROG,
            mchid=config.mchid,
            private_key=config.private_key,
            cert_serial_no=config.cert_serial_no,
            appid=config.appid,
            apiv3_key=config.apiv3_key,
            timeout=config.timeout,
        )
        self.core = PlatformCore(config)
        self._core = self.core
