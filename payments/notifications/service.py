"""Channel notifications: at least once, in any order, sometimes never. Each is verified by its adapter
(signature, sign type, and every field that identifies us: app id, seller id, merchant id, no sub-merchant),
matched to the order and its amount, and moves the order forward only. Every refusal is counted by reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import structlog
from prometheus_client import Counter

from app_backend.kernel.db import Connection
from payments.channels.base import (
    ForeignNotification,
    HeaderSignedNotifications,
    InvalidNotification,
    Notification,
    TradeStatus,
)
from payments.orders.repository import OrderRepository
from payments.orders.service import OrderService

_log = structlog.get_logger("payments.notify")
# reason: the identifying field that named someone else (app_id, seller_id, appid, mch_id, sub_mch_id), or
# invalid (signature, format), unknown_order, amount, status.
REFUSED_NOTIFICATIONS = Counter(
    "tzt_payment_notifications_refused_total",
    "Channel notifications refused (never credited, not acknowledged), by channel and reason",
    ["channel", "reason"],
)


class NotificationRefused(Exception):
    """Not acknowledged: the channel will retry, and operations see the reason in the log."""


class TransitNotifications(Protocol):
    async def apply_notification(self, conn: Connection, channel_name: str, note: Notification) -> str: ...


class NotificationService:
    def __init__(self, orders: OrderService, transit: TransitNotifications | None = None) -> None:
        self._orders = orders
        self._transit = transit
        self._repo = OrderRepository()

    async def verify(self, channel_name: str, body: bytes, headers: Mapping[str, str]) -> Notification:
        """`headers` are the request's (looked up in lower case): a channel that signs in the headers (WeChat Pay
        v3) reads them, the others read the body and its content type."""
        channel = self._orders.channel(channel_name)
        try:
            if isinstance(channel, HeaderSignedNotifications):
                return await channel.read_notification(body, headers)
            return channel.parse_notification(body, headers.get("content-type", ""))
        except InvalidNotification as exc:
            # The reason names a field or a format fault, never the buyer: no personal data in the log.
            reason = exc.field if isinstance(exc, ForeignNotification) else "invalid"
            REFUSED_NOTIFICATIONS.labels(channel_name, reason).inc()
            _log.warning("notification refused", channel=channel_name, reason=str(exc))
            raise NotificationRefused(str(exc)) from None

    async def apply(self, conn: Connection, channel_name: str, note: Notification) -> str:
        if note.kind in ("agreement", "deduction") and self._transit is not None:
            return await self._transit.apply_notification(conn, channel_name, note)
        if note.kind != "payment":
            return "ignored"
        row = await self._repo.by_out_trade_no(conn, note.out_trade_no)
        if row is None or row.channel != channel_name:
            REFUSED_NOTIFICATIONS.labels(channel_name, "unknown_order").inc()
            raise NotificationRefused(f"no {channel_name} order {note.out_trade_no}")
        if note.amount_fen != row.amount_fen:
            _log.error(
                "notification amount differs from the order",
                order=str(row.id),
                notified=note.amount_fen,
                expected=row.amount_fen,
            )
            REFUSED_NOTIFICATIONS.labels(channel_name, "amount").inc()
            raise NotificationRefused("amount differs from the order")
        if not isinstance(note.status, TradeStatus):
            REFUSED_NOTIFICATIONS.labels(channel_name, "status").inc()
            raise NotificationRefused("not a trade status")
        return await self._orders.apply_channel_state(
            conn, row, note.status, note.channel_trade_no, note.paid_at
        )

    def acknowledge(self, channel_name: str, accepted: bool) -> tuple[bytes, str]:
        return self._orders.channel(channel_name).acknowledge(accepted)
