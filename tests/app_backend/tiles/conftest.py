"""Fixtures of the tile tests: a department's service on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.app_backend.tiles.helpers import DepartmentSite


@pytest.fixture
async def site() -> AsyncIterator[DepartmentSite]:
    started = await DepartmentSite().start()
    try:
        yield started
    finally:
        await started.stop()
