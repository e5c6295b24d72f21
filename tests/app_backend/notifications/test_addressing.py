"""Whom a department may message: the residents who used its service (paid one of its orders, logged in to one of
its apps through one login) and the residents of the regions operations allow it to address. A department names a
resident by ID number; a person it may not address and a number nobody holds get the same refusal. The platform's
own messages are not restricted."""

from __future__ import annotations

import uuid
from typing import Any

from structlog.testing import capture_logs

from app_backend.kernel.messages import PlatformMessage
from app_backend.kernel.regions import CITY
from app_backend.notifications.service import NotificationService
from tests.app_backend.notifications.helpers import (
    by_id_number,
    department,
    inbox_of,
    notifications_of,
    order_of,
    pay,
    set_message_regions,
)
from tests.helpers import bearer, login, machine_credential, nobodys_id_number, real_named, signed, staff
from tests.payments.sandboxes import WechatSandbox

MESSAGES = "/api/v1/messages"


async def send_to(client: Any, credential: dict[str, Any], id_number: str, **extra: Any) -> Any:
    return await signed(client, credential, "POST", MESSAGES, by_id_number(id_number, **extra))


def refusal(answer: Any) -> dict[str, Any]:
    """What a refusal tells the department (the request's own path and id aside)."""
    assert answer.status_code == 403, answer.text
    body = answer.json()
    return {k: body[k] for k in ("type", "status", "title", "detail", "errors")}


