"""What each listener shows and the headers every answer carries (app_backend/composition/surface.py).

Outside dev the public listener serves neither the API documents nor the metrics; the internal listener serves
both. The documents' pages load nothing from another origin. Every answer has nosniff, a referrer and a frame
policy, HSTS outside dev, and `Cache-Control: no-store` unless it declares its own caching (the JWKS)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from app_backend.composition.app import create_app
from app_backend.kernel.settings import Settings
from tests.helpers import bearer, login, machine_credential, otp_from_outbox, random_ip, random_phone, signed

DOCS = ["/schema/openapi.json", "/schema/swagger", "/schema/redoc"]


def _secure(response: httpx.Response, *, production: bool) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert ("strict-transport-security" in response.headers) is production


@pytest.fixture
async def production(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The public and the internal listener's app in production mode (no services started: what is asked of
    them here needs none)."""
    public = create_app(msgspec.structs.replace(settings, env="production"))
    internal = create_app(msgspec.structs.replace(settings, env="production", internal_listener=True))
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=public), base_url="http://public.local"
        ) as outside,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=internal), base_url="http://internal.local"
        ) as inside,
    ):
        yield outside, inside


async def test_production_hides_docs_and_metrics_on_the_public_listener(production):
    public, _ = production
    for path in [*DOCS, "/metrics", "/schema/assets/swagger/swagger-ui-bundle.js"]:
        answer = await public.get(path)
        assert answer.status_code == 404, path
        _secure(answer, production=True)
        assert answer.headers["cache-control"] == "no-store"
    health = await public.get("/healthz")
    assert health.status_code == 200
    _secure(health, production=True)


async def test_production_serves_docs_and_metrics_on_the_internal_listener(production):
    _, internal = production
    for path in [*DOCS, "/metrics"]:
        answer = await internal.get(path)
        assert answer.status_code == 200, path
        _secure(answer, production=True)
    assert "/api/v1/auth/login" in (await internal.get("/schema/openapi.json")).json()["paths"]


async def test_the_internal_listener_serves_the_documents_not_the_api(production):
    """Bound to a private interface for Prometheus, it must not be a second way in past the load balancer."""
    _, internal = production
    assert (await internal.get("/healthz")).status_code == 200
    for method, path in (
        ("POST", "/api/v1/auth/otp"),
        ("GET", "/api/v1/ping"),
        ("GET", "/.well-known/jwks.json"),
    ):
        answer = await internal.request(
            method, path, json={"phone": "13800000000"} if method == "POST" else None
        )
        assert answer.status_code == 404, (path, answer.text)
        _secure(answer, production=True)


async def test_the_docs_pages_load_nothing_from_another_origin(client):
    for page in ("/schema/swagger", "/schema/redoc"):
        html = (await client.get(page)).text
        sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert sources, page
        assert all(s.startswith("/schema/assets/") for s in sources), (page, sources)
        assert "http://" not in html and "https://" not in html.replace("https://swagger.io", ""), page
        for source in sources:
            asset = await client.get(source)
            assert asset.status_code == 200 and asset.content, source


async def test_token_answers_are_not_stored(client):
    phone = random_phone()
    sent = await client.post(
        "/api/v1/auth/otp", json={"phone": phone}, headers={"X-Forwarded-For": random_ip()}
    )
    assert sent.status_code == 202
    _secure(sent, production=False)
    logged_in = await client.post(
        "/api/v1/auth/login", json={"phone": phone, "otp": await otp_from_outbox(client, phone)}
    )
    assert logged_in.status_code == 200 and "access_token" in logged_in.json()
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": logged_in.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    for answer in (sent, logged_in, refreshed):
        assert answer.headers["cache-control"] == "no-store"
        _secure(answer, production=False)


async def test_personal_answers_and_problems_are_not_stored(client, services):
    me = await client.get("/api/v1/me", headers=bearer(await login(client)))
    assert me.status_code == 200
    denied = await client.get("/api/v1/me")
    assert denied.status_code == 401
    credential = await machine_credential(client, services, ["verify:transit"])
    machine = await signed(client, credential, "GET", "/api/v1/machine/whoami")
    assert machine.status_code == 200
    for answer in (me, denied, machine):
        assert answer.headers["cache-control"] == "no-store"
        _secure(answer, production=False)


async def test_the_jwks_keeps_its_own_caching(client):
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers.get_list("cache-control") == ["public, max-age=300"]
    _secure(jwks, production=False)


def test_tzt_serve_starts_the_internal_listener_on_loopback_outside_dev(settings):
    from app_backend.composition.processes import granian_command, listeners
    from app_backend.kernel.settings import _roles_and_listeners

    assert _roles_and_listeners({}, "production")["internal_port"] == 9000
    assert _roles_and_listeners({}, "dev")["internal_port"] == 0
    assert _roles_and_listeners({"TZT_INTERNAL_PORT": "9100"}, "production")["internal_port"] == 9100

    assert [x.name for x in listeners(settings, "10.0.0.5", 8000, 4)] == ["public"]  # dev: one port for all
    production = msgspec.structs.replace(settings, env="production", internal_port=9000)
    public, internal = listeners(production, "10.0.0.5", 8000, 4)
    assert (public.host, public.port, public.workers, public.env) == ("10.0.0.5", 8000, 4, {})
    assert (internal.host, internal.port, internal.workers) == ("127.0.0.1", 9000, 1)
    assert internal.env == {"TZT_LISTENER": "internal"}
    command = granian_command(internal, production)
    assert (
        command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "9000"
    )
