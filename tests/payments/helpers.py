"""What a payer, a payee and a channel do in the payment tests, as small functions the tests share."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from app_backend.organisations.signing import sign_request
from tests.helpers import bearer, login
from tests.payments.sandboxes import WechatSandbox


async def ledger_ok(services: Any) -> None:
    async with services.pool.acquire() as conn:
        check = await services.payments.ledger.check(conn)
    assert check.ok, check


async def create_order(
    client: Any, person: dict[str, Any], payee: dict[str, Any], amount: int = 1000, key: str | None = None
) -> Any:
    """A JSAPI order through WeChat Pay (the openid given by the client, as an H5 page in WeChat has it)."""
    return await client.post(
        "/api/v1/payments/orders",
        headers={**bearer(person), "Idempotency-Key": key or uuid.uuid4().hex},
        json={
            "purpose": "ticket",
            "amount_fen": amount,
            "subject": "凤城河夜游",
            "payee_id": payee["organisation"]["id"],
            "channel": "wechat",
            "method": "jsapi",
            "payer_channel_id": "o-openid-1",
        },
    )


async def paid_order(
    client: Any, services: Any, wechat: WechatSandbox, payee: dict[str, Any], amount: int = 1000
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the payer, the order) of an order paid in the sandbox and notified to the app."""
    person = await login(client)
    created = (await create_order(client, person, payee, amount)).json()
    note = (
        await wechat.control("POST", f"_sandbox/trades/{created['out_trade_no']}/pay", {"deliver": False})
    )["notification"]
    ack = await client.post(
        "/api/v1/payments/notify/wechat", content=note["body"], headers={"Content-Type": note["content_type"]}
    )
    assert ack.status_code == 200 and b"SUCCESS" in ack.content
    return person, created


async def signed_with_key(
    client: Any, credential: dict[str, Any], path: str, body: dict[str, Any], key: str | None = None
) -> Any:
    """A signed POST with an Idempotency-Key, as a payee's system sends a refund."""
    raw = json.dumps(body).encode()
    headers = sign_request(credential["key_id"], credential["secret"], "POST", path, raw)
    headers.update({"Content-Type": "application/json", "Idempotency-Key": key or uuid.uuid4().hex})
    return await client.post(path, content=raw, headers=headers)


class ChannelSpy:
    """Records every out_trade_no one channel call of the app's WeChat adapter is made with, then makes the real
    call to the sandbox. With `hold`, the first call waits at the door until `release()`: a channel as slow as
    the test needs, without a clock."""

    def __init__(self, real: Callable[..., Awaitable[Any]], number_at: int | str, hold: bool = False) -> None:
        self.numbers: list[str] = []
        self.asked = asyncio.Event()
        self._real = real
        self._number_at = number_at
        self._gate = asyncio.Event()
        self._hold = hold

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        at = self._number_at
        number = args[at] if isinstance(at, int) else getattr(args[0], at)
        self.numbers.append(number)
        first = len(self.numbers) == 1
        self.asked.set()
        if self._hold and first:
            await self._gate.wait()
        return await self._real(*args, **kwargs)

    def release(self) -> None:
        self._gate.set()


async def idle_in_transaction(conn: Any) -> int:
    """How many other connections to this run's database sit inside a transaction waiting for their client: what
    a request or job holding its transaction open across a channel call looks like."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND state LIKE 'idle in transaction%'"""
        )
    )
