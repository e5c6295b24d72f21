"""A payee's payout account as operations set it: only ops admins set it (auditors read it), each change and read is
audited without the account itself, bad input is a 4xx naming the field, the account is encrypted at rest and
comes back masked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import bearer, login, staff
from tests.payments.payouts.helpers import merchant, new_account

PATH = "/api/v1/admin/payout-accounts/{}"


async def test_an_ops_admin_sets_the_account_and_it_comes_back_masked(client, services, db):
    payee = await merchant(client, services)
    organisation = payee["organisation"]["id"]
    account = {
        "channel": "alipay",
        "account_type": "ALIPAY_LOGON_ID",
        "account": "13812345678",
        "name": "诸葛孔明",
    }
    answer = await client.put(PATH.format(organisation), headers=bearer(payee["admin"]), json=account)
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert (view["channel"], view["account_type"], view["account"], view["name"]) == (
        "alipay",
        "ALIPAY_LOGON_ID",
        "138****5678",
        "诸***",
    )
    auditor = await staff(client, services, "auditor")
    read = await client.get(PATH.format(organisation), headers=bearer(auditor))
    assert read.status_code == 200 and read.json()["account"] == "138****5678"

    stored = await db.fetchrow(
        "SELECT identity_enc, name_enc FROM payments.payout_accounts WHERE payee_id = $1", organisation
    )
    assert b"13812345678" not in stored["identity_enc"]
    assert "诸葛孔明".encode() not in stored["name_enc"]

    events = await db.fetch(
        """SELECT action, actor_id, detail::text AS detail FROM audit.events
           WHERE target_type = 'payee' AND target_id = $1 ORDER BY id""",
        organisation,
    )
    assert [(e["action"], e["actor_id"]) for e in events] == [
        ("admin.payout_account_set", payee["admin"]["resident_id"]),
        ("admin.payout_account_view", auditor["resident_id"]),
    ]
    assert json.loads(events[0]["detail"]) == {"channel": "alipay", "account_type": "ALIPAY_LOGON_ID"}
    assert all("13812345678" not in e["detail"] and "诸葛" not in e["detail"] for e in events)

    wechat = await client.put(
        PATH.format(organisation), headers=bearer(payee["admin"]), json=new_account("wechat")
    )
    assert wechat.status_code == 200 and wechat.json()["channel"] == "wechat"
    removed = await client.delete(PATH.format(organisation), headers=bearer(payee["admin"]))
    assert removed.status_code == 204
    assert (await client.get(PATH.format(organisation), headers=bearer(auditor))).status_code == 404
    assert await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'admin.payout_account_removed' AND target_id = $1",
        organisation,
    )


async def test_only_ops_admins_set_it(client, services, db):
    payee = await merchant(client, services)
    path = PATH.format(payee["organisation"]["id"])
    body = new_account("alipay")
    for outsider in (await login(client), await staff(client, services, "auditor")):
        refused = await client.put(path, headers=bearer(outsider), json=body)
        assert refused.status_code == 403, refused.text
        assert await db.fetchval(
            "SELECT count(*) FROM audit.events WHERE actor_id = $1 AND action = 'admin.access' AND outcome = 'denied'",
            outsider["resident_id"],
        )
    resident = await login(client)
    assert (await client.get(path, headers=bearer(resident))).status_code == 403
    assert (await client.put(path, json=body)).status_code == 401
    assert (
        await client.post(f"/api/v1/admin/settlements/{payee['organisation']['id']}/pay")
    ).status_code == 401
    auditor = await staff(client, services, "auditor")
    assert (
        await client.post(
            f"/api/v1/admin/settlements/{payee['organisation']['id']}/pay", headers=bearer(auditor)
        )
    ).status_code == 403
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payments.payout_accounts WHERE payee_id = $1", payee["organisation"]["id"]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"account_type": "WECHAT_OPENID"}, "account_type", 400),  # not an Alipay account type
        ({"account_type": "BANK_CARD"}, "account_type", 400),
        ({"channel": "unionpay"}, "channel", 400),
        ({"account": "not an account"}, "account", 400),
        ({"account_type": "ALIPAY_USER_ID", "account": "2088123"}, "account", 400),
        ({"name": ""}, "name", 400),
        ({"name": "   "}, "name", 400),
        ({"name": "名" * 65}, "name", 400),
        ({"account": None}, "account", 400),
        ({"account_type": None}, "account_type", 400),
        ({"extra": 1}, "extra", 400),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(client, services, db, change, field, status):
    payee = await merchant(client, services)
    body: dict[str, Any] = {**new_account("alipay"), **change}
    answer = await client.put(
        PATH.format(payee["organisation"]["id"]), headers=bearer(payee["admin"]), json=body
    )
    assert answer.status_code == status, answer.text
    assert (
        field in [e["field"] for e in answer.json().get("errors", [])] or field in answer.json()["detail"]
    ), answer.text
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payments.payout_accounts WHERE payee_id = $1", payee["organisation"]["id"]
        )
        == 0
    )


async def test_an_unknown_payee_is_a_404(client, services):
    admin = await staff(client, services)
    organisation = "00000000-0000-4000-8000-000000000001"
    answer = await client.put(PATH.format(organisation), headers=bearer(admin), json=new_account("wechat"))
    assert answer.status_code == 404
    assert (await client.get(PATH.format(organisation), headers=bearer(admin))).status_code == 404
    assert (await client.delete(PATH.format(organisation), headers=bearer(admin))).status_code == 404
