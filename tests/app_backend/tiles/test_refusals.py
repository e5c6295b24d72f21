"""Issue 16: what departments and reviewers are refused, by HTTP: approving one's own tile, touching another
department's tile, a transition the state does not allow (a 409 naming the state), a field that breaks a rule (a
4xx naming the field), an unsigned request or a credential without the scope."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from app_backend.kernel.actors import Actor
from app_backend.kernel.errors import DomainError
from app_backend.tiles.schemas import TileContent
from app_backend.tiles.service import Caller, TileService, checked_content
from tests.app_backend.oidc.department import registered
from tests.app_backend.tiles.helpers import (
    ADMIN,
    MANAGE,
    content,
    create,
    department,
    live,
    manage,
    ok,
    review,
    reviewer,
    unique,
)
from tests.helpers import bearer, login, signed, staff


async def test_a_department_cannot_approve_its_own_tile(client, services):
    dept = await department(client, services)
    tid = (await create(client, dept, name=unique("公积金")))["id"]
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))

    # Its signed request does not reach the reviewers' routes (they need a staff token) ...
    signed_approval = await signed(client, dept, "POST", f"{ADMIN}/{tid}/versions/1/approve", {})
    assert signed_approval.status_code == 401
    # ... nor is there an approval among its own routes.
    assert (await manage(client, dept, "POST", f"/{tid}/versions/1/approve", {})).status_code in (404, 405)
    # A resident without a staff role, and staff without ops_reviewer, are refused too.
    for who in (await login(client), await staff(client, services, role="ops_admin")):
        answer = await review(client, who, f"/{tid}/versions/1/approve")
        assert answer.status_code == 403, answer.text
    # The service itself refuses a department, and a reviewer who belongs to the owning department (no staff
    # member is linked to a department yet; the rule is in place for when they are).
    tiles = services.platform.get(TileService)
    owner = uuid.UUID(dept["organisation"]["id"])
    actor = Actor("staff", str(uuid.uuid4()))
    async with services.pool.acquire() as conn:
        for caller, kind in (
            (Caller.department(owner, actor), "tile-role"),
            (Caller.operations(actor, organisation_id=owner), "tile-own-department"),
        ):
            async with conn.transaction():
                with pytest.raises(DomainError) as refused:
                    await tiles.approve(conn, caller, uuid.UUID(tid), 1)
            assert refused.value.status == 403 and refused.value.type == kind
    tile = ok(await manage(client, dept, "GET", f"/{tid}"))
    assert tile["versions"][0]["status"] == "submitted"


async def test_a_department_cannot_see_or_touch_another_departments_tile(client, services):
    owner, other, rev = (
        await department(client, services),
        await department(client, services),
        await reviewer(client, services),
    )
    drafted = await create(client, owner, name=unique("社保"))
    shown = await live(client, owner, rev, name=unique("不动产"))
    for tid in (drafted["id"], shown["id"]):
        for method, tail, body in (
            ("GET", f"/{tid}", None),
            ("PUT", f"/{tid}/versions/1", content()),
            ("POST", f"/{tid}/versions", content()),
            ("POST", f"/{tid}/versions/1/submit", None),
            ("POST", f"/{tid}/versions/1/publish", None),
            ("POST", f"/{tid}/suspend", {"reason": "测试"}),
            ("POST", f"/{tid}/resume", None),
            ("POST", f"/{tid}/rollback", {"version": 1, "reason": "测试"}),
            ("POST", f"/{tid}/retire", {"reason": "测试"}),
        ):
            answer = await manage(client, other, method, tail, body)
            assert answer.status_code == 404, f"{method} {tail}: {answer.status_code} {answer.text}"
            assert "tile_id" in answer.json()["detail"]
    mine = ok(await manage(client, other, "GET", ""))
    assert mine["tiles"] == []
    # The owner's tiles are as they were.
    assert ok(await manage(client, owner, "GET", f"/{drafted['id']}"))["versions"][0]["status"] == "draft"
    assert ok(await manage(client, owner, "GET", f"/{shown['id']}"))["state"] == "live"
    # Reviewers never see drafts: not in a tile's versions, not as a tile's latest version.
    seen = (await client.get(f"{ADMIN}/{drafted['id']}", headers=bearer(rev))).json()
    assert seen["versions"] == []
    listed = (
        await client.get(ADMIN, headers=bearer(rev), params={"organisation_id": owner["organisation"]["id"]})
    ).json()
    assert [t["id"] for t in listed["tiles"]] == [shown["id"]]


def _state_refused(answer: Any, state: str) -> None:
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert (
        problem["type"].endswith("/tile-state") and problem["state"] == state and state in problem["detail"]
    )


async def test_a_transition_the_state_does_not_allow_is_a_409_naming_the_state(client, services):
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await create(client, dept, name=unique("公积金")))["id"]
    _state_refused(await review(client, rev, f"/{tid}/versions/1/approve"), "draft")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"), "draft")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}), "unpublished")
    _state_refused(
        await manage(client, dept, "POST", f"/{tid}/rollback", {"version": 1, "reason": "回退"}),
        "unpublished",
    )
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions", content()), "draft")

    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"), "submitted")
    _state_refused(await manage(client, dept, "PUT", f"/{tid}/versions/1", content()), "submitted")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"), "submitted")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions", content()), "submitted")

    ok(await review(client, rev, f"/{tid}/versions/1/approve"))
    _state_refused(await review(client, rev, f"/{tid}/versions/1/approve"), "approved")
    _state_refused(await review(client, rev, f"/{tid}/versions/1/reject", {"reason": "不行"}), "approved")
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"))
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"), "live")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/resume"), "live")
    _state_refused(
        await manage(client, dept, "POST", f"/{tid}/rollback", {"version": 1, "reason": "回退"}), "live"
    )

    # A rejected version cannot be rolled back to; a version that does not exist is a 404 naming it.
    ok(await manage(client, dept, "POST", f"/{tid}/versions", content(name=unique("公积金"))))
    ok(await manage(client, dept, "POST", f"/{tid}/versions/2/submit"))
    ok(await review(client, rev, f"/{tid}/versions/2/reject", {"reason": "名称不规范"}))
    _state_refused(
        await manage(client, dept, "POST", f"/{tid}/rollback", {"version": 2, "reason": "回退"}), "rejected"
    )
    missing = await manage(client, dept, "POST", f"/{tid}/versions/9/submit")
    assert missing.status_code == 404 and "version" in missing.json()["detail"]

    ok(await manage(client, dept, "POST", f"/{tid}/retire", {"reason": "停办"}))
    _state_refused(await manage(client, dept, "POST", f"/{tid}/retire", {"reason": "停办"}), "retired")
    _state_refused(await review(client, rev, f"/{tid}/suspend", {"reason": "停办"}), "retired")
    _state_refused(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"), "retired")


async def _department_client(client: Any, dept: dict[str, Any]) -> str:
    reg = await registered(client, {**dept["organisation"], "admin": dept["admin"]})
    return str(reg["client"]["client_id"])


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"name": "   "}, "name", 400),
        ({"name": "x" * 33}, "name", 400),
        ({"icon": "not a url at all"}, "icon", 400),
        ({"icon": "ftp://static.example.cn/a.png"}, "icon", 400),
        ({"icon": "https://user:pw@static.example.cn/a.png"}, "icon", 400),
        ({"category": "lottery"}, "category", 400),
        ({"description": " "}, "description", 400),
        ({"keywords": ["公积金", "  "]}, "keywords[1]", 400),
        ({"regions": ["321200", "110105"]}, "regions[1]", 400),
        ({"regions": []}, "regions", 400),
        ({"entry": {}}, "entry", 400),
        ({"entry": {"h5_url": "javascript:alert(1)"}}, "entry.h5_url", 400),
        ({"entry": {"wechat": {"app_id": "wx123", "path": "pages/index/index"}}}, "entry.wechat.app_id", 400),
        (
            {"entry": {"alipay": {"app_id": "2021000000000102", "path": "../../etc"}}},
            "entry.alipay.path",
            400,
        ),
        ({"entry": {"app_route": "services/gjj"}}, "entry.app_route", 400),
        ({"entry": {"h5_url": "https://a.example.cn", "telegram": "x"}}, "entry.telegram", 400),
        ({"min_level": "L4"}, "min_level", 400),
        (
            {"service_hours": {"windows": [{"days": [1, 2], "opens": "17:00", "closes": "09:00"}]}},
            "service_hours.windows[0].closes",
            400,
        ),
        (
            {"service_hours": {"windows": [{"days": [8], "opens": "08:00", "closes": "09:00"}]}},
            "service_hours.windows[0].days[0]",
            400,
        ),
        ({"health_check_url": "gopher://x.example.cn"}, "health_check_url", 400),
        ({"auto_suspend": True, "entry": {"app_route": "/services/gjj"}}, "auto_suspend", 400),
        ({"oidc_client_id": "tzo_nobodys"}, "oidc_client_id", 422),
    ],
)
async def test_a_field_that_breaks_a_rule_is_refused_naming_it(client, services, fields, field, status):
    dept = await department(client, services)
    answer = await signed(client, dept, "POST", MANAGE, content(**fields))
    assert answer.status_code == status, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]], answer.text
    assert ok(await manage(client, dept, "GET", ""))["tiles"] == []  # nothing stored


async def test_the_one_login_client_must_be_the_departments_own(client, services):
    dept, other = await department(client, services), await department(client, services)
    own, foreign = await _department_client(client, dept), await _department_client(client, other)
    refused = await signed(client, dept, "POST", MANAGE, content(oidc_client_id=foreign))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "oidc_client_id"
    tile = await create(client, dept, oidc_client_id=own)
    assert tile["versions"][0]["content"]["oidc_client_id"] == own
    # Revoked after the draft was written: the submission checks it again.
    revoked = await client.delete(f"/api/v1/admin/oidc/clients/{own}", headers=bearer(dept["admin"]))
    assert revoked.status_code == 204, revoked.text
    again = await manage(client, dept, "POST", f"/{tile['id']}/versions/1/submit")
    assert again.status_code == 422 and again.json()["errors"][0]["field"] == "oidc_client_id"


def test_outside_dev_only_https_urls_are_taken():
    body = msgspec.convert(content(entry={"h5_url": "http://gjj.example.cn/h5"}), TileContent)
    checked_content(body, dev=True)
    with pytest.raises(DomainError) as refused:
        checked_content(body, dev=False)
    assert refused.value.extra["errors"][0]["field"] == "entry.h5_url"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"health_check_url": "https://127.0.0.1/health"}, "health_check_url"),
        ({"health_check_url": "https://10.20.0.7:8443/health"}, "health_check_url"),
        ({"health_check_url": "https://[::1]/health"}, "health_check_url"),
        ({"entry": {"h5_url": "https://169.254.169.254/latest/meta-data"}}, "entry.h5_url"),
        ({"entry": {"h5_url": "https://192.168.0.10/h5"}}, "entry.h5_url"),
    ],
)
def test_outside_dev_a_url_naming_a_private_address_is_refused(fields, field):
    """An address written as such is refused when the version is written; a name is checked each time the
    health checks probe it (tests/app_backend/tiles/test_health.py)."""
    body = msgspec.convert(content(**fields), TileContent)
    checked_content(body, dev=True)
    with pytest.raises(DomainError) as refused:
        checked_content(body, dev=False)
    assert refused.value.extra["errors"][0]["field"] == field
    public = msgspec.convert(content(health_check_url="https://223.5.5.5/health"), TileContent)
    checked_content(public, dev=False)


async def test_an_unsigned_request_or_a_credential_without_the_scope_is_refused(client, services):
    answer = await client.post(MANAGE, json=content())
    assert answer.status_code == 401
    assert (await client.get("/api/v1/tiles/notices")).status_code == 401
    messenger = await department(client, services, scopes=("messages:send",))
    for method, path, body in (
        ("POST", MANAGE, content()),
        ("GET", MANAGE, None),
        ("GET", "/api/v1/tiles/notices", None),
    ):
        refused = await signed(client, messenger, method, path, body)
        assert refused.status_code == 403 and "tiles:manage" in refused.json()["detail"], refused.text
    # A bad signature is refused before anything is looked at.
    dept = await department(client, services)
    forged = await signed(client, {**dept, "secret": "tzs_" + "x" * 43}, "POST", MANAGE, content())
    assert forged.status_code == 401
    assert ok(await manage(client, dept, "GET", ""))["tiles"] == []


async def test_a_suspension_is_lifted_only_by_whom_it_allows(client, services):
    """The health checks (the next part of the issue) suspend through the same state machine: they may lift their
    own suspension, never a department's; the department may lift theirs; operations may lift any."""
    dept, rev = await department(client, services), await reviewer(client, services)
    tiles = services.platform.get(TileService)
    health = Caller.health(Actor("system", "tiles-health"))
    tid = uuid.UUID((await live(client, dept, rev, name=unique("公积金")))["id"])
    async with services.pool.acquire() as conn:
        async with conn.transaction():
            tile = await tiles.suspend(conn, health, tid, "health URL down for 30 minutes")
        assert tile.suspended_by == "health"
        async with conn.transaction():
            assert (await tiles.resume(conn, health, tid, "health URL answers again")).state == "live"
    ok(await manage(client, dept, "POST", f"/{tid}/suspend", {"reason": "维护"}))
    async with services.pool.acquire() as conn, conn.transaction():
        with pytest.raises(DomainError) as refused:
            await tiles.resume(conn, health, tid)
    assert refused.value.status == 403 and refused.value.type == "tile-suspended-by-department"
    ok(await review(client, rev, f"/{tid}/resume", {"reason": "已核实"}))
    notices = (await signed(client, dept, "GET", "/api/v1/tiles/notices")).json()["notices"]
    assert [(n["event"], n["by"]) for n in reversed(notices)][-4:] == [
        ("suspend", "health"),
        ("resume", "health"),
        ("suspend", "department"),
        ("resume", "operations"),
    ]


async def test_administrators_and_auditors_read_tiles_but_only_reviewers_move_them(client, services):
    """The staff reads are for ops_reviewer, ops_admin and auditor; the transitions for ops_reviewer only (a guard
    on the whole controller once refused the administrators and auditors the reads allow)."""
    dept, rev = await department(client, services), await reviewer(client, services)
    tid = (await live(client, dept, rev, name=unique("只读")))["id"]
    for role in ("ops_admin", "auditor"):
        reader = await staff(client, services, role=role)
        for path in (ADMIN, f"{ADMIN}/reviews", f"{ADMIN}/{tid}", f"{ADMIN}/retirement-candidates"):
            answer = await client.get(path, headers=bearer(reader))
            assert answer.status_code == 200, (role, path, answer.text)
        for tail, body in (
            (f"/{tid}/suspend", {"reason": "越权操作"}),
            (f"/{tid}/retire", {"reason": "越权操作"}),
        ):
            refused = await review(client, reader, tail, body)
            assert refused.status_code == 403, (role, tail, refused.text)
    assert ok(await manage(client, dept, "GET", f"/{tid}"))["state"] == "live"
