"""Alipay's mini-program APIs through alipay-sdk-python: `alipay.system.oauth.token` for the `my.getAuthCode`
code, and the check and decryption of what `my.getPhoneNumber` hands the mini-program.

As in payments' Alipay channel, the SDK builds and signs every request (its request classes, its RSA2 signer) and
httpx sends it: the SDK's own `execute` is synchronous and fails on a gateway URL with a port. Every answer's
signature is checked over the exact bytes of the object it signs before anything in it is believed.

The phone: my.getPhoneNumber gives the mini-program `{"response": <base64 AES-CBC ciphertext>, "sign", "sign_type",
"encrypt_type": "AES"}`; the signature (RSA2 by Alipay's key) covers the ciphertext in double quotes, and the
plaintext is `{"code": "10000", "mobile": …}`. The SDK's `EncryptUtils.decrypt_content` is the same AES-CBC with a
zero IV, but it passes the IV as text, which current pycryptodome refuses; `cryptography` decrypts here instead.

What goes wrong at Alipay is a 503 for the resident, never a 500; a code Alipay refuses is a 401 naming `code`.
Only the app id and Alipay's codes are logged."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
import types
from typing import Any
from urllib.parse import parse_qsl, urlencode

import alipay.aop.api.DefaultAlipayClient as _sdk_client_module
import httpx
import msgspec
import structlog
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.constant.ParamConstants import COMMON_PARAM_KEYS
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayOpenAppMiniTemplatemessageSendModel import (
    AlipayOpenAppMiniTemplatemessageSendModel,
)
from alipay.aop.api.request.AlipayOpenAppMiniTemplatemessageSendRequest import (
    AlipayOpenAppMiniTemplatemessageSendRequest,
)
from alipay.aop.api.request.AlipaySystemOauthTokenRequest import AlipaySystemOauthTokenRequest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.errors import DomainError, invalid_field
from mini_programs.config import AlipayApp
from mini_programs.refusals import code_refused, unavailable
from mini_programs.schemas import SendOutcome

_log = structlog.get_logger("mini_programs.alipay")
_METHOD = "alipay.system.oauth.token"
_SEND = "alipay.open.app.mini.templatemessage.send"
# Alipay's user ids are 2088 and twelve digits; apps created since 2023 see an open_id instead.
_USER_ID = re.compile(r"^2088\d{12}$")
# What templatemessage.send refuses because the user holds no subscription to the template.
_NOT_SUBSCRIBED = frozenset({"USER_NOT_SUBSCRIBED", "USER_TEMPLATE_NOT_SUBSCRIBED"})


class _BeijingClock(dt.datetime):
    """`datetime.now()` in Beijing time, whatever the host's zone (the SDK stamps requests with local time)."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _BeijingClock:
        if tz is not None:
            return super().now(tz)
        return super().now(BUSINESS_TZ).replace(tzinfo=None)


# The same rebinding as payments' Alipay channel: only the SDK module's name `datetime` changes.
_sdk_client_module.datetime = types.SimpleNamespace(datetime=_BeijingClock)


class AlipayGrant(msgspec.Struct, frozen=True):
    """Who an auth code belongs to: `open_id` for apps created since 2023, `user_id` for older ones (both may
    come); `access_token` is the user's grant to this app."""

    access_token: str
    user_id: str | None = None
    open_id: str | None = None


