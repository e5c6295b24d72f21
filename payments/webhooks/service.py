"""Telling a payee's own system about its money: events are written to an outbox in the same transaction as the
payment or refund, then POSTed, signed, with bounded retries (1 min, 5 min, 30 min, 2 h, 6 h, then failed)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import msgspec
import structlog

from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, invalid_field
from payments.webhooks.repository import EventRow, WebhookRepository
from payments.webhooks.schemas import PayeeEvent, WebhookRegistered

RETRY_SCHEDULE = (60, 300, 1800, 7200, 21600)
_FIELD = "payments.webhook_secret"
_log = structlog.get_logger("payments.webhooks")


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_webhook_url(url: str, allow_local: bool) -> None:
    """Outside dev, events go only to https URLs on public addresses: a payee must not make our worker call
    an internal service (our Redis, a metadata endpoint). Names are checked again when delivering."""
    if not url.isprintable():
        raise invalid_field("url", "not a URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unbalanced IPv6 bracket, say
        raise invalid_field("url", "not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise invalid_field("url", "not a URL")
    if allow_local:
        return
    if parts.scheme != "https":
        raise invalid_field("url", "https required")
    if not _public(host):
        raise invalid_field("url", "not a public address")


# IPv6 prefixes that carry an IPv4 address a network may route to its inside: NAT64 (RFC 6052), 6to4 (RFC 3056),
# IPv4-compatible (deprecated), and IPv4-mapped. Such an address is public only if the IPv4 one inside is.
_V4_INSIDE = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0/96"),
)
_6TO4 = ipaddress.IPv6Network("2002::/16")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally reachable, also counting the IPv4 address an IPv6 one may carry (`is_global` alone passes
    64:ff9b::7f00:1, 2002:7f00:1::1 and ::127.0.0.1, which some networks route to their own inside)."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _V4_INSIDE):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF).is_global
        if address in _6TO4:
            return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF).is_global
    return address.is_global


def _public(host: str) -> bool:
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)}
    except OSError:
        return False
    return bool(addresses) and all(is_public(ipaddress.ip_address(a.split("%")[0])) for a in addresses)


# host, port -> the addresses the name resolves to (a seam: the tests answer differently on each call).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]).split("%")[0] for info in infos]


class _Refused(Exception):
    """The URL does not lead to an address events may go to (no longer public, or no longer resolving)."""


class _Target:
    """Where one delivery connects: the address that was checked, with the name kept for Host and TLS."""

    __slots__ = ("extensions", "host_header", "url")

    def __init__(self, url: httpx.URL, host_header: str, extensions: dict[str, str]) -> None:
        self.url = url
        self.host_header = host_header
        self.extensions = extensions


class WebhookService:
    def __init__(
        self,
        box: FieldCipher,
        timeout: float = 5.0,
        allow_local: bool = False,
        resolver: Resolver = resolve,
    ) -> None:
        self._allow_local = allow_local
        self._resolve = resolver
        self._box = box
        self._timeout = timeout
        self._repo = WebhookRepository()

    async def register(self, conn: Connection, payee_id: uuid.UUID, url: str) -> WebhookRegistered:
        check_webhook_url(url, self._allow_local)
        secret = "whs_" + secrets.token_urlsafe(24)
        await self._repo.upsert(conn, payee_id, url, self._box.encrypt(_FIELD, secret))
        return WebhookRegistered(url=url, secret=secret)

    async def enqueue(
        self, conn: Connection, payee_id: uuid.UUID, event: str, body: dict[str, object]
    ) -> None:
        await self._repo.enqueue(conn, payee_id, event, {"event": event, **body})

    async def deliver_due(self, conn: Connection, limit: int = 100) -> dict[str, int]:
        counts = {"delivered": 0, "retry": 0, "failed": 0}
        # No proxy from the environment (it would resolve the name itself), no redirects (they could lead
        # anywhere), and no connection kept for another payee's name on the same address.
        async with httpx.AsyncClient(
            timeout=self._timeout,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http:
            for row in await self._repo.claim_due(conn, limit):
                raw = msgspec.json.encode({"id": str(row.id), **row.body})
                secret = self._box.decrypt(_FIELD, row.secret_enc)
                try:
                    target = await self._target(row.url)
                    answer = await http.post(
                        target.url,
                        content=raw,
                        headers={
                            "Host": target.host_header,
                            "Content-Type": "application/json",
                            "X-Tzt-Event-Id": str(row.id),
                            "X-Tzt-Event-Signature": signature(secret, raw),
                        },
                        extensions=target.extensions,
                    )
                    error = "" if answer.is_success else f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                except (DomainError, _Refused):
                    error = "url no longer points at a public address"
                if not error:
                    await self._repo.delivered(conn, row.id)
                    counts["delivered"] += 1
                    continue
                attempt = row.attempts
                retry_in = RETRY_SCHEDULE[attempt] if attempt < len(RETRY_SCHEDULE) else None
                await self._repo.failed_attempt(conn, row.id, error, retry_in)
                counts["retry" if retry_in else "failed"] += 1
                _log.warning(
                    "payee event not delivered", event_id=str(row.id), error=error, retry_in=retry_in
                )
        return counts

    async def _target(self, raw_url: str) -> _Target:
        """Resolves the name once, checks every address it resolves to, and returns a URL on the first of them:
        the connection goes to the address that was checked. Resolving again when connecting would let a name
        that answered with a public address for the check answer with an internal one for the connection (DNS
        rebinding). The name still travels as Host and as the TLS server name, whose certificate is verified."""
        check_webhook_url(raw_url, allow_local=True)  # the form; the addresses are checked here
        url = httpx.URL(raw_url)
        if url.scheme != "https" and not self._allow_local:
            raise _Refused("https required")
        # The ASCII (IDNA) form of the name: what DNS and the TLS server name are given.
        host, port = url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a) for a in await self._resolve(host, port)]
            except (OSError, ValueError):
                raise _Refused("does not resolve") from None
        if not addresses or not all(self._allowed(a) for a in addresses):
            raise _Refused("not a public address")
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return _Target(url.copy_with(host=str(addresses[0])), url.netloc.decode("ascii"), extensions)

    def _allowed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return self._allow_local or is_public(address)

    async def events(self, conn: Connection, payee_id: uuid.UUID, limit: int = 100) -> list[PayeeEvent]:
        return [_payee_event(r) for r in await self._repo.events_for(conn, payee_id, limit)]


def _payee_event(row: EventRow) -> PayeeEvent:
    return PayeeEvent(
        id=row.id,
        event=row.event,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )
