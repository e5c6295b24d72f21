"""The production connectors (backend name `aliyun`): Alibaba Cloud's SMS service for texts, and its ID Verification
service (cloudauth) for the population registry, the carriers' three-factor check and face liveness
(docs/decisions/0016-identity-vendors.md). Each call goes through the vendor's official SDK, which signs it with
the access key (ACS3-HMAC-SHA256); tests point the SDK at a local server speaking the same protocol
(app_backend/identity/aliyun_sandbox.py).

Whatever goes wrong on the vendor's side (unreachable, slow past the timeout, refusing our key, an answer we do not
know) is a 503 `dependency-unavailable` for the resident, never a 500, and nothing is logged but the action and the
vendor's code: no phone, name or ID number, and never the key."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from alibabacloud_cloudauth20190307 import models as cloudauth
from alibabacloud_cloudauth20190307.client import Client as CloudauthClient
from alibabacloud_dysmsapi20170525 import models as dysms
from alibabacloud_dysmsapi20170525.client import Client as DysmsClient
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.runtime import RuntimeOptions
from redis.asyncio import Redis

from app_backend.identity.sms import SmsMessage
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, invalid_field
from app_backend.kernel.settings import AliyunSettings

_log = structlog.get_logger("identity.vendor")
T = TypeVar("T")

# cloudauth's BizCode of the two- and three-factor checks: 1 the records agree, 2 they do not, 3 no record.
_AGREE = "1"
_DISAGREE_OR_UNKNOWN = frozenset({"2", "3"})
# DescribeFaceVerify's codes for a CertifyId that is not (or no longer) a verification: the check did not pass.
_NO_SUCH_VERIFICATION = frozenset({"400", "401", "404"})


def unavailable(what: str) -> DomainError:
    return DomainError(
        503,
        "dependency-unavailable",
        f"{what} cannot be reached right now; nothing was changed, retry shortly",
        headers={"Retry-After": "5"},
    )


def _config(settings: AliyunSettings) -> Config:
    timeout_ms = int(settings.timeout * 1000)
    return Config(
        access_key_id=settings.access_key_id,
        access_key_secret=settings.access_key_secret,
        endpoint=settings.endpoint or None,
        protocol=settings.protocol,
        region_id="cn-hangzhou",
        read_timeout=timeout_ms,
        connect_timeout=timeout_ms,
    )


def _runtime(settings: AliyunSettings) -> RuntimeOptions:
    # No retries: a retry would sleep in the event loop (the SDK's backoff is synchronous); the resident retries.
    timeout_ms = int(settings.timeout * 1000)
    return RuntimeOptions(autoretry=False, read_timeout=timeout_ms, connect_timeout=timeout_ms)


async def _call(action: str, what: str, limit_s: float, call: Callable[[], Awaitable[T]]) -> T:
    """The SDK call, bounded by the timeout (the SDK's own bounds each read, not the whole call); any failure of
    the vendor is a 503 naming `what`."""
    try:
        async with asyncio.timeout(limit_s + 1):
            return await call()
    except DomainError:
        raise
    except Exception as exc:  # the SDK raises its own, aiohttp's and asyncio's errors; all mean the same here
        # Only the vendor's code: its messages may echo the request (a phone, an ID number).
        _log.error(
            "vendor_call_failed", action=action, error=type(exc).__name__, code=getattr(exc, "code", None)
        )
        raise unavailable(what) from None


def _body(response: Any) -> Any:
    body = getattr(response, "body", None)
    if body is None:
        raise ValueError("no body")
    return body


def _refused(action: str, what: str, code: str | None) -> DomainError:
    _log.error("vendor_refused", action=action, code=code)
    return unavailable(what)


class AliyunSmsSender:
    """SendSms with the template registered for the message's kind; the template's parameters are the message's
    (the one-time code's template takes `code`)."""

    def __init__(self, settings: AliyunSettings) -> None:
        self._settings = settings
        self._client = DysmsClient(_config(settings))
        self._templates = {
            "otp": settings.sms_template_otp,
            "identity-taken": settings.sms_template_identity_taken,
            "identity-claimed": settings.sms_template_identity_claimed,
        }

    async def send(self, phone: str, message: SmsMessage) -> None:
        request = dysms.SendSmsRequest(
            phone_numbers=phone,
            sign_name=self._settings.sms_sign_name,
            template_code=self._templates[message.kind],
            template_param=json.dumps(message.params, ensure_ascii=False) if message.params else None,
            out_id=secrets.token_hex(8),
        )
        response = await _call(
            "SendSms",
            "the SMS gateway",
            self._settings.timeout,
            lambda: self._client.send_sms_with_options_async(request, _runtime(self._settings)),
        )
        code = _body(response).code
        if code != "OK":  # refusals come as HTTP 200 with an isv.* or isp.* code
            raise _refused("SendSms", "the SMS gateway", code)


class AliyunPopulationRegistry:
    """Id2MetaVerify (name and ID number against the national records) and Mobile3MetaSimpleVerify (the carriers'
    three-factor check: the phone is registered to that name and ID number)."""

    def __init__(self, settings: AliyunSettings) -> None:
        self._settings = settings
        self._client = CloudauthClient(_config(settings))

    async def matches(self, conn: Connection, name: str, id_number: str) -> bool:
        request = cloudauth.Id2MetaVerifyRequest(param_type="normal", user_name=name, identify_num=id_number)
        response = await _call(
            "Id2MetaVerify",
            "the population registry",
            self._settings.timeout,
            lambda: self._client.id_2meta_verify_with_options_async(request, _runtime(self._settings)),
        )
        return self._agrees("Id2MetaVerify", _body(response))

    async def phone_belongs(self, conn: Connection, name: str, id_number: str, phone: str) -> bool:
        request = cloudauth.Mobile3MetaSimpleVerifyRequest(
            param_type="normal", user_name=name, identify_num=id_number, mobile=phone
        )
        response = await _call(
            "Mobile3MetaSimpleVerify",
            "the carriers' verification service",
            self._settings.timeout,
            lambda: self._client.mobile_3meta_simple_verify_with_options_async(
                request, _runtime(self._settings)
            ),
        )
        return self._agrees("Mobile3MetaSimpleVerify", _body(response))

    @staticmethod
    def _agrees(action: str, body: Any) -> bool:
        result = getattr(body, "result_object", None)
        biz_code = getattr(result, "biz_code", None)
        if body.code != "200" or biz_code not in {_AGREE, *_DISAGREE_OR_UNKNOWN}:
            raise _refused(action, "the population registry", body.code)
        return bool(biz_code == _AGREE)


class AliyunLivenessProvider:
    """InitFaceVerify opens a verification of one person (name and ID number) and hands the app the CertifyId its
    face SDK runs with; DescribeFaceVerify, asked by the server, says whether it passed. What the app sends back
    (`result_token`) is never taken as the result: only the vendor's answer is, and once per session."""

    name = "aliyun"
    ttl = 600  # a verification is confirmed within ten minutes or started again (the vendor keeps it 30)

    def __init__(self, settings: AliyunSettings, redis: Redis) -> None:
        self._settings = settings
        self._client = CloudauthClient(_config(settings))
        self._redis = redis

    async def start(
        self, resident_id: str, name: str, id_number: str, meta_info: str | None = None
    ) -> tuple[str, int]:
        if not meta_info:
            raise invalid_field(
                "meta_info", "the face verification SDK's MetaInfo of this device is required"
            )
        request = cloudauth.InitFaceVerifyRequest(
            scene_id=self._settings.face_scene_id,
            outer_order_no=secrets.token_hex(16),
            product_code=self._settings.face_product_code,
            cert_type="IDENTITY_CARD",
            cert_name=name,
            cert_no=id_number,
            meta_info=meta_info,
        )
        response = await _call(
            "InitFaceVerify",
            "the face verification service",
            self._settings.timeout,
            lambda: self._client.init_face_verify_with_options_async(request, _runtime(self._settings)),
        )
        body = _body(response)
        certify_id = getattr(getattr(body, "result_object", None), "certify_id", None)
        if body.code != "200" or not certify_id:
            raise _refused("InitFaceVerify", "the face verification service", body.code)
        await self._redis.set(_session_key(certify_id), resident_id, ex=self.ttl)
        return str(certify_id), self.ttl

    async def confirm(self, resident_id: str, session_id: str, result_token: str) -> bool:
        key = _session_key(session_id)
        owner = await self._redis.get(key)
        if owner is None or (owner.decode() if isinstance(owner, bytes) else owner) != resident_id:
            return False  # not a session we opened for this resident (or it lapsed): the vendor is not asked
        request = cloudauth.DescribeFaceVerifyRequest(
            scene_id=self._settings.face_scene_id, certify_id=session_id
        )
        response = await _call(
            "DescribeFaceVerify",
            "the face verification service",
            self._settings.timeout,
            lambda: self._client.describe_face_verify_with_options_async(request, _runtime(self._settings)),
        )
        body = _body(response)
        if body.code in _NO_SUCH_VERIFICATION:
            await self._redis.delete(key)
            return False
        if body.code != "200":
            raise _refused("DescribeFaceVerify", "the face verification service", body.code)
        passed = getattr(getattr(body, "result_object", None), "passed", None) == "T"
        # One confirmation per session, even when raced; a session that did not pass is over too.
        deleted = bool(await self._redis.delete(key))
        return passed and deleted


def _session_key(certify_id: str) -> str:
    return f"liveness:aliyun:{certify_id}"
