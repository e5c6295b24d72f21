"""Channel notifications: at least once, in any order, sometimes never. Each is verified by its adapter
(signature, sign type, app id), matched to the order and its amount, and moves the order forward only."""

from __future__ import annotations

from typing import Protocol

import structlog

from app_backend.kernel.db import Connection
from payments.channels.base import InvalidNotification, Notification, TradeStatus
from payments.orders.repository import OrderRepository
from payments.orders.service import OrderService

_log = structlog.get_logger("payments.notify")


class NotificationRefused(Exception):
    """Not acknowledged: the channel will retry, and operations see the reason in the log."""


class TransitNotifications(Protocol):
    async def apply_notification(self, conn: Connection, channel_name: str, note: Notification) -> str: ...


class NotificationService:
    def __init__(self, orders: OrderService, transit: TransitNotifications | None = None) -> None:
        self._orders = orders
        self._transit = transit
        self._repo = OrderRepository()

    def verify(self, channel_name: str, body: bytes, content_type: str) -> Notification:
        try:
            return self._orders.channel(channel_name).parse_notification(body, content_type)
        except InvalidNotification as exc:
            _log.warning("notification refused", channel=channel_name, reason=str(exc))
            raise NotificationRefused(str(exc)) from None

    async def apply(self, conn: Connection, channel_name: str, note: Notification) -> str:
        if note.kind in ("agreement", "deduction") and self._transit is not None:
            return await self._transit.apply_notification(conn, channel_name, note)
        if note.kind != "payment":
            return "ignored"
        row = await self._repo.by_out_trade_no(conn, note.out_trade_no)
        if row is None or row.channel != channel_name:
            raise NotificationRefused(f"no {channel_name} order {note.out_trade_no}")
        if note.amount_fen != row.amount_fen:
            _log.error(
                "notification amount differs from the order",
                order=str(row.id),
                notified=note.amount_fen,
                expected=row.amount_fen,
            )
            raise NotificationRefused("amount differs from the order")
        if not isinstance(note.status, TradeStatus):
            raise NotificationRefused("not a trade status")
        return await self._orders.apply_channel_state(
            conn, row, note.status, note.channel_trade_no, note.paid_at
        )

    def acknowledge(self, channel_name: str, accepted: bool) -> tuple[bytes, str]:
        return self._orders.channel(channel_name).acknowledge(accepted)
