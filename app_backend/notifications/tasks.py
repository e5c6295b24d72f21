"""The jobs: pending WeChat, Alipay and push deliveries sent (and retried) outside any transaction; broadcasts
written to their residents' inboxes in batches."""

from __future__ import annotations

from typing import Any

from app_backend.notifications.service import NotificationService


async def deliver_messages(ctx: dict[str, Any]) -> dict[str, int]:
    notifications = ctx["platform"].get(NotificationService)
    return await notifications.deliver_due(notifications.pool)


async def write_broadcasts(ctx: dict[str, Any]) -> dict[str, int]:
    notifications = ctx["platform"].get(NotificationService)
    return await notifications.write_broadcasts(notifications.pool)
