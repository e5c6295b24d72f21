"""Who is calling: the organisation behind a signed machine request (HMAC, docs/api.md#machine-requests)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from app_backend.kernel.http import signed_path
from app_backend.organisations.schemas import MachinePrincipal


async def provide_machine(request: Request[Any, Any, Any]) -> MachinePrincipal:
    """The request must carry a valid, fresh, unused signature of an active credential."""
    state = request.app.state
    principal: MachinePrincipal = await state.organisations.machine_auth.authenticate(
        state.platform.side_pool, request.method, signed_path(request), request.headers, await request.body()
    )
    return principal


MACHINE = {"machine": Provide(provide_machine)}
