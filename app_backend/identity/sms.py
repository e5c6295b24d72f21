"""SMS delivery behind one interface. The dev sender keeps messages in an outbox that only dev mode can read; the
production one (app_backend/identity/aliyun.py) sends the message's approved template with its parameters."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Protocol

import msgspec
from redis.asyncio import Redis

from app_backend.identity.schemas import OutboxMessage

_OUTBOX_KEEP = 20


class SmsMessage(msgspec.Struct, frozen=True):
    """One text to a resident. Gateways in China send only templates registered with the carriers: `kind` names
    the template (each connector maps it to its vendor's template code) and `params` fill it; `text` is the
    message in full, what the template says, for the dev outbox."""

    kind: str  # "otp", "identity-taken", "identity-claimed"
    text: str
    params: dict[str, str] = msgspec.field(default_factory=dict)


class SmsSender(Protocol):
    async def send(self, phone: str, message: SmsMessage) -> None:
        """Delivers or raises; a gateway that cannot be reached raises a 503 DomainError."""
        ...


class _StoredMessage(msgspec.Struct):
    text: str
    sent_at: float


class DevOutboxSender:
    """The dev and test SMS gateway. Even here nothing in Redis pairs a phone in clear with its codes: the outbox
    of a phone is keyed by a keyed hash of it and lives no longer than a code."""

    def __init__(self, redis: Redis, key: bytes, ttl: int) -> None:
        self._redis = redis
        self._key = key
        self._ttl = ttl

    def _outbox_key(self, phone: str) -> str:
        digest = hmac.new(self._key, f"dev-outbox\x00{phone}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"dev:outbox:{digest}"

    async def send(self, phone: str, message: SmsMessage) -> None:
        key = self._outbox_key(phone)
        stored = msgspec.json.encode(_StoredMessage(text=message.text, sent_at=time.time()))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, stored)
            pipe.ltrim(key, 0, _OUTBOX_KEEP - 1)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def read(self, phone: str) -> list[OutboxMessage]:
        raw = await self._redis.lrange(self._outbox_key(phone), 0, -1)
        stored = [msgspec.json.decode(item, type=_StoredMessage) for item in raw]
        return [OutboxMessage(to=phone, text=m.text, sent_at=m.sent_at) for m in stored]


def otp_message(code: str, ttl_minutes: int) -> SmsMessage:
    text = (
        f"【泰州通】验证码 {code}，{ttl_minutes} 分钟内有效，请勿告诉他人。Your Taizhou Tong code is {code}."
    )
    return SmsMessage(kind="otp", text=text, params={"code": code})


def identity_taken_message() -> SmsMessage:
    return SmsMessage(kind="identity-taken", text=_identity_taken_text())


def identity_claimed_message() -> SmsMessage:
    return SmsMessage(kind="identity-claimed", text=_identity_claimed_text())


def _identity_taken_text() -> str:
    return (
        "【泰州通】另一位居民已通过人脸核验证明本账户所登记的身份属于其本人：本账户已降为 L1，"
        "其电子码与设备凭证已失效。如有疑问请拨打 12345。"
        "Another resident proved by face verification that the identity on this account is theirs: "
        "this account is back at L1 and its codes have ended. Questions: call 12345."
    )


def _identity_claimed_text() -> str:
    return (
        "【泰州通】您已通过人脸核验认领本人身份，原先登记该身份的账户已降为 L1。"
        "You proved your identity by face verification; the account that held it is back at L1."
    )
