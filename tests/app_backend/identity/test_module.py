"""The identity module outside dev and test: no dev sender, registry or liveness vendor is constructed, and the dev
routes (the SMS outbox, the liveness vendor's answer) are not mounted (issue 13)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from app_backend.composition.app import create_app
from app_backend.identity import service as identity_service
from app_backend.identity.service import IdentityServices


def _never(name: str) -> Any:
    def construct(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} was constructed outside dev")

    return construct


@pytest.mark.parametrize("backend", ["dev", "anything-unknown"])
async def test_identity_refuses_to_start_in_production_before_building_a_stand_in(
    services, monkeypatch, backend
):
    for stand_in in ("DevOutboxSender", "DevLivenessProvider", "DevPopulationRegistry"):
        monkeypatch.setattr(identity_service, stand_in, _never(stand_in))
    production = msgspec.structs.replace(
        services.settings,
        env="production",
        sms_backend=backend,
        registry_backend=backend,
        liveness_backend=backend,
    )
    with pytest.raises(RuntimeError) as refused:
        IdentityServices.create(
            production,
            services.redis,
            services.pool,
            services.side_pool,
            services.cipher,
            services.audit,
            services.redis_health,
            services.redis_batches,
        )
    for setting in ("TZT_SMS_BACKEND", "TZT_REGISTRY_BACKEND", "TZT_LIVENESS_BACKEND"):
        assert setting in str(refused.value)


def test_production_mounts_no_dev_route(settings):
    production = create_app(msgspec.structs.replace(settings, env="production"))
    paths = {route.path for route in production.routes}
    assert "/api/v1/auth/otp" in paths
    assert not [path for path in paths if path.startswith("/api/v1/dev")], paths
    development = create_app(settings)
    assert "/api/v1/dev/outbox" in {route.path for route in development.routes}
