"""Adding a domain is one package and one line in the module list: the app mounts its routes and dependencies,
the worker runs its jobs, the migrator applies its SQL, each from the module object alone."""

from __future__ import annotations

import dataclasses

import pytest

from app_backend.composition.migrator import apply_migrations
from app_backend.composition.modules import MODULES
from app_backend.composition.wiring import start_order
from app_backend.composition.worker import build_worker
from tests.app_backend.composition.probe_domain.module import count_pings
from tests.app_backend.composition.probe_domain.module import module as probe
from tests.conftest import serving


async def test_a_new_domain_is_one_module_in_the_list(settings):
    modules = [*MODULES, probe]  # the one line

    owner, app = settings.migration_database_url, settings.database_url
    applied = await apply_migrations(owner, modules, app_url=app)
    assert applied == ["tests.app_backend.composition.probe_domain/0001_probe.sql"]
    assert await apply_migrations(owner, modules, app_url=app) == []  # once only

    async with serving(settings, 50006, modules=modules) as client:
        first, second = [(await client.get("/api/v1/probe")).json() for _ in range(2)]
        assert first["started_with"] == settings.env and second["pings"] == first["pings"] + 1
        assert "/api/v1/probe" in client.app.openapi_schema.to_schema()["paths"]

    worker = build_worker(settings, modules)
    assert "count_pings" in worker.functions
    assert any(cron.function is count_pings for cron in worker.cron_jobs)


def test_a_module_starts_after_the_ones_it_requires_and_a_circle_is_refused():
    first = dataclasses.replace(probe, name="first", requires=["second"])
    second = dataclasses.replace(probe, name="second")
    assert [m.name for m in start_order([first, second])] == ["second", "first"]
    with pytest.raises(RuntimeError, match="circle"):
        start_order([first, dataclasses.replace(second, requires=["first"])])
    with pytest.raises(RuntimeError, match="not in the module list"):
        start_order([first])