async def a_department(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(client, services, ["messages:send", "payments:refund"], kind="department")


async def test_a_department_messages_by_id_number_a_resident_who_paid_one_of_its_orders(
    client: Any, services: Any, wechat_sandbox: WechatSandbox
) -> None:
    resident = await real_named(client, services)
    hall = await a_department(client, services)
    # An order opened and not paid is not a use of the service.
    await order_of(client, resident, hall)
    not_yet = await send_to(client, hall, resident["id_number"])
    assert not_yet.json()["type"].endswith("/not-addressable")

    await pay(client, wechat_sandbox, resident, hall)
    sent = await send_to(client, hall, resident["id_number"], key="gas-1")
    assert sent.status_code == 201, sent.text
    assert "resident_id" not in sent.json()
    again = await send_to(client, hall, resident["id_number"].lower(), key="gas-1")
    assert again.status_code == 200 and again.json()["id"] == sent.json()["id"]
    inbox = await inbox_of(client, resident)
    assert [(m["title"], m["sender_name"]) for m in inbox] == [("燃气费账单", hall["organisation"]["name"])]


async def test_unknown_and_not_addressable_get_the_same_refusal_and_the_number_is_never_logged(
    client: Any, services: Any, wechat_sandbox: WechatSandbox
) -> None:
    resident = await real_named(client, services)
    hall, stranger = await a_department(client, services), await a_department(client, services)
    await pay(client, wechat_sandbox, resident, hall)
    unknown_number = nobodys_id_number()

    with capture_logs() as logs:
        not_addressable = await send_to(client, stranger, resident["id_number"])
        unknown = await send_to(client, stranger, unknown_number)
        bad = await send_to(client, stranger, resident["id_number"][:-1] + "Y")
    assert refusal(not_addressable) == refusal(unknown)
    assert refusal(unknown)["errors"][0]["field"] == "resident_ref.id_number"
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "resident_ref.id_number"
    for answer in (not_addressable, unknown, bad):
        assert resident["id_number"][:-1] not in answer.text and unknown_number not in answer.text
    logged = repr(logs)
    assert resident["id_number"][:-1] not in logged and unknown_number not in logged
    assert await inbox_of(client, resident) == []

    # Each lookup is in the audit trail under the number's keyed hash, the refusals too (enumeration shows).
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT actor_id, target_id, outcome FROM audit.events
               WHERE action = 'messages.address_by_id_number' AND actor_id = ANY($1::text[])""",
            [hall["organisation"]["id"], stranger["organisation"]["id"]],
        )
    assert sorted(r["outcome"] for r in rows if r["actor_id"] == stranger["organisation"]["id"]) == [
        "denied",
        "denied",
    ]
    assert all(resident["id_number"] not in r["target_id"] for r in rows)
    # The department with whom the resident paid gets through.
    assert (await send_to(client, hall, resident["id_number"])).status_code == 201


async def test_a_split_payee_may_message_the_payer(
    client: Any, services: Any, wechat_sandbox: WechatSandbox
) -> None:
    resident = await real_named(client, services)
    organiser, venue = await a_department(client, services), await a_department(client, services)
    await pay(
        client,
        wechat_sandbox,
        resident,
        organiser,
        splits=[{"payee_id": venue["organisation"]["id"], "amount_fen": 300}],
    )
    for payee in (organiser, venue):
        answer = await send_to(client, payee, resident["id_number"])
        assert answer.status_code == 201, answer.text


async def test_a_resident_who_logged_in_to_a_departments_app_may_be_messaged_by_it(
    client: Any, services: Any
) -> None:
    """With consent to a claim (profile) or to `openid` alone (no consent recorded: the subject one login gave
    the department's app says it)."""
    from tests.app_backend.oidc.department import app_for, discover, log_in, registered

    for scope in ("openid profile", "openid"):
        resident = await real_named(client, services)
        hall, other = await a_department(client, services), await a_department(client, services)
        app_reg = await registered(client, dept={**hall["organisation"], "admin": hall["admin"]})
        async with app_for(client, app_reg, scope=scope) as app:
            meta = await discover(app, client)
            await log_in(client, app, meta, resident)
        assert (await send_to(client, hall, resident["id_number"])).status_code == 201, scope
        assert refusal(await send_to(client, other, resident["id_number"]))["status"] == 403


async def test_operations_allow_a_department_to_address_regions(client: Any, services: Any) -> None:
    admin = await staff(client, services)
    hall = await a_department(client, services)
    org_id = hall["organisation"]["id"]
    jiangyan, taixing, nowhere = [await real_named(client, services) for _ in range(3)]
    for resident, region in ((jiangyan, "321204"), (taixing, "321283")):
        chosen = await client.put("/api/v1/me/region", headers=bearer(resident), json={"region": region})
        assert chosen.status_code == 200

    assert refusal(await send_to(client, hall, jiangyan["id_number"]))["status"] == 403
    granted = await set_message_regions(client, admin, org_id, ["321204"])
    assert granted.status_code == 200, granted.text
    assert [(r["code"], r["name"]) for r in granted.json()["regions"]] == [("321204", "姜堰区")]
    assert granted.json()["regions"][0]["granted_by"] == f"staff:{admin['resident_id']}"
    assert (await send_to(client, hall, jiangyan["id_number"])).status_code == 201
    for outside in (taixing, nowhere):  # another district; a resident who chose none lives in the city
        assert refusal(await send_to(client, hall, outside["id_number"]))["status"] == 403

    # The city reaches every resident, whatever they chose.
    await set_message_regions(client, admin, org_id, [CITY, "321204"])
    for resident in (taixing, nowhere):
        assert (await send_to(client, hall, resident["id_number"])).status_code == 201
    mine = await signed(client, hall, "GET", f"{MESSAGES}/regions")
    assert mine.status_code == 200 and [r["code"] for r in mine.json()["regions"]] == [CITY, "321204"]

    # Taken back: none again.
    assert (await set_message_regions(client, admin, org_id, [])).json()["regions"] == []
    assert refusal(await send_to(client, hall, taixing["id_number"]))["status"] == 403

    async with services.pool.acquire() as conn:
        audited = await conn.fetch(
            """SELECT actor_id, detail FROM audit.events
               WHERE action = 'admin.message_regions' AND target_id = $1 ORDER BY id""",
            org_id,
        )
    assert [r["detail"]["regions"] for r in audited] == [["321204"], [CITY, "321204"], []]
    assert {r["actor_id"] for r in audited} == {admin["resident_id"]}


async def test_the_allowed_regions_admin_refuses_bad_input_and_other_roles(
    client: Any, services: Any
) -> None:
    admin, auditor, reviewer = (
        await staff(client, services),
        await staff(client, services, "auditor"),
        await staff(client, services, "ops_reviewer"),
    )
    hall = await a_department(client, services)
    org_id = hall["organisation"]["id"]
    bad = await set_message_regions(client, admin, org_id, ["321204", "320100"])
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "regions[1]"
    unknown = await set_message_regions(client, admin, str(uuid.uuid4()), ["321204"])
    assert unknown.status_code == 404
    path = f"/api/v1/admin/organisations/{org_id}/message-regions"
    assert (await client.get(path, headers=bearer(auditor))).status_code == 200
    for who in (auditor, reviewer, await login(client)):
        assert (await set_message_regions(client, who, org_id, [CITY])).status_code == 403
    assert (await client.get(path, headers=bearer(admin))).json()["regions"] == []
    unscoped = await machine_credential(client, services, ["payments:refund"], kind="department")
    assert (await signed(client, unscoped, "GET", f"{MESSAGES}/regions")).status_code == 403


async def test_a_reference_names_exactly_one_resident(client: Any, services: Any) -> None:
    resident = await real_named(client, services)
    payee = await department(client, services)
    order_id = await order_of(client, resident, payee)
    body = by_id_number(resident["id_number"])
    both = {**body, "resident_ref": {"id_number": resident["id_number"], "order_id": order_id}}
    answer = await signed(client, payee, "POST", MESSAGES, both)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "resident_ref"


async def test_the_platforms_own_messages_are_not_restricted(client: Any, services: Any) -> None:
    resident = await login(client)
    notifications: NotificationService = notifications_of(services)
    message = PlatformMessage(
        kind="fare_debt",
        title="乘车欠费待补缴",
        body="您有一笔 3.00 元的乘车费用未能扣款",
        sender="payments",
        sender_name="泰州通",
        key=f"test:{uuid.uuid4()}",
    )
    async with services.pool.acquire() as conn, conn.transaction():
        assert await notifications.send_platform(conn, uuid.UUID(resident["resident_id"]), message)
    assert [m["title"] for m in await inbox_of(client, resident)] == ["乘车欠费待补缴"]


async def test_the_paid_orders_before_the_migration_are_backfilled(
    client: Any, services: Any, wechat_sandbox: WechatSandbox, backing: Any
) -> None:
    """The migration's backfill finds a paid order whose payer was not recorded (as before the table existed)."""
    from pathlib import Path

    import asyncpg

    import app_backend.notifications.migrations as migrations

    resident = await real_named(client, services)
    hall = await a_department(client, services)
    await pay(client, wechat_sandbox, resident, hall)
    async with services.pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM notifications.service_users WHERE organisation_id = $1",
            uuid.UUID(hall["organisation"]["id"]),
        )
    assert refusal(await send_to(client, hall, resident["id_number"]))["status"] == 403
    sql = (Path(migrations.__file__).parent / "0003_who_may_be_addressed.sql").read_text()
    backfill = sql[
        sql.index("INSERT INTO notifications.service_users") : sql.index("ON CONFLICT DO NOTHING;")
    ]
    owner = await asyncpg.connect(backing.migration_database_url)
    try:
        await owner.execute(backfill + "ON CONFLICT DO NOTHING")
    finally:
        await owner.close()
    assert (await send_to(client, hall, resident["id_number"])).status_code == 201
