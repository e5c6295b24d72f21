"""A resident is told when what their code answers at a scan changes: one `code_status_changed` message per
change (a department's health or insurance feed, operations blocking or restoring the account), none for a
change that leaves every scan's answer as it was, and the status itself never in the message or the logs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from structlog.testing import capture_logs

from tests.app_backend.notifications.helpers import (
    deliver,
    inbox_of,
    sent_at_wechat,
    wechat_grant,
    wechat_real_named,
)
from tests.helpers import (
    face_verified,
    feed_health,
    feed_insurance,
    machine_credential,
    random_id_number,
    rider,
    set_resident_status,
    signed,
)
from tests.mini_programs.sandboxes import WechatMiniSandbox


async def _department(client: Any, services: Any, scope: str = "feeds:health") -> dict[str, Any]:
    return await machine_credential(client, services, [scope], kind="department")


async def _told(services: Any, person: dict[str, Any]) -> list[dict[str, Any]]:
    """The resident's code_status_changed messages, oldest first."""
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT title, body, params, sender, sender_key FROM notifications.messages
               WHERE resident_id = $1 AND kind = 'code_status_changed' ORDER BY created_at, id""",
            uuid.UUID(person["resident_id"]),
        )
    return [dict(r) for r in rows]


def _scenes(told: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["params"]["scene"], m["params"]["status"]) for m in told]


async def test_a_health_colour_change_tells_the_resident_once_and_the_same_colour_not_at_all(
    client, services
):
    person = await rider(client, services)  # L2: a health scan answers the colour
    health = await _department(client, services)

    await feed_health(client, health, person["id_number"], "green")  # none -> green: unknown -> green
    await feed_health(client, health, person["id_number"], "green")  # the same again: no change
    await feed_health(client, health, person["id_number"], "red")
    told = await _told(services, person)
    assert _scenes(told) == [("health", "changed"), ("health", "changed")]
    assert {(m["sender"], m["title"]) for m in told} == {("codes", "码的健康状态已更新")}
    assert len({m["sender_key"] for m in told}) == 2  # one key per change
    # The scene, never the colour: the message may leave for WeChat, Alipay or a push provider.
    for m in told:
        text = m["title"] + m["body"] + repr(m["params"])
        assert not any(word in text for word in ("red", "green", "红", "绿", "黄"))
    (newest, _) = await inbox_of(client, person)
    assert newest["kind"] == "code_status_changed" and newest["sender_name"] == "泰州通"


async def test_a_bulk_feed_tells_each_holder_once_by_what_it_changed_in_the_end(client, services):
    health = await _department(client, services)
    worse, back = await rider(client, services), await rider(client, services)
    for person in (worse, back):
        await feed_health(client, health, person["id_number"], "green")
    before = {p["resident_id"]: len(await _told(services, p)) for p in (worse, back)}

    items = [
        {"id_number": worse["id_number"], "colour": "yellow"},
        {"id_number": back["id_number"], "colour": "red"},
        {"id_number": worse["id_number"], "colour": "red"},
        {"id_number": random_id_number(), "colour": "red"},  # a person with no account
        {"id_number": back["id_number"], "colour": "green"},  # back where it was: no scan answers otherwise
    ]
    fed = await signed(client, health, "PUT", "/api/v1/feeds/health/bulk", {"items": items})
    assert fed.status_code == 200, fed.text
    assert fed.json()["changed"] == 5
    assert len(await _told(services, worse)) == before[worse["resident_id"]] + 1
    assert len(await _told(services, back)) == before[back["resident_id"]]


async def test_insurance_is_told_only_where_a_medical_scan_answers_it(client, services):
    insurance = await _department(client, services, "feeds:insurance")
    real_named_only = await rider(client, services)  # L2: the medical scene needs L3 (face)
    await feed_insurance(client, insurance, real_named_only["id_number"], True)
    assert await _told(services, real_named_only) == []

    person = await face_verified(client, await rider(client, services))
    await feed_insurance(client, insurance, person["id_number"], True)
    # Another scheme, still insured: a hospital's scan answers the same.
    fed = await signed(
        client,
        insurance,
        "PUT",
        "/api/v1/feeds/insurance",
        {"id_number": person["id_number"], "insured": True, "scheme": "城乡居民医保"},
    )
    assert fed.status_code == 200 and fed.json()["changed"] == 1, fed.text
    await feed_insurance(client, insurance, person["id_number"], False)
    told = await _told(services, person)
    assert _scenes(told) == [("medical", "changed"), ("medical", "changed")]
    assert {m["title"] for m in told} == {"码的医保状态已更新"}


async def test_blocking_and_restoring_the_account_are_told_once_each(client, services):
    person = await rider(client, services)
    health = await _department(client, services)

    # Operations block the account twice at once, then again: one change, one message.
    await asyncio.gather(
        *(set_resident_status(client, services, person["resident_id"], "blocked") for _ in range(2))
    )
    await set_resident_status(client, services, person["resident_id"], "blocked")
    assert _scenes(await _told(services, person)) == [("all", "blocked")]
    # While blocked every scan is refused: a new colour changes no answer.
    await feed_health(client, health, person["id_number"], "red")
    assert _scenes(await _told(services, person)) == [("all", "blocked")]

    await set_resident_status(client, services, person["resident_id"], "active")
    await set_resident_status(client, services, person["resident_id"], "active")
    told = await _told(services, person)
    assert _scenes(told) == [("all", "blocked"), ("all", "restored")]
    assert [m["title"] for m in told] == ["泰州通码已暂停使用", "泰州通码已恢复使用"]


async def test_nothing_personal_is_logged_when_residents_are_told(client, services):
    person = await rider(client, services)
    health = await _department(client, services)
    with capture_logs() as logs:
        await feed_health(client, health, person["id_number"], "yellow")
        await set_resident_status(client, services, person["resident_id"], "blocked")
    assert len(await _told(services, person)) == 2
    assert person["id_number"] not in repr(logs) and person["phone"] not in repr(logs)
    assert "yellow" not in repr(logs)


async def test_a_resident_with_a_long_term_grant_gets_each_change_in_wechat(
    client, services, wechat_mini_sandbox: WechatMiniSandbox
):
    """The demo configuration's code-status template is long-term: every change goes out, none spends a grant."""
    person = await wechat_real_named(client, services, wechat_mini_sandbox)
    template = await wechat_grant(client, wechat_mini_sandbox, person, "code_status_changed", "long_term")
    health = await _department(client, services)
    for colour in ("green", "yellow"):
        await feed_health(client, health, person["id_number"], colour)
    messages = await inbox_of(client, person)
    assert [{d["channel"]: d["status"] for d in m["deliveries"]} for m in messages] == [
        {"inbox": "sent", "wechat": "pending"}
    ] * 2
    await deliver(services)
    sent = await sent_at_wechat(wechat_mini_sandbox, person["openid"])
    assert [(m["template_id"], m["data"]["thing1"]["value"]) for m in sent] == [
        (template, "码的健康状态已更新")
    ] * 2
