"""What the platform shows on each listener, and the headers every answer carries.

Outside dev, the API documents (`/schema/*`) and the metrics (`/metrics`) are not served on the public listener:
`tzt serve` starts an internal listener for them (TZT_INTERNAL_HOST:TZT_INTERNAL_PORT, 127.0.0.1:9000 by default),
where Prometheus and operators reach them. In dev and test they are on the main port, as before. The documents'
pages load Swagger UI and ReDoc from files we serve (the `openapi-ui-bundles` package), never from a CDN.

Every answer, on every listener, carries `X-Content-Type-Options: nosniff`, a referrer policy and a frame
policy; outside dev also `Strict-Transport-Security` (TLS ends at the load balancer in front of us; in dev over
plain http a browser ignores it anyway, and pinning https on 127.0.0.1 would only get in a developer's way). An
answer that sets no `Cache-Control` of its own gets `no-store`: tokens and personal data are most of what the API
answers, and a rule that needs no list of such endpoints cannot forget one. A document meant to be cached (the
JWKS) says so itself and keeps its header."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope
from openapi_ui_bundles import redoc, swagger_ui

from app_backend.composition.health import MetricsController
from app_backend.kernel.settings import Settings

DOCS_PATH = "/schema"
_ASSETS = f"{DOCS_PATH}/assets"

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_NO_STORE = (b"cache-control", b"no-store")


def serves_docs_and_metrics(settings: Settings) -> bool:
    """The public listener does so only in dev and test; the internal listener always."""
    return settings.is_dev or settings.internal_listener


# What the internal listener answers: the documents, the metrics and the health probes, nothing of the API.
_INTERNAL_PATHS = (DOCS_PATH + "/", "/metrics", "/healthz", "/readyz")


def _internal_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    path = connection.scope["path"]
    if not (path == DOCS_PATH or path.startswith(_INTERNAL_PATHS)):
        raise NotFoundException()


def listener_guards(settings: Settings) -> list[Any]:
    """The internal listener serves the API's documents, not the API: bound to a private interface for Prometheus,
    it must not become a second way in that skips the load balancer."""
    return [_internal_only] if settings.internal_listener else []


def security_headers(settings: Settings) -> Any:
    """A `before_send` hook: it sees every answer the app sends, router 404s and shed 503s included."""
    fixed = [*_ALWAYS, *(() if settings.is_dev else (_HSTS,))]

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = list(message.get("headers", ()))
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append(_NO_STORE)
        message["headers"] = headers + fixed

    return add_headers


def _swagger_asset(name: str) -> str:
    return f"{_ASSETS}/swagger/{name}"


def docs_and_metrics_handlers(settings: Settings) -> list[Any]:
    if not serves_docs_and_metrics(settings):
        return []
    assets = [
        create_static_files_router(
            path=f"{_ASSETS}/{name}",
            directories=[bundle.static_path],
            include_in_schema=False,
            name=f"docs-assets-{name}",
        )
        for name, bundle in (("swagger", swagger_ui), ("redoc", redoc))
    ]
    return [MetricsController, *assets]


def openapi_config(settings: Settings) -> OpenAPIConfig | None:
    """The OpenAPI document and its pages where they are served; None (not at all) elsewhere."""
    if not serves_docs_and_metrics(settings):
        return None
    favicon = f"<link rel='icon' type='image/png' href='{_swagger_asset('favicon-32x32.png')}'>"
    return OpenAPIConfig(
        title="Taizhou Tong API",
        version="1",
        path=DOCS_PATH,
        description="One code per person and per enterprise, and the city services around it.",
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=_swagger_asset("swagger-ui-bundle.js"),
                css_url=_swagger_asset("swagger-ui.css"),
                standalone_preset_js_url=_swagger_asset("swagger-ui-standalone-preset.js"),
                favicon=favicon,
            ),
            RedocRenderPlugin(
                path="/redoc",
                js_url=f"{_ASSETS}/redoc/redoc.standalone.js",
                google_fonts=False,
                favicon=favicon,
            ),
        ],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                "machine": SecurityScheme(
                    type="apiKey",
                    name="X-Tzt-Signature",
                    security_scheme_in="header",
                    description="HMAC-SHA256 request signature; see docs/api.md",
                ),
            }
        ),
    )
