"""The app factory: composes the domain packages into one Litestar application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.response_cache import ResponseCacheConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from app_backend.composition.dependencies import DEPENDENCIES
from app_backend.composition.logging import configure_logging, request_id_middleware
from app_backend.composition.shedding import LoadShedder
from app_backend.composition.wiring import Services
from app_backend.enterprises.controllers import EnterpriseController
from app_backend.identity.controllers import AuthController, DevController, MeController
from app_backend.kernel.http import release_abandoned_transactions, run_after_commit
from app_backend.kernel.problems import EXCEPTION_HANDLERS
from app_backend.kernel.settings import Settings, load_settings
from app_backend.ops.controllers import HealthController, MetricsController
from app_backend.organisations.controllers import AdminController, MachineController
from code_service.container import ROUTES as CODE_ROUTES
from code_service.container import CodeServices
from payments.container import ROUTES as PAYMENT_ROUTES
from payments.container import PaymentServices


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        (await Services.create(settings)).install(app.state)
        try:
            yield
        finally:
            await app.state.services.close()

    handlers: list[type] = [
        HealthController,
        MetricsController,
        AuthController,
        MeController,
        EnterpriseController,
        AdminController,
        MachineController,
        *CODE_ROUTES,
        *PAYMENT_ROUTES,
    ]
    if settings.is_dev:
        handlers.append(DevController)
    shedder = LoadShedder(settings.max_in_flight)
    prometheus = PrometheusConfig(app_name="taizhou_tong", group_path=True, exclude=["/metrics"])
    return Litestar(
        route_handlers=handlers,
        dependencies=DEPENDENCIES,
        signature_namespace={
            "Services": Services,
            "CodeServices": CodeServices,
            "PaymentServices": PaymentServices,
        },
        lifespan=[lifespan],
        middleware=[
            shedder.middleware,
            request_id_middleware,
            prometheus.middleware,
            release_abandoned_transactions,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        after_response=run_after_commit,
        request_max_body_size=settings.max_body_bytes,
        response_cache_config=ResponseCacheConfig(),
        openapi_config=OpenAPIConfig(
            title="Taizhou Tong API",
            version="1",
            path="/schema",
            description="One code per person and per enterprise, and the city services around it.",
            render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin(path="/scalar")],
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
        ),
        debug=False,
    )
