"""What a resident's phone and a department do in the notification tests."""

from __future__ import annotations

import uuid
from typing import Any

from app_backend.notifications.schemas import MessageDraft, SentMessage
from app_backend.notifications.service import NotificationService
from tests.helpers import bearer, enrol_person, machine_credential, random_id_number, random_phone, signed
from tests.mini_programs.sandboxes import ALIPAY_CITY, WECHAT_CITY, AlipayMiniSandbox, WechatMiniSandbox

SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"


def notifications_of(services: Any) -> NotificationService:
    return services.platform.get(NotificationService)  # type: ignore[no-any-return]


async def wechat_resident(client: Any, sandbox: WechatMiniSandbox) -> dict[str, Any]:
    """A resident logged in from the city's WeChat mini-program: the tokens and `openid`."""
    wx = await sandbox.login_code(WECHAT_CITY)
    answer = await client.post(
        "/api/v1/mini-programs/wechat/login",
        json={
            "app_id": WECHAT_CITY,
            "code": wx["code"],
            "phone_code": await sandbox.phone_code(random_phone()),
        },
    )
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "openid": wx["openid"]}


async def wechat_real_named(client: Any, services: Any, sandbox: WechatMiniSandbox) -> dict[str, Any]:
    """A resident who logged in from the city's WeChat mini-program, then verified their real name (L2): the
    tokens, `openid` and `id_number`."""
    phone = random_phone()
    wx = await sandbox.login_code(WECHAT_CITY)
    answer = await client.post(
        "/api/v1/mini-programs/wechat/login",
        json={"app_id": WECHAT_CITY, "code": wx["code"], "phone_code": await sandbox.phone_code(phone)},
    )
    assert answer.status_code == 200, answer.text
    person = {**answer.json(), "openid": wx["openid"]}
    id_number = random_id_number()
    await enrol_person(services, "周瑜", id_number, phone)
    verified = await client.post(
        "/api/v1/me/real-name", json={"name": "周瑜", "id_number": id_number}, headers=bearer(person)
    )
    assert verified.status_code == 200, verified.text
    return {**person, "id_number": id_number}


async def sent_at_wechat(sandbox: WechatMiniSandbox, openid: str) -> list[dict[str, Any]]:
    answer = await sandbox.control("GET", f"/_sandbox/messages?appid={WECHAT_CITY}&openid={openid}")
    return answer["messages"]  # type: ignore[no-any-return]


async def inbox_of(client: Any, resident: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/me/inbox?limit=100", headers=bearer(resident))
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]  # type: ignore[no-any-return]


async def alipay_resident(client: Any, sandbox: AlipayMiniSandbox) -> dict[str, Any]:
    ali = await sandbox.auth_code(ALIPAY_CITY)
    answer = await client.post(
        "/api/v1/mini-programs/alipay/login",
        json={
            "app_id": ALIPAY_CITY,
            "code": ali["code"],
            "phone_response": await sandbox.phone_response(random_phone()),
        },
    )
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "user_id": ali["user_id"], "open_id": ali["open_id"]}


async def wechat_grant(
    client: Any, sandbox: WechatMiniSandbox, resident: dict[str, Any], kind: str, grant: str = "one_time"
) -> str:
    """The resident accepts the kind's template in wx.requestSubscribeMessage: WeChat records the grant and the
    mini-program reports the answer. The template id."""
    template = f"wechat-{kind.replace('_', '-')}"
    await sandbox.control(
        "POST",
        "/_sandbox/grants",
        {"appid": WECHAT_CITY, "openid": resident["openid"], "template_id": template, "kind": grant},
    )
    reported = await client.post(
        "/api/v1/me/subscribe-grants",
        headers=bearer(resident),
        json={"channel": "wechat", "app_id": WECHAT_CITY, "results": {template: "accept"}},
    )
    assert reported.status_code == 200, reported.text
    return template


