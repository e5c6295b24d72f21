"""Calls from the platform to a URL someone else gave us (a department's health-check URL, its H5 entry): the
client settings every such call uses, and the rule that keeps them off our own network.

A department must not be able to make our workers call an internal service (Redis, PostgreSQL, a cloud metadata
endpoint, an admin port on loopback) by naming it as a URL. Outside dev and test, `pin` resolves the name once,
refuses unless every address it resolves to is globally reachable (no private, loopback, link-local, shared,
reserved or multicast address, also not one carried inside an IPv6 address), and returns a URL on the address it
checked: the connection goes there, so a name cannot answer the check with a public address and the connection
with an internal one (DNS rebinding). The name still travels as Host and as the TLS server name, whose
certificate is verified. In dev and test every address is allowed: the demo and the tests run their services on
loopback.

The client: no proxy from the environment (it would resolve the name itself), no redirects (they could lead
anywhere, the check would not see them), no connection kept for another name on the same address, a timeout on
every phase. payments' webhooks (payments/webhooks/service.py) follow the same rule with their own copy."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the name resolves to (a seam: tests answer as they need).
Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = "TaizhouTong/1 (+https://taizhoutong.cn)"

# IPv6 prefixes that carry an IPv4 address a network may route to its inside: NAT64 (RFC 6052), IPv4-compatible
# (deprecated), IPv4-mapped, and 6to4 (RFC 3056). Such an address is public only if the IPv4 one inside is.
_V4_INSIDE = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0/96"),
)
_6TO4 = ipaddress.IPv6Network("2002::/16")


def is_public(address: Address) -> bool:
    """Globally reachable, also counting the IPv4 address an IPv6 one may carry (`is_global` alone passes
    64:ff9b::7f00:1, 2002:7f00:1::1 and ::127.0.0.1, which some networks route to their own inside)."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _V4_INSIDE):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF).is_global
        if address in _6TO4:
            return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF).is_global
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]).split("%")[0] for info in infos]


class Refused(Exception):
    """The URL does not lead to an address the platform may call (its reason is the message)."""


class Target(NamedTuple):
    """Where one call connects: the checked address in the URL, the name kept for Host and TLS."""

    url: httpx.URL
    host_header: str
    extensions: dict[str, str]


async def pin(raw_url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """The URL on the address its name resolves to, once every address was checked (module docstring);
    `Refused` otherwise. Only http and https."""
    try:
        url = httpx.URL(raw_url)
    except (httpx.InvalidURL, ValueError):
        raise Refused("not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise Refused("not an http(s) URL")
    if url.scheme != "https" and not allow_private:
        raise Refused("https required")
    # The ASCII (IDNA) form of the name: what DNS and the TLS server name are given.
    host, port = url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a) for a in await resolver(host, port)]
        except (OSError, ValueError):
            raise Refused("does not resolve") from None
    if not addresses:
        raise Refused("does not resolve")
    if not allow_private and not all(is_public(a) for a in addresses):
        raise Refused("not a public address")
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return Target(url.copy_with(host=str(addresses[0])), url.netloc.decode("ascii"), extensions)


def client(timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The client for calls to URLs others gave us (module docstring); `transport` is a tests' seam."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": USER_AGENT},
        transport=transport,
    )