def _public_key(pem: str) -> rsa.RSAPublicKey:
    text = pem.strip()
    if not text.startswith("-----"):
        text = "-----BEGIN PUBLIC KEY-----\n" + text + "\n-----END PUBLIC KEY-----"
    key = serialization.load_pem_public_key(text.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("alipay_public_key is not an RSA key")
    return key


def _verify(key: rsa.RSAPublicKey, content: bytes, signature_b64: str) -> bool:
    """SHA256withRSA only (RSA2): the SDK's check would also take an RSA-SHA1 signature."""
    try:
        key.verify(
            base64.b64decode(signature_b64, validate=True), content, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def signed_object(raw: bytes, method: str, key: rsa.RSAPublicKey) -> tuple[str, dict[str, Any]]:
    """(the answer's key, `<method>_response` or `error_response`, and its object) once the signature over the
    object's exact bytes verifies; ValueError otherwise. What is returned is decoded from the signed bytes."""
    text = raw.decode("utf-8")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    name = method.replace(".", "_") + "_response"
    if name not in document:
        name = "error_response"
    sign = document.get("sign")
    if name not in document or not isinstance(sign, str):
        raise ValueError("no signed answer")
    match = re.search(r'"' + re.escape(name) + r'"\s*:\s*', text)
    if match is None:
        raise ValueError("cannot locate the answer")
    found, end = json.JSONDecoder().raw_decode(text, match.end())
    if not isinstance(found, dict) or found != document[name]:
        raise ValueError("ambiguous answer")
    if not _verify(key, text[match.end() : end].encode("utf-8"), sign):
        raise ValueError("signature refused")
    return name, found


class AlipayMiniProgram:
    """One configured Alipay mini-program."""

    def __init__(self, app: AlipayApp, http: httpx.AsyncClient) -> None:
        self.app = app
        config = AlipayClientConfig()
        config.server_url = app.gateway_url
        config.app_id = app.app_id
        config.app_private_key = app.app_private_key
        config.alipay_public_key = app.alipay_public_key
        config.sign_type = "RSA2"
        config.charset = "utf-8"
        self._sdk = DefaultAlipayClient(config)
        self._alipay_key = _public_key(app.alipay_public_key)
        self._aes_key = base64.b64decode(app.aes_key)
        if len(self._aes_key) not in (16, 24, 32):
            raise ValueError(f"alipay app {app.app_id}: aes_key is not an AES key")
        self._http = http

    async def _call(self, request: Any) -> tuple[str, dict[str, Any]]:
        method = request.get_params()["method"]
        # Signing parses the PEM in pure Python (tens of milliseconds): off the event loop.
        signed = str(await asyncio.to_thread(self._sdk.sdk_execute, request))
        pairs = parse_qsl(signed, keep_blank_values=True)
        url = self.app.gateway_url + "?" + urlencode([(k, v) for k, v in pairs if k in COMMON_PARAM_KEYS])
        form = urlencode([(k, v) for k, v in pairs if k not in COMMON_PARAM_KEYS])
        try:
            async with asyncio.timeout(self.app.timeout_s):
                answer = await self._http.post(
                    url,
                    content=form.encode("ascii"),
                    headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
                    timeout=self.app.timeout_s,
                )
        except (TimeoutError, httpx.HTTPError) as exc:
            _log.warning("alipay unreachable", app_id=self.app.app_id, call=method, error=type(exc).__name__)
            raise unavailable("Alipay") from None
        if answer.status_code != 200:
            _log.warning("alipay unreachable", app_id=self.app.app_id, call=method, status=answer.status_code)
            raise unavailable("Alipay")
        try:
            return signed_object(answer.content, method, self._alipay_key)
        except (ValueError, UnicodeDecodeError) as exc:
            _log.warning("alipay answer refused", app_id=self.app.app_id, call=method, reason=str(exc))
            raise unavailable("Alipay") from None

    async def oauth_token(self, code: str) -> AlipayGrant:
        """The user behind a `my.getAuthCode` code; the code is spent."""
        request = AlipaySystemOauthTokenRequest()
        request.grant_type = "authorization_code"
        request.code = code
        name, data = await self._call(request)
        if name == "error_response" or data.get("code") not in (None, "10000"):
            sub_code = str(data.get("sub_code", ""))
            _log.warning(
                "alipay refused",
                app_id=self.app.app_id,
                call=_METHOD,
                code=data.get("code"),
                sub_code=sub_code,
            )
            if sub_code == "isv.code-invalid":
                raise code_refused(
                    "mini-code-invalid", "code", "invalid, expired or already used; call my.getAuthCode again"
                )
            raise unavailable("Alipay", rate_limited="limit" in sub_code)
        try:
            grant = msgspec.convert(data, AlipayGrant)
        except msgspec.ValidationError:
            grant = None
        if grant is None or not (grant.open_id or grant.user_id):
            _log.warning("alipay answer unknown", app_id=self.app.app_id, call=_METHOD)
            raise unavailable("Alipay")
        return grant

    def phone_number(self, phone_response: str) -> str:
        """The mobile number in what my.getPhoneNumber gave the mini-program, once Alipay's signature over it
        verifies; a 400 naming `phone_response` otherwise."""
        try:
            answer = json.loads(phone_response)
        except ValueError:
            raise invalid_field("phone_response", "not the JSON text my.getPhoneNumber returns") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("response"), str):
            raise invalid_field("phone_response", "no response in it")
        if answer.get("sign_type", "RSA2") != "RSA2" or answer.get("encrypt_type", "AES") != "AES":
            raise invalid_field("phone_response", "sign_type must be RSA2 and encrypt_type AES")
        ciphertext = answer["response"]
        sign = answer.get("sign")
        if not isinstance(sign, str) or not _verify(self._alipay_key, f'"{ciphertext}"'.encode(), sign):
            raise invalid_field("phone_response", "Alipay's signature does not verify")
        try:
            decryptor = Cipher(algorithms.AES(self._aes_key), modes.CBC(b"\0" * 16)).decryptor()
            padded = decryptor.update(base64.b64decode(ciphertext, validate=True)) + decryptor.finalize()
            unpadder = sym_padding.PKCS7(128).unpadder()
            plain = json.loads((unpadder.update(padded) + unpadder.finalize()).decode("utf-8"))
        except (ValueError, binascii.Error):
            raise invalid_field("phone_response", "cannot be decrypted with this app's AES key") from None
        if not isinstance(plain, dict) or plain.get("code") != "10000" or not plain.get("mobile"):
            raise DomainError(
                422,
                "phone-not-granted",
                "phone_response: the user did not grant the phone number",
                extra={"errors": [{"field": "phone_response", "message": "not granted"}]},
            )
        return str(plain["mobile"])

    async def send_template(
        self, subject: str, template_id: str, values: dict[str, str], page: str | None
    ) -> SendOutcome:
        """One subscribe (template) message to the user (`alipay.open.app.mini.templatemessage.send`). Never
        raises: what Alipay answered is the outcome; a 20000 (busy, flow limit) or no verified answer is a fault."""
        model = AlipayOpenAppMiniTemplatemessageSendModel()
        if _USER_ID.match(subject):
            model.to_user_id = subject
        else:
            model.to_open_id = subject
        model.user_template_id = template_id
        if page:
            model.page = page
        model.data = json.dumps({k: {"value": v} for k, v in values.items()}, ensure_ascii=False)
        try:
            _, data = await self._call(AlipayOpenAppMiniTemplatemessageSendRequest(biz_model=model))
        except DomainError:
            return SendOutcome("fault", code="unreachable")
        code, sub_code = str(data.get("code", "")), str(data.get("sub_code", ""))
        if code == "10000":
            return SendOutcome("sent")
        _log.warning("alipay refused", app_id=self.app.app_id, call=_SEND, code=code, sub_code=sub_code)
        if code in ("40001", "40002", "40004", "20001"):
            return SendOutcome("refused", code=sub_code or code, grant_gone=sub_code in _NOT_SUBSCRIBED)
        return SendOutcome("fault", code=sub_code or code)
