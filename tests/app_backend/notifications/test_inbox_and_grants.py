"""The resident's side: grants reported from the mini-program, and the inbox."""

from __future__ import annotations

from typing import Any

from tests.app_backend.notifications.helpers import send, wechat_resident
from tests.helpers import bearer, login
from tests.mini_programs.sandboxes import WECHAT_CITY, WECHAT_DEPARTMENT, WechatMiniSandbox

GRANTS = "/api/v1/me/subscribe-grants"


async def test_grants_are_recorded_per_template_and_identity(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)
    results = {
        "wechat-fare-debt": "accept",
        "wechat-bill-due": "reject",
        "wechat-code-status-changed": "accept",
    }
    answer = await client.post(
        GRANTS,
        headers=bearer(resident),
        json={"channel": "wechat", "app_id": WECHAT_CITY, "results": results},
    )
    assert answer.status_code == 200, answer.text
    again = await client.post(
        GRANTS,
        headers=bearer(resident),
        json={"channel": "wechat", "app_id": WECHAT_CITY, "results": {"wechat-fare-debt": "accept"}},
    )
    assert again.status_code == 200
    listed = {
        g["template_id"]: g for g in (await client.get(GRANTS, headers=bearer(resident))).json()["grants"]
    }
    assert {t: (g["grant"], g["status"], g["remaining"]) for t, g in listed.items()} == {
        "wechat-fare-debt": ("one_time", "accepted", 2),
        "wechat-bill-due": ("one_time", "rejected", 0),
        "wechat-code-status-changed": ("long_term", "accepted", 0),
    }
    assert (
        listed["wechat-fare-debt"]["kinds"] == ["fare_debt"]
        and listed["wechat-fare-debt"]["app_name"] == "泰州通"
    )
    # A rejection later leaves the one-time grants already given; a ban stops the template.
    await client.post(
        GRANTS,
        headers=bearer(resident),
        json={"channel": "wechat", "app_id": WECHAT_CITY, "results": {"wechat-fare-debt": "reject"}},
    )
    banned = await client.post(
        GRANTS,
        headers=bearer(resident),
        json={"channel": "wechat", "app_id": WECHAT_CITY, "results": {"wechat-code-status-changed": "ban"}},
    )
    by_template = {g["template_id"]: g for g in banned.json()["grants"]}
    assert by_template["wechat-code-status-changed"]["status"] == "banned"
    listed = {
        g["template_id"]: g for g in (await client.get(GRANTS, headers=bearer(resident))).json()["grants"]
    }
    assert (listed["wechat-fare-debt"]["status"], listed["wechat-fare-debt"]["remaining"]) == ("accepted", 2)


async def test_bad_grant_reports_are_refused_naming_the_field(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    resident = await wechat_resident(client, wechat_mini_sandbox)

    async def report(body: dict[str, Any], who: dict[str, Any] = resident) -> Any:
        return await client.post(GRANTS, headers=bearer(who), json=body)

    unknown = await report({"channel": "wechat", "app_id": WECHAT_CITY, "results": {"nope": "accept"}})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "results.nope"
    not_linked = await report(
        {"channel": "wechat", "app_id": WECHAT_DEPARTMENT, "results": {"wechat-fare-debt": "accept"}}
    )
    assert not_linked.status_code == 422 and not_linked.json()["errors"][0]["field"] == "app_id"
    bad_result = await report(
        {"channel": "wechat", "app_id": WECHAT_CITY, "results": {"wechat-fare-debt": "yes"}}
    )
    assert bad_result.status_code == 400 and "results" in bad_result.text
    empty = await report({"channel": "wechat", "app_id": WECHAT_CITY, "results": {}})
    assert empty.status_code == 400 and "results" in empty.text
    app_user = await login(client)
    assert (
        await report({"channel": "wechat", "app_id": WECHAT_CITY, "results": {"x": "accept"}}, app_user)
    ).status_code == 422
    assert (await client.get(GRANTS)).status_code == 401


async def test_the_inbox_lists_newest_first_and_marks_read(client: Any, services: Any) -> None:
    resident, stranger = await login(client), await login(client)
    first = await send(services, resident, "fare_debt")
    second = await send(services, resident, "bill_due")
    third = await send(services, resident, "complaint_answered")
    inbox = (await client.get("/api/v1/me/inbox?limit=2", headers=bearer(resident))).json()
    assert [m["id"] for m in inbox["messages"]] == [str(third.id), str(second.id)]
    assert inbox["unread"] == 3 and inbox["next_before"] is not None
    rest = (
        await client.get(
            "/api/v1/me/inbox", headers=bearer(resident), params={"before": inbox["next_before"]}
        )
    ).json()
    assert [m["id"] for m in rest["messages"]] == [str(first.id)] and rest["next_before"] is None
    assert rest["messages"][0]["deliveries"] == [
        {
            "channel": "inbox",
            "app_id": None,
            "status": "sent",
            "attempts": 0,
            "error": None,
            "sent_at": rest["messages"][0]["deliveries"][0]["sent_at"],
        }
    ]

    read = await client.post(f"/api/v1/me/inbox/{second.id}/read", headers=bearer(resident))
    assert read.status_code == 204
    assert (
        await client.post(f"/api/v1/me/inbox/{second.id}/read", headers=bearer(resident))
    ).status_code == 204
    assert (
        await client.post(f"/api/v1/me/inbox/{second.id}/read", headers=bearer(stranger))
    ).status_code == 404
    unread = (await client.get("/api/v1/me/inbox?unread_only=true", headers=bearer(resident))).json()
    assert [m["id"] for m in unread["messages"]] == [str(third.id), str(first.id)] and unread["unread"] == 2
    assert (await client.post("/api/v1/me/inbox/read", headers=bearer(resident))).status_code == 204
    assert (await client.get("/api/v1/me/inbox", headers=bearer(resident))).json()["unread"] == 0
    assert (await client.get("/api/v1/me/inbox", headers=bearer(stranger))).json()["messages"] == []
    assert (await client.get("/api/v1/me/inbox?limit=0", headers=bearer(resident))).status_code == 400
