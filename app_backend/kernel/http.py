"""What every domain's controllers share about the HTTP request: the request's transaction, the client's address
behind trusted proxies, the request id, and actions to run once the transaction has committed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.types import ASGIApp, Receive, Scope, Send

from app_backend.kernel.db import OPEN_TRANSACTION, transaction_connection
from app_backend.kernel.settings import Settings

AnyRequest = Request[Any, Any, Any]
AnyConnection = ASGIConnection[Any, Any, Any, Any]


def settings_of(state: State) -> Settings:
    """The settings the composition put in the app state."""
    settings: Settings = state.settings
    return settings


async def provide_db(request: AnyRequest) -> AsyncIterator[asyncpg.Connection]:
    """The request's transaction. Its exit stack is registered in the scope state while it is open, so that
    `release_abandoned_transactions` can close it if Litestar abandons this dependency."""
    state = request.scope.setdefault("state", {})
    app_state = request.app.state
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(
            transaction_connection(app_state.pool, settings_of(app_state).db_acquire_timeout)
        )
        state[OPEN_TRANSACTION] = stack
        try:
            yield conn
        finally:
            state.pop(OPEN_TRANSACTION, None)


def client_ip(request: AnyConnection) -> str:
    """The peer address, or the nearest X-Forwarded-For entry when the peer is a trusted proxy."""
    peer = request.client.host if request.client else ""
    trusted = settings_of(request.app.state).trusted_proxies
    if peer in trusted:
        forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        while forwarded and forwarded[-1] in trusted:
            forwarded.pop()
        if forwarded:
            return forwarded[-1][:64]
    return peer


def request_id(request: AnyConnection) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def signed_path(request: AnyRequest) -> str:
    """The path and query exactly as sent: what a machine client signed."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    return request.scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")


def after_commit(request: AnyRequest, action: Callable[[], Awaitable[None]]) -> None:
    """Runs `action` once the request's transaction has committed (Litestar closes dependencies, committing,
    before it sends the response; `run_after_commit` runs as the app's after-response hook)."""
    request.scope.setdefault("state", {}).setdefault("after_commit", []).append(action)


async def run_after_commit(request: AnyRequest) -> None:
    for action in request.scope.get("state", {}).pop("after_commit", []):
        await action()


def release_abandoned_transactions(app: ASGIApp) -> ASGIApp:
    """Litestar resolves sibling dependencies concurrently; when one of them fails (a 401, a 403, a 429) after
    the request's transaction was opened, Litestar never resumes the transaction's dependency, which would keep
    its connection inside an open transaction until the garbage collector got to it. The dependency registers
    its exit stack in the scope state; this closes what is left there (rollback, release) once the response
    has gone."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            state = scope.get("state")
            left: contextlib.AsyncExitStack | None = state.pop(OPEN_TRANSACTION, None) if state else None
            if left is not None:
                await left.aclose()

    return middleware


DB = {"db": Provide(provide_db)}

PROBLEMS_OPT = "problems"
RESIDENT_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
MACHINE_SECURITY: list[dict[str, list[str]]] = [{"machine": []}]


def problems(*statuses: int) -> dict[str, tuple[int, ...]]:
    """A route `opt` declaring the problem statuses a handler (or every handler of a controller) answers beyond
    those the platform implies (app_backend/composition/openapi.py): e.g. `opt=problems(404, 409)`."""
    return {PROBLEMS_OPT: statuses}
