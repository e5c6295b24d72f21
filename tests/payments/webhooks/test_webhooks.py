"""The payee's own system hears about its money: signed events, delivered after commit, retried, then given up."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from payments.webhooks.service import RETRY_SCHEDULE, is_public
from tests.helpers import machine_credential, signed
from tests.payments.helpers import paid_order


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tzt-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()


async def _deliver(services: Any) -> dict[str, int]:
    async with services.pool.acquire() as conn, conn.transaction():
        return await services.payments.webhooks.deliver_due(conn)


async def test_a_paid_order_reaches_the_payees_system_signed(client, services, wechat, receiver):
    payee = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    registered = await signed(client, payee, "PUT", "/api/v1/payments/webhook", {"url": receiver.url})
    assert registered.status_code == 200, registered.text
    secret = registered.json()["secret"]
    _, order = await paid_order(client, services, wechat, payee, amount=1234)
    await _deliver(services)
    mine = [(h, b) for h, b in receiver.received if json.loads(b).get("order_id") == order["id"]]
    assert len(mine) == 1
    headers, body = mine[0]
    assert headers["X-Tzt-Event-Signature"] == hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert json.loads(body)["event"] == "order.paid" and json.loads(body)["amount_fen"] == 1234
    await _deliver(services)
    assert len([b for _, b in receiver.received if json.loads(b).get("order_id") == order["id"]]) == 1


async def test_failed_deliveries_are_retried_on_schedule_then_given_up(
    client, services, wechat, receiver, db
):
    payee = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    await signed(client, payee, "PUT", "/api/v1/payments/webhook", {"url": receiver.url})
    receiver.status = 503
    await paid_order(client, services, wechat, payee)
    payee_id = payee["organisation"]["id"]
    for attempt in range(len(RETRY_SCHEDULE) + 1):
        # the clock moves on: make the event due now
        await db.execute(
            "UPDATE payments.payee_events SET next_attempt_at = now() WHERE payee_id = $1::uuid "
            "AND status = 'pending'",
            payee_id,
        )
        await _deliver(services)
        row = await db.fetchrow(
            "SELECT status, attempts, last_error, next_attempt_at > now() AS later "
            "FROM payments.payee_events WHERE payee_id = $1::uuid",
            payee_id,
        )
        assert row["attempts"] == attempt + 1 and row["last_error"] == "HTTP 503"
        assert row["status"] == ("failed" if attempt == len(RETRY_SCHEDULE) else "pending")
    events = await signed(client, payee, "GET", "/api/v1/payments/webhook/events")
    assert events.json()["events"][0]["status"] == "failed"


def test_outside_dev_webhooks_must_be_https_to_public_addresses():
    from app_backend.kernel.errors import DomainError
    from payments.webhooks.service import check_webhook_url

    for url in (
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "ftp://example.com/x",
        "http://[::1/hook",  # urlsplit raises on it: a 400 naming the url, not a 500
        "https://example.com/\x00hook",  # PostgreSQL stores no NUL
    ):
        with pytest.raises(DomainError):
            check_webhook_url(url, allow_local=False)
    check_webhook_url("http://127.0.0.1:9000/hook", allow_local=True)  # dev and tests
    for url in ("http://[::1/hook", "http://127.0.0.1/\x00"):
        with pytest.raises(DomainError):
            check_webhook_url(url, allow_local=True)


class RebindingDns:
    """A name server for `payee-hooks.example` that answers with the first address once, then with the second
    (DNS rebinding: a short TTL and a different answer once the address has been checked)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.asked = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        assert host == "payee-hooks.example"
        answer = self.answers[min(self.asked, 1)]
        self.asked += 1
        return [answer]


async def _pending_event(client, services, wechat, url: str) -> dict[str, Any]:
    payee = await machine_credential(client, services, ["payments:refund"], kind="merchant")
    await signed(client, payee, "PUT", "/api/v1/payments/webhook", {"url": url})
    _, order = await paid_order(client, services, wechat, payee)
    return order


async def _deliver_with(services: Any, webhooks: Any) -> dict[str, int]:
    async with services.pool.acquire() as conn, conn.transaction():
        return await webhooks.deliver_due(conn)


async def test_delivery_connects_to_the_address_it_checked(client, services, wechat, receiver, db):
    from payments.webhooks.service import WebhookService

    port = receiver.server.server_address[1]
    # Registered in the test settings' local mode, so the checked 127.0.0.1 (the receiver) is allowed; the name
    # then rebinds to an address where nothing listens.
    order = await _pending_event(client, services, wechat, f"http://payee-hooks.example:{port}/tzt-events")
    dns = RebindingDns(first="127.0.0.1", then="192.0.2.1")
    webhooks = WebhookService(services.payments.webhooks._box, timeout=2.0, allow_local=True, resolver=dns)
    await _deliver_with(services, webhooks)
    mine = [(h, b) for h, b in receiver.received if json.loads(b).get("order_id") == order["id"]]
    assert len(mine) == 1
    assert mine[0][0]["Host"] == f"payee-hooks.example:{port}"
    assert dns.asked == 1, "the name is resolved once per delivery, and that answer is where it goes"


async def test_a_name_with_any_internal_address_gets_no_delivery(client, services, wechat, db):
    """Registered in local mode (the tests'), delivered by a worker outside it: one internal address among the
    answers is enough to refuse, without connecting anywhere."""
    from payments.webhooks.service import WebhookService

    class MixedDns:
        asked = 0

        async def __call__(self, host: str, port: int) -> list[str]:
            self.asked += 1
            return ["203.0.113.7", "10.0.0.8"]

    order = await _pending_event(client, services, wechat, "https://payee-hooks.example/tzt-events")
    dns = MixedDns()
    webhooks = WebhookService(services.payments.webhooks._box, timeout=2.0, allow_local=False, resolver=dns)
    await _deliver_with(services, webhooks)
    row = await db.fetchrow(
        "SELECT status, attempts, last_error FROM payments.payee_events WHERE body->>'order_id' = $1",
        order["id"],
    )
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"] == "url no longer points at a public address"
    assert dns.asked == 1


def test_an_ipv6_address_carrying_an_internal_ipv4_one_is_not_public():
    """Issue 13 probe: `is_global` passes NAT64, 6to4 and IPv4-compatible forms of 127.0.0.1."""
    for inside in ("64:ff9b::7f00:1", "2002:7f00:1::1", "::127.0.0.1", "::ffff:10.0.0.1", "2002:c0a8:101::1"):
        assert not is_public(ipaddress.ip_address(inside)), inside
    for outside in ("64:ff9b::808:808", "2002:808:808::1", "2400:3200::1", "8.8.8.8"):
        assert is_public(ipaddress.ip_address(outside)), outside
