"""The resident deletes messages: one at a time or every read one; a deleted message is gone from the inbox and the
unread count, its content erased, and what was still to be sent of it is cancelled."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from app_backend.kernel.clock import now
from tests.app_backend.notifications.helpers import (
    SUBSCRIBE_SEND,
    channels,
    deliver,
    department,
    department_message,
    inbox_of,
    message_of,
    notifications_of,
    order_of,
    send,
    sent_at_wechat,
    wechat_grant,
    wechat_resident,
)
from tests.helpers import bearer, login
from tests.mini_programs.sandboxes import WechatMiniSandbox


async def unread_of(client: Any, resident: dict[str, Any]) -> int:
    answer = await client.get("/api/v1/me/inbox", headers=bearer(resident))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["unread"])


async def remaining_grants(client: Any, resident: dict[str, Any]) -> int:
    answer = await client.get("/api/v1/me/subscribe-grants", headers=bearer(resident))
    return int(answer.json()["grants"][0]["remaining"])


async def stored(services: Any, message_id: uuid.UUID) -> Any:
    async with services.pool.acquire() as conn:
        return await conn.fetchrow(
            "SELECT title, body, params, deleted_at FROM notifications.messages WHERE id = $1", message_id
        )


async def test_a_deleted_message_leaves_the_inbox_and_the_unread_count(client: Any, services: Any) -> None:
    resident = await login(client)
    kept, gone = await send(services, resident, params={"amount": "3.00元"}), await send(services, resident)
    assert await unread_of(client, resident) == 2

    deleted = await client.delete(f"/api/v1/me/inbox/{gone.id}", headers=bearer(resident))
    assert deleted.status_code == 204, deleted.text
    assert [m["id"] for m in await inbox_of(client, resident)] == [str(kept.id)]
    assert await unread_of(client, resident) == 1
    unread_only = await client.get("/api/v1/me/inbox?unread_only=true", headers=bearer(resident))
    assert [m["id"] for m in unread_only.json()["messages"]] == [str(kept.id)]
    # The content is erased; the row stays as the sender's record.
    row = await stored(services, gone.id)
    assert (row["title"], row["body"], row["params"]) == ("", "", {}) and row["deleted_at"] is not None
    assert [d.channel for d in (await message_of(services, gone.id)).deliveries] == ["inbox"]

    again = await client.delete(f"/api/v1/me/inbox/{gone.id}", headers=bearer(resident))
    assert again.status_code == 404
    assert (
        await client.post(f"/api/v1/me/inbox/{gone.id}/read", headers=bearer(resident))
    ).status_code == 404
    other = await login(client)
    assert (await client.delete(f"/api/v1/me/inbox/{kept.id}", headers=bearer(other))).status_code == 404
    assert (
        await client.delete(f"/api/v1/me/inbox/{uuid.uuid4()}", headers=bearer(resident))
    ).status_code == 404
    assert (await client.delete(f"/api/v1/me/inbox/{kept.id}")).status_code == 401
    assert await unread_of(client, resident) == 1


async def test_deleting_the_read_messages_keeps_the_unread_ones(client: Any, services: Any) -> None:
    resident = await login(client)
    sent = [await send(services, resident) for _ in range(4)]
    for message in sent[:3]:
        read = await client.post(f"/api/v1/me/inbox/{message.id}/read", headers=bearer(resident))
        assert read.status_code == 204
    other = await login(client)
    others = await send(services, other)
    await client.post(f"/api/v1/me/inbox/{others.id}/read", headers=bearer(other))

    deleted = await client.delete("/api/v1/me/inbox/read", headers=bearer(resident))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": 3}
    assert [m["id"] for m in await inbox_of(client, resident)] == [str(sent[3].id)]
    assert await unread_of(client, resident) == 1
    again = await client.delete("/api/v1/me/inbox/read", headers=bearer(resident))
    assert again.json() == {"deleted": 0}
    # Another resident's read message is theirs to delete.
    assert [m["id"] for m in await inbox_of(client, other)] == [str(others.id)]


async def test_a_deleted_messages_pending_delivery_is_cancelled_and_its_unused_grant_given_back(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "fare_debt")
    sent = await send(services, resident)
    assert channels(sent) == {"inbox": "sent", "wechat": "pending"}
    assert await remaining_grants(client, resident) == 0

    deleted = await client.delete(f"/api/v1/me/inbox/{sent.id}", headers=bearer(resident))
    assert deleted.status_code == 204
    after = await message_of(services, sent.id)
    assert channels(after) == {"inbox": "sent", "wechat": "cancelled"}
    wechat = next(d for d in after.deliveries if d.channel == "wechat")
    assert wechat.error is not None and "deleted" in wechat.error
    # No channel saw it: the one-time grant is the resident's again, for the next message.
    assert await remaining_grants(client, resident) == 1
    await deliver(services)
    assert await sent_at_wechat(wechat_mini_sandbox, resident["openid"]) == []
    assert channels(await send(services, resident)) == {"inbox": "sent", "wechat": "pending"}


async def test_a_delivery_tried_already_is_cancelled_and_keeps_its_grant_spent(
    client: Any, services: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    """A fault leaves the delivery pending for a retry; deleted then, it is never retried, and the grant stays
    spent (whether WeChat used it cannot be known, as for a delivery that gives up)."""
    resident = await wechat_resident(client, wechat_mini_sandbox)
    await wechat_grant(client, wechat_mini_sandbox, resident, "bill_due")
    await deliver(services)  # what other tests left pending goes first, so the fault meets this message
    await wechat_mini_sandbox.fault(SUBSCRIBE_SEND, "busy")
    sent = await send(services, resident, "bill_due")
    await deliver(services)
    assert channels(await message_of(services, sent.id))["wechat"] == "pending"

    await client.post("/api/v1/me/inbox/read", headers=bearer(resident))
    deleted = await client.delete("/api/v1/me/inbox/read", headers=bearer(resident))
    assert deleted.json() == {"deleted": 1}
    assert channels(await message_of(services, sent.id)) == {"inbox": "sent", "wechat": "cancelled"}
    assert await remaining_grants(client, resident) == 0
    counts = await deliver(services, at=now() + dt.timedelta(hours=1))
    assert counts["sent"] == 0
    assert await sent_at_wechat(wechat_mini_sandbox, resident["openid"]) == []


async def test_a_job_run_that_claimed_a_delivery_before_the_delete_does_not_send_it(
    client: Any, services: Any
) -> None:
    """The delete comes between the job's claim and its call to the channel: nothing is pushed (the content is
    gone), and the run records nothing over the cancellation."""
    resident = await login(client)
    token = "push-" + uuid.uuid4().hex
    registered = await client.post(
        "/api/v1/me/push-devices", headers=bearer(resident), json={"platform": "ios", "token": token}
    )
    assert registered.status_code == 201
    sent = await send(services, resident, "ticket_reminder")
    assert channels(sent) == {"inbox": "sent", "push": "pending"}
    notifications = notifications_of(services)
    original = notifications._attempt

    async def deleted_meanwhile(pool: Any, delivery: Any) -> Any:
        answer = await client.delete(f"/api/v1/me/inbox/{sent.id}", headers=bearer(resident))
        assert answer.status_code == 204
        return await original(pool, delivery)

    notifications._attempt = deleted_meanwhile  # type: ignore[method-assign]
    try:
        counts = await deliver(services)
    finally:
        del notifications._attempt
    assert counts["cancelled"] >= 1
    assert notifications.push is not None
    assert [p for p in notifications.push.pushes if p.token == token] == []  # type: ignore[attr-defined]
    assert channels(await message_of(services, sent.id)) == {"inbox": "sent", "push": "cancelled"}


async def test_a_department_repeating_a_deleted_messages_key_sends_nothing_again(
    client: Any, services: Any
) -> None:
    resident = await login(client)
    payee = await department(client, services)
    order_id = await order_of(client, resident, payee)
    first = await department_message(client, payee, order_id, key="reminder-deleted")
    assert first.status_code == 201
    await client.delete(f"/api/v1/me/inbox/{first.json()['id']}", headers=bearer(resident))
    again = await department_message(client, payee, order_id, key="reminder-deleted")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert await inbox_of(client, resident) == []
