"""The endpoints Alipay and WeChat Pay post their notifications to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_400_BAD_REQUEST

from app_backend.kernel.errors import not_found
from app_backend.kernel.http import problems
from payments.notifications.service import NotificationRefused

if TYPE_CHECKING:
    from payments.container import PaymentServices

# Each channel reads the answer in its own format, set per answer: Alipay plain text, WeChat Pay XML (v2) or JSON
# (v3).
_ACKNOWLEDGED = (
    "acknowledged: Alipay `success` (text/plain), WeChat Pay v2 `<xml>` with SUCCESS (application/xml), "
    'v3 `{"code": "SUCCESS"}` (application/json)'
)
_REFUSED = ResponseSpec(
    data_container=bytes,
    media_type="text/plain",
    description="not acknowledged (Alipay `failure`, WeChat Pay FAIL in XML or v3 JSON): the channel retries",
    generate_examples=False,
)


class NotifyController(Controller):
    path = "/api/v1/payments/notify"
    tags = ["payments"]

    @post(
        "/{channel_name:str}",
        summary="Channel payment notifications (Alipay form, WeChat Pay v2 XML or v3 signed JSON)",
        request_max_body_size=64 * 1024,
        status_code=HTTP_200_OK,
        media_type="text/plain",
        response_description=_ACKNOWLEDGED,
        responses={HTTP_400_BAD_REQUEST: _REFUSED},
        opt=problems(404),
    )
    async def notify(
        self, channel_name: str, request: Request[Any, Any, Any], payments: PaymentServices
    ) -> Response[bytes]:
        if channel_name not in payments.channels:
            raise not_found("no such channel")
        service = payments.notifications
        try:
            headers = {name.lower(): value for name, value in request.headers.items()}
            note = await service.verify(channel_name, await request.body(), headers)
            # The handler owns the transaction: the acknowledgement goes out only after the state is committed.
            async with payments.pool.acquire() as conn, conn.transaction():
                await service.apply(conn, channel_name, note)
        except NotificationRefused:
            body, media_type = service.acknowledge(channel_name, accepted=False)
            return Response(body, media_type=media_type, status_code=HTTP_400_BAD_REQUEST)
        body, media_type = service.acknowledge(channel_name, accepted=True)
        return Response(body, media_type=media_type, status_code=HTTP_200_OK)
