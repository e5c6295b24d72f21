"""The event scene while Redis is stopped: the deny list and the holder come from PostgreSQL, the seller answers as
ever (tickets live in PostgreSQL), and the answer says it is degraded."""

from __future__ import annotations

import os
import signal
import uuid

from code_service.holder import DeviceWallet
from tests.code_service.entry.helpers import provided, scan, venue_gate
from tests.code_service.verification.test_degraded import app_client, own_redis  # noqa: F401 (fixtures)
from tests.helpers import bearer, login, personal_code, real_named, register_device


async def test_the_event_scene_admits_once_while_redis_is_stopped(app_client, own_redis):  # noqa: F811
    client = app_client
    services = client.app.state.services
    provider = provided(services)
    gate = await venue_gate(client, services, provider)
    attendee, phone_only = await real_named(client, services), await login(client)
    ticket = provider.sell(uuid.UUID(attendee["resident_id"]))
    provider.sell(uuid.UUID(phone_only["resident_id"]))
    wallet = DeviceWallet.create()
    await register_device(client, attendee, wallet)
    codes = [await personal_code(client, attendee), await personal_code(client, phone_only)]
    lost = DeviceWallet.create()
    made = await register_device(client, attendee, lost)
    revoked = await client.delete(f"/api/v1/codes/device-credentials/{made['id']}", headers=bearer(attendee))
    assert revoked.status_code == 204, revoked.text

    os.kill(own_redis._redis.pid, signal.SIGSTOP)
    try:
        first = (await scan(client, gate, codes[0], provider.occasion_id)).json()
        again = (await scan(client, gate, wallet.code(), provider.occasion_id)).json()
        low = (await scan(client, gate, codes[1], provider.occasion_id)).json()
        denied = (await scan(client, gate, lost.code(), provider.occasion_id)).json()
    finally:
        os.kill(own_redis._redis.pid, signal.SIGCONT)
    assert (first["allowed"], first["reason"], first["degraded"], first["seat"]) == (
        True,
        "ok",
        True,
        "3排12座",
    )
    assert (again["allowed"], again["reason"], again["degraded"]) == (False, "already-admitted", True)
    assert (low["reason"], low["degraded"]) == ("no-entitlement", True)
    assert (denied["reason"], denied["degraded"]) == ("denied-credential", True)
    assert ticket.admitted == 1
