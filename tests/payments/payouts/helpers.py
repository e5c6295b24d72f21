"""A payee paid by channel transfer, as operations set it up, and the channels' view of what it was paid."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from payments.settlement.service import BUSINESS_TZ
from tests.helpers import bearer, machine_credential
from tests.payments.helpers import paid_order
from tests.payments.sandboxes import AlipaySandbox, WechatSandbox

CHANNELS = ("alipay", "wechat")


def new_account(channel: str, name: str = "周瑜") -> dict[str, str]:
    """A fresh account of the channel nobody else's test uses."""
    if channel == "alipay":
        return {
            "channel": "alipay",
            "account_type": "ALIPAY_LOGON_ID",
            "account": f"pay{secrets.token_hex(4)}@example.com",
            "name": name,
        }
    return {
        "channel": "wechat",
        "account_type": "WECHAT_OPENID",
        "account": "o" + secrets.token_hex(12),
        "name": name,
    }


async def merchant(client: Any, services: Any) -> dict[str, Any]:
    return await machine_credential(
        client, services, ["payments:refund", "settlements:read"], kind="merchant"
    )


async def set_account(client: Any, payee: dict[str, Any], account: dict[str, str]) -> Any:
    answer = await client.put(
        f"/api/v1/admin/payout-accounts/{payee['organisation']['id']}",
        headers=bearer(payee["admin"]),
        json=account,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def settle(services: Any, payee: dict[str, Any]) -> list[Any]:
    """Today's settlements of this payee (settling everyone's unsettled money, as the daily job does)."""
    today = dt.datetime.now(BUSINESS_TZ).date()
    async with services.pool.acquire() as conn, conn.transaction():
        found = await services.payments.settlement.settle_day(conn, today)
    return [s for s in found if str(s.payee_id) == payee["organisation"]["id"]]


async def due_settlement(
    client: Any, services: Any, wechat: WechatSandbox, payee: dict[str, Any], amount: int = 5_000
) -> Any:
    """The payee's settlement due after one paid order."""
    await paid_order(client, services, wechat, payee, amount=amount)
    *_, due = await settle(services, payee)
    assert due.status == "due" and due.payout_fen > 0
    return due


async def pay(client: Any, payee: dict[str, Any], settlement_id: uuid.UUID | str) -> Any:
    return await client.post(f"/api/v1/admin/settlements/{settlement_id}/pay", headers=bearer(payee["admin"]))


def sandbox_of(channel: str, alipay: AlipaySandbox, wechat: WechatSandbox) -> AlipaySandbox | WechatSandbox:
    return alipay if channel == "alipay" else wechat


async def transfers_to(sandbox: AlipaySandbox | WechatSandbox, identity: str) -> dict[str, Any]:
    """What the channel holds for this account: its transfers and what they paid."""
    found: dict[str, Any] = await sandbox.control("GET", f"/_sandbox/transfers?identity={identity}")
    return found


async def register(
    sandbox: AlipaySandbox | WechatSandbox, identity: str, name: str, state: str = "normal"
) -> None:
    await sandbox.control("POST", f"/_sandbox/payees/{identity}", {"name": name, "state": state})


async def transfer_fault(sandbox: AlipaySandbox | WechatSandbox, mode: str, *, process: bool = True) -> None:
    """The next transfer call of the channel gets `mode` (a timeout holds its answer past the adapter's 5 s)."""
    if isinstance(sandbox, AlipaySandbox):
        await sandbox.fault("alipay.fund.trans.uni.transfer", mode, delay_s=7, apply=process)
    else:
        await sandbox.fault("mmpaymkttransfers/promotion/transfers", mode, seconds=7, process=process)


async def balance(services: Any, account: str) -> int:
    async with services.pool.acquire() as conn:
        return int(await services.payments.ledger.balance(conn, account))
