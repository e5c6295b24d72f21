"""A resident's channel identities: seen, linked from any client with a fresh code, unlinked; one identity
belongs to one resident, and whatever would join two accounts is refused with a clear problem, never merged."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import bearer, login, random_phone
from tests.mini_programs.sandboxes import (
    ALIPAY_CITY,
    WECHAT_CITY,
    AlipayMiniSandbox,
    WechatMiniSandbox,
)

IDENTITIES = "/api/v1/me/mini-program-identities"


async def _wechat_login(
    client: Any, sandbox: WechatMiniSandbox, phone: str | None = None, **user: Any
) -> Any:
    wx = await sandbox.login_code(WECHAT_CITY, **user)
    body = {"app_id": WECHAT_CITY, "code": wx["code"]}
    if phone:
        body["phone_code"] = await sandbox.phone_code(phone)
    return await client.post("/api/v1/mini-programs/wechat/login", json=body)


async def test_a_resident_links_a_second_channel_from_the_app_and_logs_in_with_it(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, alipay_mini_sandbox: AlipayMiniSandbox, services: Any
) -> None:
    tokens = await login(client)
    wx = await wechat_mini_sandbox.login_code()
    linked = await client.post(
        IDENTITIES + "/wechat", json={"app_id": WECHAT_CITY, "code": wx["code"]}, headers=bearer(tokens)
    )
    assert linked.status_code == 201, linked.text
    alipay = await alipay_mini_sandbox.auth_code()
    second = await client.post(
        IDENTITIES + "/alipay", json={"app_id": ALIPAY_CITY, "code": alipay["code"]}, headers=bearer(tokens)
    )
    assert second.status_code == 201, second.text
    listed = (await client.get(IDENTITIES, headers=bearer(tokens))).json()["identities"]
    assert [(i["channel"], i["app_id"], i["app_name"]) for i in listed] == [
        ("wechat", WECHAT_CITY, "泰州通"),
        ("alipay", ALIPAY_CITY, "泰州通"),
    ]
    # Linking again is no change; logging in with the linked identity needs no phone.
    again = await wechat_mini_sandbox.login_code(openid=wx["openid"])
    relinked = await client.post(
        IDENTITIES + "/wechat", json={"app_id": WECHAT_CITY, "code": again["code"]}, headers=bearer(tokens)
    )
    assert relinked.status_code == 200 and relinked.json()["id"] == linked.json()["id"]
    mini = await _wechat_login(client, wechat_mini_sandbox, openid=wx["openid"])
    assert mini.status_code == 200 and mini.json()["resident_id"] == tokens["resident_id"]
    async with services.pool.acquire() as conn:
        actions = await conn.fetch(
            "SELECT action FROM audit.events WHERE target_id = $1 ORDER BY id", linked.json()["id"]
        )
    assert [a["action"] for a in actions] == ["mini_programs.link"]


async def test_unlinking_lets_the_identity_be_linked_again_elsewhere(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    phone = random_phone()
    mine = await _wechat_login(client, wechat_mini_sandbox, phone)
    assert mine.status_code == 200
    identity = (await client.get(IDENTITIES, headers=bearer(mine.json()))).json()["identities"][0]
    someone = await login(client)
    refused = await client.delete(f"{IDENTITIES}/{identity['id']}", headers=bearer(someone))
    assert refused.status_code == 404  # not theirs
    gone = await client.delete(f"{IDENTITIES}/{identity['id']}", headers=bearer(mine.json()))
    assert gone.status_code == 204
    # The session was opened through the identity: it ended with the link (tests/mini_programs/
    # test_unlinking_logs_out.py). The app's SMS log-in sees the account.
    assert (await client.get(IDENTITIES, headers=bearer(mine.json()))).status_code == 401
    app = await login(client, phone)
    assert (await client.get(IDENTITIES, headers=bearer(app))).json()["identities"] == []
    twice = await client.delete(f"{IDENTITIES}/{identity['id']}", headers=bearer(app))
    assert twice.status_code == 404
    bad = await client.delete(f"{IDENTITIES}/not-a-uuid", headers=bearer(app))
    assert bad.status_code in (400, 404)


async def test_conflicts_are_refused_with_a_clear_problem_and_nothing_is_merged(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    openid = f"o{uuid.uuid4().hex[:27]}"
    owner_phone = random_phone()
    owner = await _wechat_login(client, wechat_mini_sandbox, owner_phone, openid=openid)
    assert owner.status_code == 200, owner.text
    other = await login(client)
    # Another account links the owner's WeChat user: refused, the identity stays with its owner.
    wx = await wechat_mini_sandbox.login_code(openid=openid)
    taken = await client.post(
        IDENTITIES + "/wechat", json={"app_id": WECHAT_CITY, "code": wx["code"]}, headers=bearer(other)
    )
    assert taken.status_code == 409 and taken.json()["type"].endswith("/identity-linked-elsewhere"), (
        taken.text
    )
    # The owner's WeChat user logs in with the other account's phone: refused naming the phone, not merged.
    wx = await wechat_mini_sandbox.login_code(openid=openid)
    body = {
        "app_id": WECHAT_CITY,
        "code": wx["code"],
        "phone_code": await wechat_mini_sandbox.phone_code(other["phone"]),
    }
    clash = await client.post("/api/v1/mini-programs/wechat/login", json=body)
    assert clash.status_code == 409 and clash.json()["type"].endswith("/phone-conflict"), clash.text
    assert clash.json()["errors"][0]["field"] == "phone_code"
    # A second WeChat user of the same mini-program with the owner's phone: the account has one already.
    second = await _wechat_login(client, wechat_mini_sandbox, owner_phone)
    assert second.status_code == 409 and second.json()["type"].endswith("/app-already-linked"), second.text
    # Nothing moved: the owner still has exactly its identity, the other account none.
    assert len((await client.get(IDENTITIES, headers=bearer(owner.json()))).json()["identities"]) == 1
    assert (await client.get(IDENTITIES, headers=bearer(other))).json()["identities"] == []
    # The owner's own phone with its own WeChat user is no conflict.
    wx = await wechat_mini_sandbox.login_code(openid=openid)
    body = {
        "app_id": WECHAT_CITY,
        "code": wx["code"],
        "phone_code": await wechat_mini_sandbox.phone_code(owner_phone),
    }
    fine = await client.post("/api/v1/mini-programs/wechat/login", json=body)
    assert fine.status_code == 200 and fine.json()["resident_id"] == owner.json()["resident_id"]


async def test_a_link_request_needs_a_login_and_names_bad_fields(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    anonymous = await client.post(IDENTITIES + "/wechat", json={"app_id": WECHAT_CITY, "code": "x"})
    assert anonymous.status_code == 401
    tokens = await login(client)
    unknown = await client.post(
        IDENTITIES + "/wechat", json={"app_id": "wx1", "code": "x"}, headers=bearer(tokens)
    )
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "app_id"
    expired = await wechat_mini_sandbox.login_code(expired=True)
    refused = await client.post(
        IDENTITIES + "/wechat", json={"app_id": WECHAT_CITY, "code": expired["code"]}, headers=bearer(tokens)
    )
    assert refused.status_code == 401 and refused.json()["errors"][0]["field"] == "code"
