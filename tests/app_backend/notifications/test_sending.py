"""Sending a message to a resident: the channel chosen by the grants the resident gave, one-time grants spent
once (also under concurrent sends), the channel called by the delivery job outside any transaction and retried on
faults, every delivery recorded, and the inbox always."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.clock import now
from tests.app_backend.notifications.helpers import (
    SUBSCRIBE_SEND,
    alipay_resident,
    channels,
    deliver,
    department,
    department_message,
    message_of,
    notifications_of,
    order_of,
    send,
    sent_at_wechat,
    wechat_grant,
    wechat_resident,
)
from tests.helpers import bearer, login
from tests.mini_programs.sandboxes import ALIPAY_CITY, WECHAT_CITY, AlipayMiniSandbox, WechatMiniSandbox


async def grants_of(client: Any, resident: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/me/subscribe-grants", headers=bearer(resident))
    assert answer.status_code == 200, answer.text
    return answer.json()["grants"]  # type: ignore[no-any-return]


async def test_a_one_time_grant_is_spent_once_under_concurrent_department_sends(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "ticket_reminder")
    payee = await department(client, services)
    order_id = await order_of(client, resident, payee)

    answers = await asyncio.gather(*(department_message(client, payee, order_id) for _ in range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    by_channel = [{d["channel"]: d["status"] for d in a.json()["deliveries"]} for a in answers]
    # Exactly one message claimed the grant; every message is in the inbox.
    assert sorted(by_channel, key=len) == [{"inbox": "sent"}] * 5 + [{"inbox": "sent", "wechat": "pending"}]
    assert (await grants_of(client, resident))[0]["remaining"] == 0

    # Two job runs at once: the delivery is leased by one of them, so WeChat is asked once.
    await asyncio.gather(deliver(services), deliver(services))
    assert len(await sent_at_wechat(wechat_mini_sandbox, resident["openid"])) == 1
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(resident))).json()
    assert len(inbox["messages"]) == 6 and inbox["unread"] == 6
    delivered = [d for m in inbox["messages"] for d in m["deliveries"] if d["channel"] == "wechat"]
    assert [(d["status"], d["attempts"], d["error"]) for d in delivered] == [("sent", 1, None)]


async def test_one_time_grants_are_spent_once_under_concurrent_platform_sends(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    """Two grants given, eight messages sent at once through the service API: two go to WeChat."""
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "fare_debt")
    await wechat_grant(client, wechat_mini_sandbox, resident, "fare_debt")
    assert (await grants_of(client, resident))[0]["remaining"] == 2

    sent = await asyncio.gather(*(send(services, resident) for _ in range(8)))
    assert sorted(len(s.deliveries) for s in sent) == [1] * 6 + [2] * 2
    await deliver(services)
    assert len(await sent_at_wechat(wechat_mini_sandbox, resident["openid"])) == 2


async def test_a_resident_without_a_grant_gets_the_inbox_only(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    in_wechat = await wechat_resident(client, wechat_mini_sandbox)
    app_only = await login(client)
    for resident in (in_wechat, app_only):
        sent = await send(services, resident)
        assert channels(sent) == {"inbox": "sent"}
    await deliver(services)
    assert await sent_at_wechat(wechat_mini_sandbox, in_wechat["openid"]) == []
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(app_only))).json()
    assert [m["title"] for m in inbox["messages"]] == ["乘车欠费待补缴"]


async def test_a_long_term_grant_sends_every_message(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    template = await wechat_grant(client, wechat_mini_sandbox, resident, "code_status_changed", "long_term")
    for _ in range(3):
        assert channels(await send(services, resident, "code_status_changed")) == {
            "inbox": "sent",
            "wechat": "pending",
        }
    await deliver(services)
    at_wechat = await sent_at_wechat(wechat_mini_sandbox, resident["openid"])
    assert [m["template_id"] for m in at_wechat] == [template] * 3
    assert at_wechat[0]["data"] == {
        "thing1": {"value": "乘车欠费待补缴"},
        "thing2": {"value": "您有一笔 3.00 元的乘车费用未能扣款"},  # 20 characters, as WeChat allows
    }
    (grant,) = await grants_of(client, resident)
    assert (grant["grant"], grant["status"], grant["kinds"]) == (
        "long_term",
        "accepted",
        ["code_status_changed"],
    )


async def test_a_grant_revoked_in_wechat_is_an_error_recorded_and_the_inbox_still_has_the_message(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    template = await wechat_grant(client, wechat_mini_sandbox, resident, "fare_debt")
    # The resident turns the template off in WeChat's settings; the platform does not know yet.
    await wechat_mini_sandbox.control(
        "POST",
        "/_sandbox/grants/revoke",
        {"appid": WECHAT_CITY, "openid": resident["openid"], "template_id": template},
    )
    sent = await send(services, resident)
    assert channels(sent) == {"inbox": "sent", "wechat": "pending"}
    await deliver(services)
    after = await message_of(services, sent.id)
    wechat = next(d for d in after.deliveries if d.channel == "wechat")
    assert wechat.status == "failed" and wechat.error is not None and "43101" in wechat.error
    (grant,) = await grants_of(client, resident)
    assert (grant["status"], grant["remaining"]) == ("revoked", 0)
    # The next message does not try WeChat again until the resident grants the template anew.
    assert channels(await send(services, resident)) == {"inbox": "sent"}
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(resident))).json()
    assert len(inbox["messages"]) == 2


async def test_a_channel_fault_is_retried_by_the_job_and_the_grant_is_not_spent_twice(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "bill_due")
    await wechat_mini_sandbox.fault(SUBSCRIBE_SEND, "busy")
    sent = await send(services, resident, "bill_due")
    await deliver(services)
    wechat = next(d for d in (await message_of(services, sent.id)).deliveries if d.channel == "wechat")
    assert (wechat.status, wechat.attempts, wechat.error) == ("pending", 1, "fault (-1)")
    assert await sent_at_wechat(wechat_mini_sandbox, resident["openid"]) == []
    # Not due again yet: a run now leaves it alone.
    await deliver(services)
    assert (await message_of(services, sent.id)).deliveries[-1].attempts == 1
    # Two runs at once when it is due: one sends it, with the grant the message claimed.
    later = now() + dt.timedelta(minutes=2)
    await asyncio.gather(deliver(services, at=later), deliver(services, at=later))
    wechat = next(d for d in (await message_of(services, sent.id)).deliveries if d.channel == "wechat")
    assert (wechat.status, wechat.attempts) == ("sent", 2)
    assert len(await sent_at_wechat(wechat_mini_sandbox, resident["openid"])) == 1
    (grant,) = await grants_of(client, resident)
    assert grant["remaining"] == 0


async def test_a_delivery_gives_up_after_its_retries(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "complaint_answered")
    await wechat_mini_sandbox.control(
        "POST", "/_sandbox/faults", {"path": SUBSCRIBE_SEND, "mode": "error", "times": 6}
    )
    sent = await send(services, resident, "complaint_answered")
    at = now()
    for _ in range(6):
        await deliver(services, at=at)
        at += dt.timedelta(hours=4)
    wechat = next(d for d in (await message_of(services, sent.id)).deliveries if d.channel == "wechat")
    assert (wechat.status, wechat.attempts) == ("failed", 6) and "gave up" in (wechat.error or "")
    await wechat_mini_sandbox.control("DELETE", "/_sandbox/faults")


async def test_an_alipay_subscribe_message(
    client: Any, services: Any, alipay_mini_sandbox: AlipayMiniSandbox
) -> None:
    resident = await alipay_resident(client, alipay_mini_sandbox)
    await alipay_mini_sandbox.control(
        "POST",
        "/_sandbox/grants",
        {"app_id": ALIPAY_CITY, "open_id": resident["open_id"], "template_id": "alipay-bill-due"},
    )
    reported = await client.post(
        "/api/v1/me/subscribe-grants",
        headers=bearer(resident),
        json={"channel": "alipay", "app_id": ALIPAY_CITY, "results": {"alipay-bill-due": "accept"}},
    )
    assert reported.status_code == 200, reported.text
    sent = await send(services, resident, "bill_due")
    assert channels(sent) == {"inbox": "sent", "alipay": "pending"}
    await deliver(services)
    assert channels(await message_of(services, sent.id)) == {"inbox": "sent", "alipay": "sent"}
    at_alipay = (await alipay_mini_sandbox.control("GET", f"/_sandbox/messages?app_id={ALIPAY_CITY}"))[
        "messages"
    ]
    mine = [m for m in at_alipay if m["user_id"] == resident["user_id"]]
    assert [m["template_id"] for m in mine] == ["alipay-bill-due"]
    # The one-time grant is spent: Alipay would refuse a second, so the platform does not try.
    assert channels(await send(services, resident, "bill_due")) == {"inbox": "sent"}


async def test_app_push_when_no_subscribe_message_can_go(client: Any, services: Any) -> None:
    resident = await login(client)
    token = "push-" + uuid.uuid4().hex
    registered = await client.post(
        "/api/v1/me/push-devices", headers=bearer(resident), json={"platform": "android", "token": token}
    )
    assert registered.status_code == 201, registered.text
    again = await client.post(
        "/api/v1/me/push-devices", headers=bearer(resident), json={"platform": "android", "token": token}
    )
    assert again.status_code == 200 and again.json()["id"] == registered.json()["id"]
    sent = await send(services, resident, "ticket_reminder")
    assert channels(sent) == {"inbox": "sent", "push": "pending"}
    await deliver(services)
    assert channels(await message_of(services, sent.id)) == {"inbox": "sent", "push": "sent"}
    push = notifications_of(services).push
    assert push is not None
    recorded = [p for p in push.pushes if p.token == token]  # type: ignore[attr-defined]
    assert [(p.title, p.data["kind"]) for p in recorded] == [("乘车欠费待补缴", "ticket_reminder")]
    removed = await client.delete(
        f"/api/v1/me/push-devices/{registered.json()['id']}", headers=bearer(resident)
    )
    assert removed.status_code == 204
    assert channels(await send(services, resident)) == {"inbox": "sent"}


async def test_a_department_message_names_the_resident_by_its_own_order(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    payee = await department(client, services)
    order_id = await order_of(client, resident, payee)
    first = await department_message(client, payee, order_id, key="reminder-1")
    assert first.status_code == 201, first.text
    again = await department_message(client, payee, order_id, key="reminder-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    seen = await signed_get(client, payee, f"/api/v1/messages/{first.json()['id']}")
    assert seen.status_code == 200 and seen.json()["deliveries"][0]["channel"] == "inbox"
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(resident))).json()
    assert [(m["title"], m["sender_name"]) for m in inbox["messages"]] == [
        ("演出即将开始", payee["organisation"]["name"])
    ]

    other = await department(client, services)
    refused = await department_message(client, other, order_id)
    assert refused.status_code == 404 and refused.json()["errors"][0]["field"] == "resident_ref.order_id"
    assert (await signed_get(client, other, f"/api/v1/messages/{first.json()['id']}")).status_code == 404
    unscoped = await department(client, services, scopes=())
    assert (await department_message(client, unscoped, order_id)).status_code == 403
    bad_kind = await signed_post(
        client, payee, {"resident_ref": {"order_id": order_id}, "message": {"kind": "x"}}
    )
    assert bad_kind.status_code == 400 and "message.kind" in bad_kind.text


async def signed_get(client: Any, credential: dict[str, Any], path: str) -> Any:
    from tests.helpers import signed

    return await signed(client, credential, "GET", path)


async def signed_post(client: Any, credential: dict[str, Any], body: dict[str, Any]) -> Any:
    from tests.helpers import signed

    return await signed(client, credential, "POST", "/api/v1/messages", body)


async def test_a_department_names_the_resident_by_the_sub_one_login_gave_it(
    client: Any, services: Any
) -> None:
    """A department that logs residents in knows them by its pairwise `sub`: that names the resident for a
    message; another department's `sub` for the same resident names nobody here, and a reference needs exactly
    one of order_id and sub."""
    from tests.app_backend.oidc.department import app_for, discover, log_in, registered, verified_claims

    async def sub_of(credential: dict[str, Any], resident: dict[str, Any]) -> str:
        app_reg = await registered(client, dept={**credential["organisation"], "admin": credential["admin"]})
        async with app_for(client, app_reg) as app:
            meta = await discover(app, client)
            token = await log_in(client, app, meta, resident)
            return str((await verified_claims(app, meta, token["id_token"]))["sub"])

    from tests.helpers import machine_credential

    resident = await login(client)
    hall, other = [
        await machine_credential(client, services, ["messages:send"], kind="department") for _ in range(2)
    ]
    sub = await sub_of(hall, resident)
    others_sub = await sub_of(other, resident)
    assert sub != others_sub

    body = {
        "resident_ref": {"sub": sub},
        "message": {"kind": "bill_due", "title": "水费账单", "body": "本月水费已出账"},
    }
    sent = await signed_post(client, hall, {**body, "message_key": "water-1"})
    assert sent.status_code == 201, sent.text
    inbox = (await client.get("/api/v1/me/inbox", headers=bearer(resident))).json()
    assert [m["title"] for m in inbox["messages"]] == ["水费账单"]

    crossed = await signed_post(client, hall, {**body, "resident_ref": {"sub": others_sub}})
    assert crossed.status_code == 404 and crossed.json()["errors"][0]["field"] == "resident_ref.sub"
    both = await signed_post(
        client, hall, {**body, "resident_ref": {"sub": sub, "order_id": str(uuid.uuid4())}}
    )
    neither = await signed_post(client, hall, {**body, "resident_ref": {}})
    assert both.status_code == neither.status_code == 400
    assert both.json()["errors"][0]["field"] == "resident_ref"
