"""The endpoints Alipay and WeChat Pay post their notifications to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, post

from app_backend.kernel.errors import not_found
from payments.notifications.service import NotificationRefused

if TYPE_CHECKING:
    from payments.container import PaymentServices


class NotifyController(Controller):
    path = "/api/v1/payments/notify"
    tags = ["payments"]

    @post(
        "/{channel_name:str}",
        summary="Channel payment notifications (Alipay form, WeChat XML)",
        request_max_body_size=64 * 1024,
    )
    async def notify(
        self, channel_name: str, request: Request[Any, Any, Any], payments: PaymentServices
    ) -> Response[bytes]:
        if channel_name not in payments.channels:
            raise not_found("no such channel")
        service = payments.notifications
        try:
            note = service.verify(channel_name, await request.body(), request.headers.get("content-type", ""))
            # The handler owns the transaction: the acknowledgement goes out only after the state is committed.
            async with payments.pool.acquire() as conn, conn.transaction():
                await service.apply(conn, channel_name, note)
        except NotificationRefused:
            body, media_type = service.acknowledge(channel_name, accepted=False)
            return Response(body, media_type=media_type, status_code=400)
        body, media_type = service.acknowledge(channel_name, accepted=True)
        return Response(body, media_type=media_type, status_code=200)
