"""App push through a push provider (APNs, FCM, a vendor's channel such as HMS or a Chinese aggregator): the
`PushProvider` protocol is all the notification service knows. No real provider is wired yet; dev and tests use
`RecordingPushProvider`, which keeps what it was asked to push, and production sends no push until one is
(docs/decisions/0024-one-notification-service.md)."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Protocol

import msgspec
import structlog

from app_backend.kernel.clock import now

_log = structlog.get_logger("notifications.push")


class PushResult(msgspec.Struct, frozen=True):
    """`sent`; `refused` for good (the token is no longer valid); `fault` (try again later)."""

    status: Literal["sent", "refused", "fault"]
    code: str | None = None
    message_id: str | None = None


class PushProvider(Protocol):
    async def push(
        self, token: str, platform: str, title: str, body: str, data: dict[str, str]
    ) -> PushResult: ...


class RecordedPush(msgspec.Struct, frozen=True):
    token: str
    platform: str
    title: str
    body: str
    data: dict[str, str]
    at: dt.datetime


class RecordingPushProvider:
    """The dev and test provider: every push succeeds and is kept in `pushes` (in this process)."""

    def __init__(self) -> None:
        self.pushes: list[RecordedPush] = []

    async def push(
        self, token: str, platform: str, title: str, body: str, data: dict[str, str]
    ) -> PushResult:
        self.pushes.append(RecordedPush(token, platform, title, body, dict(data), now()))
        _log.info("push recorded", platform=platform, kind=data.get("kind"))
        return PushResult("sent", message_id=str(len(self.pushes)))