async def send(services: Any, resident: dict[str, Any], kind: str = "fare_debt", **extra: Any) -> SentMessage:
    """A message from the platform (the service API, in a transaction of its own, as a domain sends one)."""
    notifications = notifications_of(services)
    draft = MessageDraft(
        kind=kind, title="乘车欠费待补缴", body="您有一笔 3.00 元的乘车费用未能扣款", **extra
    )  # type: ignore[arg-type]
    async with services.pool.acquire() as conn, conn.transaction():
        sent, _ = await notifications.send(
            conn, uuid.UUID(resident["resident_id"]), draft, sender="payments", sender_name="泰州通"
        )
    return sent


async def deliver(services: Any, **at: Any) -> dict[str, int]:
    notifications = notifications_of(services)
    return await notifications.deliver_due(notifications.pool, **at)


async def message_of(services: Any, message_id: uuid.UUID) -> SentMessage:
    async with services.pool.acquire() as conn:
        return await notifications_of(services).sent_by(conn, "payments", message_id)


def channels(sent: SentMessage) -> dict[str, str]:
    return {d.channel: d.status for d in sent.deliveries}


async def department(
    client: Any, services: Any, scopes: tuple[str, ...] = ("messages:send",)
) -> dict[str, Any]:
    return await machine_credential(client, services, ["payments:refund", *scopes], kind="merchant")


async def order_of(client: Any, resident: dict[str, Any], payee: dict[str, Any]) -> str:
    """An order the resident opens with the department as payee (a ticket, waiting to be paid)."""
    answer = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(resident), "Idempotency-Key": uuid.uuid4().hex},
        json={
            "purpose": "ticket",
            "amount_fen": 1000,
            "subject": "凤城河夜游",
            "payee_id": payee["organisation"]["id"],
            "channel": "wechat",
            "method": "jsapi",
            "payer_channel_id": "o-openid-1",
        },
    )
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


async def department_message(
    client: Any, payee: dict[str, Any], order_id: str, kind: str = "ticket_reminder", key: str | None = None
) -> Any:
    body: dict[str, Any] = {
        "resident_ref": {"order_id": order_id},
        "message": {"kind": kind, "title": "演出即将开始", "body": "您购买的凤城河夜游将于 19:30 开始检票"},
    }
    if key:
        body["message_key"] = key
    return await signed(client, payee, "POST", "/api/v1/messages", body)


async def pay(
    client: Any,
    wechat: Any,
    resident: dict[str, Any],
    payee: dict[str, Any],
    splits: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The resident pays an order of the payee's (and of the split payees), through the WeChat Pay sandbox."""
    body: dict[str, Any] = {
        "purpose": "ticket",
        "amount_fen": 1000,
        "subject": "凤城河夜游",
        "payee_id": payee["organisation"]["id"],
        "channel": "wechat",
        "method": "jsapi",
        "payer_channel_id": "o-openid-1",
    }
    if splits:
        body["splits"] = splits
    created = await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(resident), "Idempotency-Key": uuid.uuid4().hex},
        json=body,
    )
    assert created.status_code == 201, created.text
    order = created.json()
    note = (await wechat.control("POST", f"_sandbox/trades/{order['out_trade_no']}/pay", {"deliver": False}))[
        "notification"
    ]
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200 and b"SUCCESS" in ack.content
    return order  # type: ignore[no-any-return]


def by_id_number(id_number: str, kind: str = "bill_due", key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resident_ref": {"id_number": id_number},
        "message": {"kind": kind, "title": "燃气费账单", "body": "您本月的燃气费已出账"},
    }
    if key:
        body["message_key"] = key
    return body


async def set_message_regions(
    client: Any, admin: dict[str, Any], organisation_id: str, regions: list[str]
) -> Any:
    return await client.put(
        f"/api/v1/admin/organisations/{organisation_id}/message-regions",
        headers=bearer(admin),
        json={"regions": regions},
    )
