"""The app factory: composes the domain packages into one Litestar application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins.prometheus import PrometheusConfig

from app_backend.composition.health import HealthController
from app_backend.composition.logging import configure_logging, request_id_middleware
from app_backend.composition.modules import MODULES
from app_backend.composition.openapi import document_problems
from app_backend.composition.shedding import LoadShedder
from app_backend.composition.surface import (
    docs_and_metrics_handlers,
    listener_guards,
    openapi_config,
    security_headers,
)
from app_backend.composition.wiring import Services
from app_backend.kernel.http import DB, release_abandoned_transactions, run_after_commit, settings_of
from app_backend.kernel.module import DomainModule, Platform
from app_backend.kernel.problems import EXCEPTION_HANDLERS
from app_backend.kernel.screening import screen_request
from app_backend.kernel.settings import Settings, load_settings


def _platform_of(state: State) -> Platform:
    platform: Platform = state.platform
    return platform


def create_app(settings: Settings | None = None, modules: Sequence[DomainModule] = MODULES) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        (await Services.create(settings, modules)).install(app.state)
        try:
            yield
        finally:
            await app.state.services.close()

    handlers: list[Any] = [HealthController, *docs_and_metrics_handlers(settings)]
    dependencies: dict[str, Any] = {
        **DB,
        "settings": Provide(settings_of, sync_to_thread=False),
        "platform": Provide(_platform_of, sync_to_thread=False),
    }
    namespace: dict[str, Any] = {"Settings": Settings, "Platform": Platform}
    for module in modules:
        handlers += [*module.routes, *(module.dev_routes if settings.is_dev else ())]
        dependencies.update(module.dependencies)
        namespace.update({kind.__name__: kind for kind in module.signature_types})
    shedder = LoadShedder(settings.max_in_flight)
    prometheus = PrometheusConfig(app_name="taizhou_tong", group_path=True, exclude=["/metrics"])
    app = Litestar(
        route_handlers=handlers,
        dependencies=dependencies,
        signature_namespace=namespace,
        lifespan=[lifespan],
        middleware=[
            shedder.middleware,
            request_id_middleware,
            prometheus.middleware,
            release_abandoned_transactions,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=screen_request,
        guards=listener_guards(settings),
        after_response=run_after_commit,
        request_max_body_size=settings.max_body_bytes,
        response_cache_config=ResponseCacheConfig(),
        openapi_config=openapi_config(settings),
        before_send=[security_headers(settings)],
        debug=False,
    )
    document_problems(app)
    return app
