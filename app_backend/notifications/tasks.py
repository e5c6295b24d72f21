"""The delivery job: pending WeChat, Alipay and push deliveries sent (and retried) outside any transaction."""

from __future__ import annotations

from typing import Any

from app_backend.notifications.service import NotificationService


async def deliver_messages(ctx: dict[str, Any]) -> dict[str, int]:
    notifications = ctx["platform"].get(NotificationService)
    return await notifications.deliver_due(notifications.pool)
