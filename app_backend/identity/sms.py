"""SMS delivery behind one interface. The dev sender keeps messages in an outbox that only dev mode can read."""

from __future__ import annotations

import time
from typing import Protocol

import msgspec
from redis.asyncio import Redis

from app_backend.identity.schemas import OutboxMessage

_OUTBOX_TTL = 3600
_OUTBOX_KEEP = 20


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class DevOutboxSender:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def send(self, phone: str, text: str) -> None:
        key = f"dev:outbox:{phone}"
        message = msgspec.json.encode(OutboxMessage(to=phone, text=text, sent_at=time.time()))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, message)
            pipe.ltrim(key, 0, _OUTBOX_KEEP - 1)
            pipe.expire(key, _OUTBOX_TTL)
            await pipe.execute()

    async def read(self, phone: str) -> list[OutboxMessage]:
        raw = await self._redis.lrange(f"dev:outbox:{phone}", 0, -1)
        return [msgspec.json.decode(item, type=OutboxMessage) for item in raw]


def otp_text(code: str, ttl_minutes: int) -> str:
    return (
        f"【泰州通】验证码 {code}，{ttl_minutes} 分钟内有效，请勿告诉他人。Your Taizhou Tong code is {code}."
    )
