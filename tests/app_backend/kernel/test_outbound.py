"""Calls to URLs others gave us stay off our own network (SSRF): outside dev and test, a name is resolved once, every
address it resolves to must be globally reachable, and the call goes to the address that was checked, the name kept
for Host and TLS."""

from __future__ import annotations

import ipaddress

import pytest

from app_backend.kernel import outbound


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.8",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier NAT)
        "169.254.169.254",  # cloud metadata
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_not_public(address):
    assert not outbound.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "114.114.114.114", "2400:3200::1", "::ffff:8.8.8.8"])
def test_global_addresses_are_public(address):
    assert outbound.is_public(ipaddress.ip_address(address))


def _resolving(*addresses: str) -> outbound.Resolver:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


async def test_the_call_goes_to_the_checked_address_with_the_name_as_host_and_tls_name():
    target = await outbound.pin(
        "https://gjj.example.cn:8443/health?x=1", allow_private=False, resolver=_resolving("223.5.5.5")
    )
    assert str(target.url) == "https://223.5.5.5:8443/health?x=1"
    assert target.host_header == "gjj.example.cn:8443"
    assert target.extensions == {"sni_hostname": "gjj.example.cn"}


@pytest.mark.parametrize(
    ("url", "addresses", "reason"),
    [
        ("https://gjj.example.cn/", ("10.1.2.3",), "not a public address"),
        ("https://gjj.example.cn/", ("223.5.5.5", "127.0.0.1"), "not a public address"),  # any one of them
        ("https://127.0.0.1/", (), "not a public address"),
        ("https://[::ffff:10.0.0.1]/", (), "not a public address"),
        ("http://gjj.example.cn/", ("223.5.5.5",), "https required"),
        ("ftp://gjj.example.cn/", ("223.5.5.5",), "not an http(s) URL"),
        ("https://gjj.example.cn/", (), "does not resolve"),
    ],
)
async def test_outside_dev_internal_or_unresolvable_targets_are_refused(url, addresses, reason):
    with pytest.raises(outbound.Refused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        await outbound.pin(url, allow_private=False, resolver=_resolving(*addresses))


async def test_in_dev_loopback_and_http_are_allowed():
    target = await outbound.pin(
        "http://localhost:8080/h5", allow_private=True, resolver=_resolving("127.0.0.1")
    )
    assert str(target.url) == "http://127.0.0.1:8080/h5" and target.host_header == "localhost:8080"
    assert target.extensions == {}


def test_the_client_follows_no_redirect_and_no_proxy_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    http = outbound.client(2.0)
    assert http.follow_redirects is False and http.timeout.connect == 2.0
    assert http.headers["user-agent"] == outbound.USER_AGENT
    assert not http._mounts  # no proxy taken from the environment
