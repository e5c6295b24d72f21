"""Issue 16: a tile's whole life by HTTP, as a department's system and an operations reviewer drive it: submit,
reject, fix, resubmit, approve, go live, a second version, suspend, resume, roll back, retire; every transition
audited and told to the department."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from tests.app_backend.tiles.helpers import (
    NOTICES,
    create,
    department,
    manage,
    ok,
    review,
    reviewer,
    statuses,
    unique,
)
from tests.helpers import bearer, signed


async def _shown(client: Any, tile_id: str) -> dict[str, Any] | None:
    """The tile as residents see it in the catalogue (no token), or None when it is not there."""
    answer = await client.get("/api/v1/tiles", params={"limit": 200, "category": "housing_fund"})
    assert answer.status_code == 200, answer.text
    return next((t for t in answer.json()["tiles"] if t["id"] == tile_id), None)


async def test_the_whole_life_of_a_tile(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    name = unique("公积金查询")

    tile = await create(client, dept, name=name)
    tid = tile["id"]
    assert tile["state"] == "unpublished" and tile["live_version"] is None
    assert statuses(tile) == {1: "draft"}
    assert tile["organisation_id"] == dept["organisation"]["id"]

    # Submitted, it waits in the reviewers' queue with its content.
    tile = ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    assert statuses(tile) == {1: "submitted"} and tile["versions"][0]["submitted_at"]
    queue = await client.get("/api/v1/admin/tiles/reviews", headers=bearer(rev))
    waiting = [r for r in queue.json()["reviews"] if r["tile_id"] == tid]
    assert [r["version"]["number"] for r in waiting] == [1] and waiting[0]["version"]["content"][
        "name"
    ] == name
    assert waiting[0]["live"] is None

    # Rejected with a reason; the same version cannot be submitted again.
    tile = ok(await review(client, rev, f"/{tid}/versions/1/reject", {"reason": "图标不清晰，请更换"}))
    assert statuses(tile) == {1: "rejected"} and tile["versions"][0]["review_note"] == "图标不清晰，请更换"
    again = await manage(client, dept, "POST", f"/{tid}/versions/1/submit")
    assert again.status_code == 409 and again.json()["state"] == "rejected"

    # Fixed as a new version, resubmitted, approved: not live until the department publishes it.
    fixed = {**_content_of(tile, 1), "icon": "https://static.example.cn/icons/gjj-v2.png"}
    tile = ok(await manage(client, dept, "POST", f"/{tid}/versions", fixed))
    assert statuses(tile) == {1: "rejected", 2: "draft"}
    ok(await manage(client, dept, "POST", f"/{tid}/versions/2/submit"))
    tile = ok(await review(client, rev, f"/{tid}/versions/2/approve", {"note": "通过"}))
    assert statuses(tile) == {1: "rejected", 2: "approved"} and tile["state"] == "unpublished"
    assert await _shown(client, tid) is None

    tile = ok(await manage(client, dept, "POST", f"/{tid}/versions/2/publish"))
    assert tile["state"] == "live" and tile["live_version"] == 2
    shown = await _shown(client, tid)
    assert shown is not None and shown["version"] == 2 and shown["status"] == "available"
    assert shown["icon"].endswith("gjj-v2.png") and shown["organisation_name"] == dept["organisation"]["name"]

    # A second change: version 3 replaces version 2, which is kept as superseded.
    v3 = {**fixed, "description": "查询公积金缴存、余额、提取和贷款"}
    ok(await manage(client, dept, "POST", f"/{tid}/versions", v3))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/3/submit"))
    ok(await review(client, rev, f"/{tid}/versions/3/approve"))
    tile = ok(await manage(client, dept, "POST", f"/{tid}/versions/3/publish"))
    assert statuses(tile) == {1: "rejected", 2: "superseded", 3: "live"} and tile["live_version"] == 3
    assert (await _shown(client, tid))["description"] == v3["description"]  # type: ignore[index]

    # Suspended: residents still see it, as temporarily unavailable with the department's notice.
    tile = ok(
        await manage(
            client,
            dept,
            "POST",
            f"/{tid}/suspend",
            {"reason": "接口升级", "resident_notice": "系统升级中，今晚恢复"},
        )
    )
    assert tile["state"] == "suspended" and tile["suspended_by"] == "department"
    shown = await _shown(client, tid)
    assert shown["status"] == "temporarily_unavailable"  # type: ignore[index]
    assert shown["unavailable_reason"] == "系统升级中，今晚恢复"  # type: ignore[index]

    tile = ok(await manage(client, dept, "POST", f"/{tid}/resume"))
    assert tile["state"] == "live" and tile["suspended_by"] is None
    assert (await _shown(client, tid))["status"] == "available"  # type: ignore[index]

    # Rolled back to version 2: live again, version 3 superseded.
    tile = ok(
        await manage(client, dept, "POST", f"/{tid}/rollback", {"version": 2, "reason": "新版描述有误"})
    )
    assert tile["live_version"] == 2 and statuses(tile) == {1: "rejected", 2: "live", 3: "superseded"}
    shown = await _shown(client, tid)
    assert shown["version"] == 2 and shown["description"] == fixed["description"]  # type: ignore[index]

    # Retired: gone from the catalogue for good, no version can be added.
    tile = ok(await manage(client, dept, "POST", f"/{tid}/retire", {"reason": "业务并入一网通办"}))
    assert tile["state"] == "retired" and statuses(tile) == {1: "rejected", 2: "retired", 3: "superseded"}
    assert await _shown(client, tid) is None
    assert (await client.get(f"/api/v1/tiles/{tid}")).status_code == 404
    refused = await manage(client, dept, "POST", f"/{tid}/versions", fixed)
    assert refused.status_code == 409 and refused.json()["state"] == "retired"

    # Every transition is in the audit trail, in order, with the states it moved between.
    async with services.pool.acquire() as conn:
        events = await services.audit.search(conn, target_id=tid, limit=100)
    trail = [
        (e.action, e.detail.get("from"), e.detail.get("to"), e.detail.get("version"))
        for e in reversed(events)
    ]
    assert trail == [
        ("tile.create", None, None, 1),
        ("tile.submit", "draft", "submitted", 1),
        ("tile.reject", "submitted", "rejected", 1),
        ("tile.version_create", None, None, 2),
        ("tile.submit", "draft", "submitted", 2),
        ("tile.approve", "submitted", "approved", 2),
        ("tile.publish", "approved", "live", 2),
        ("tile.version_create", None, None, 3),
        ("tile.submit", "draft", "submitted", 3),
        ("tile.approve", "submitted", "approved", 3),
        ("tile.publish", "approved", "live", 3),
        ("tile.suspend", "live", "suspended", 3),
        ("tile.resume", "suspended", "live", 3),
        ("tile.rollback", "live", "live", 2),
        ("tile.retire", "live", "retired", 2),
    ]
    by_actor = {(e.action, e.actor_type, e.actor_id) for e in events}
    assert ("tile.reject", "staff", rev["resident_id"]) in by_actor
    assert ("tile.publish", "organisation", dept["organisation"]["id"]) in by_actor
    reject = next(e for e in events if e.action == "tile.reject")
    assert reject.detail["reason"] == "图标不清晰，请更换" and reject.detail["by"] == "operations"

    # The department was told of every transition, newest first: what operations did is unread.
    notices = (await signed(client, dept, "GET", NOTICES)).json()
    told = [(n["event"], n["version"], n["by"], n["read_at"] is None) for n in reversed(notices["notices"])]
    assert told == [
        ("submit", 1, "department", False),
        ("reject", 1, "operations", True),
        ("submit", 2, "department", False),
        ("approve", 2, "operations", True),
        ("publish", 2, "department", False),
        ("submit", 3, "department", False),
        ("approve", 3, "operations", True),
        ("publish", 3, "department", False),
        ("suspend", 3, "department", False),
        ("resume", 3, "department", False),
        ("rollback", 2, "department", False),
        ("retire", 2, "department", False),
    ]
    assert notices["unread"] == 3
    assert all(n["tile_id"] == tid and n["tile_name"] == name for n in notices["notices"])
    rejected = next(n for n in notices["notices"] if n["event"] == "reject")
    assert rejected["reason"] == "图标不清晰，请更换" and rejected["state"] == "rejected"


def _content_of(tile: dict[str, Any], number: int) -> dict[str, Any]:
    return dict(next(v["content"] for v in tile["versions"] if v["number"] == number))


async def test_operations_suspend_resume_roll_back_and_retire_and_the_department_is_told(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tile = await create(client, dept, name=unique("社保缴费"))
    tid = tile["id"]
    for number in (1, 2):
        if number == 2:
            body = {**_content_of(tile, 1), "description": "第二版"}
            ok(await manage(client, dept, "POST", f"/{tid}/versions", body))
        ok(await manage(client, dept, "POST", f"/{tid}/versions/{number}/submit"))
        ok(await review(client, rev, f"/{tid}/versions/{number}/approve"))
        tile = ok(await manage(client, dept, "POST", f"/{tid}/versions/{number}/publish"))
    assert tile["live_version"] == 2
    assert (await signed(client, dept, "POST", f"{NOTICES}/read")).status_code == 204

    tile = ok(await review(client, rev, f"/{tid}/suspend", {"reason": "投诉集中，暂停核查"}))
    assert tile["state"] == "suspended" and tile["suspended_by"] == "operations"
    # The department may not lift what operations imposed.
    refused = await manage(client, dept, "POST", f"/{tid}/resume")
    assert refused.status_code == 403 and refused.json()["type"].endswith("tile-suspended-by-operations")
    tile = ok(await review(client, rev, f"/{tid}/rollback", {"version": 1, "reason": "回退到上一版"}))
    assert tile["state"] == "suspended" and tile["live_version"] == 1  # still suspended, another version
    tile = ok(await review(client, rev, f"/{tid}/resume", {"reason": "核查完毕"}))
    assert tile["state"] == "live"
    tile = ok(await review(client, rev, f"/{tid}/retire", {"reason": "连续三个月无人使用"}))
    assert tile["state"] == "retired" and tile["state_reason"] == "连续三个月无人使用"

    notices = (await signed(client, dept, "GET", NOTICES, None)).json()
    unread = [(n["event"], n["reason"]) for n in reversed(notices["notices"]) if n["read_at"] is None]
    assert unread == [
        ("suspend", "投诉集中，暂停核查"),
        ("rollback", "回退到上一版"),
        ("resume", "核查完毕"),
        ("retire", "连续三个月无人使用"),
    ]
    assert notices["unread"] == 4

    # Read marks: one, then all; another department cannot mark this one's notices.
    first = notices["notices"][0]["id"]
    other = await department(client, services)
    assert (await signed(client, other, "POST", f"{NOTICES}/{first}/read")).status_code == 404
    assert (await signed(client, dept, "POST", f"{NOTICES}/{first}/read")).status_code == 204
    assert (await signed(client, dept, "GET", NOTICES)).json()["unread"] == 3
    only_unread = (await signed(client, dept, "GET", f"{NOTICES}?unread_only=true")).json()
    assert len(only_unread["notices"]) == 3 and first not in {n["id"] for n in only_unread["notices"]}
    assert (await signed(client, dept, "POST", f"{NOTICES}/read")).status_code == 204
    assert (await signed(client, dept, "GET", NOTICES)).json()["unread"] == 0
    assert (await signed(client, other, "GET", NOTICES)).json() == {
        "notices": [],
        "unread": 0,
        "next_before": None,
    }
    missing = await signed(client, dept, "POST", f"{NOTICES}/{uuid.uuid4()}/read")
    assert missing.status_code == 404


async def test_notices_page_newest_first(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await create(client, dept, name=unique("不动产登记")))["id"]
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/withdraw"))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    ok(await review(client, rev, f"/{tid}/versions/1/approve"))
    first = (await signed(client, dept, "GET", f"{NOTICES}?limit=3")).json()
    assert [n["event"] for n in first["notices"]] == ["approve", "submit", "withdraw"]
    assert first["next_before"] is not None
    before = quote(first["next_before"], safe="")
    rest = (await signed(client, dept, "GET", f"{NOTICES}?limit=3&before={before}")).json()
    assert [n["event"] for n in rest["notices"]] == ["submit"] and rest["next_before"] is None
