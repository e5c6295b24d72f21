"""The transit tests' operator."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import machine_credential


@pytest.fixture
async def metro(client: Any, services: Any) -> dict[str, Any]:
    """A metro operator without the refund scope: money back must not need it."""
    return await machine_credential(client, services, ["verify:transit", "gates:sync", "gates:taps"])
