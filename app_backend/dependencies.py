"""Litestar dependencies shared by the controllers: services, the request transaction, principals, actors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.schemas import Actor
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.infra.db import OPEN_TRANSACTION, transaction_connection
from code_service.ports import Holder, Scanner
from payments.ports import ClientOrganisation, Payer

if TYPE_CHECKING:
    from app_backend.services import Services
    from code_service.container import CodeServices
    from payments.container import PaymentServices


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_db(request: Request[Any, Any, Any], services: Services) -> AsyncIterator[Any]:
    """The request's transaction. Its exit stack is registered in the scope state while it is open, so that
    `release_abandoned_transactions` can close it if Litestar abandons this dependency."""
    state = request.scope.setdefault("state", {})
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(
            transaction_connection(services.pool, services.settings.db_acquire_timeout)
        )
        state[OPEN_TRANSACTION] = stack
        try:
            yield conn
        finally:
            state.pop(OPEN_TRANSACTION, None)


def client_ip(request: Request[Any, Any, Any]) -> str:
    """The peer address, or the nearest X-Forwarded-For entry when the peer is a trusted proxy."""
    peer = request.client.host if request.client else ""
    trusted = request.app.state.services.settings.trusted_proxies
    if peer in trusted:
        forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        while forwarded and forwarded[-1] in trusted:
            forwarded.pop()
        if forwarded:
            return forwarded[-1][:64]
    return peer


def request_id(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def provide_resident(request: Request[Any, Any, Any], services: Services) -> ResidentPrincipal:
    return await services.auth.authenticate(request.headers.get("authorization"))


def provide_resident_actor(request: Request[Any, Any, Any], resident: ResidentPrincipal) -> Actor:
    return Actor("resident", str(resident.resident_id), request_id(request), client_ip(request))


def provide_anonymous_actor(request: Request[Any, Any, Any]) -> Actor:
    return Actor("anonymous", "", request_id(request), client_ip(request))


def after_commit(request: Request[Any, Any, Any], action: Callable[[], Awaitable[None]]) -> None:
    """Runs `action` once the request's transaction has committed (Litestar closes dependencies, committing,
    before it sends the response; `run_after_commit` runs as the app's after-response hook)."""
    request.scope.setdefault("state", {}).setdefault("after_commit", []).append(action)


async def run_after_commit(request: Request[Any, Any, Any]) -> None:
    for action in request.scope.get("state", {}).pop("after_commit", []):
        await action()


def provide_codes(services: Services) -> CodeServices:
    return services.codes


def provide_holder(resident: ResidentPrincipal) -> Holder:
    return Holder(resident_id=resident.resident_id)


def provide_display_holder(request: Request[Any, Any, Any], services: Services) -> Holder:
    """The resident showing their code: the token is checked here, its Redis checks (session revoked, rate
    limit) are left to the display's own pipeline, which settles them before it answers."""
    principal, checks = services.auth.check_token(request.headers.get("authorization"))
    return Holder(resident_id=principal.resident_id, checks=checks)


async def provide_scanner(request: Request[Any, Any, Any], services: Services) -> Scanner:
    """code_service's view of a signed machine request, fully checked."""
    scanner = await provide_verifier(request, services)
    await scanner.checks.run()
    return msgspec.structs.replace(scanner, checks=None)


async def provide_verifier(request: Request[Any, Any, Any], services: Services) -> Scanner:
    """A signed machine request whose Redis checks (nonce, revoked mark, rate limit) are left to the verify
    pipeline, so that verification costs one Redis round trip; verification settles them before it answers."""
    from app_backend.organisations.controllers import signed_path

    machine, checks = await services.machine_auth.check_signature(
        services.side_pool, request.method, signed_path(request), request.headers, await request.body()
    )
    return Scanner(
        organisation_id=machine.organisation_id,
        organisation_name=machine.organisation_name,
        organisation_kind=machine.organisation_kind,
        key_id=machine.key_id,
        scopes=machine.scopes,
        checks=checks,
    )


def provide_payments(services: Services) -> PaymentServices:
    return services.payments


def provide_payer(resident: ResidentPrincipal) -> Payer:
    return Payer(resident_id=resident.resident_id)


async def provide_payee_client(request: Request[Any, Any, Any], services: Services) -> ClientOrganisation:
    from app_backend.organisations.controllers import provide_machine

    machine = await provide_machine(request, services)
    return ClientOrganisation(
        organisation_id=machine.organisation_id,
        organisation_name=machine.organisation_name,
        scopes=machine.scopes,
    )


DEPENDENCIES = {
    "payments": Provide(provide_payments, sync_to_thread=False),
    "payer": Provide(provide_payer, sync_to_thread=False),
    "payee_client": Provide(provide_payee_client),
    "codes": Provide(provide_codes, sync_to_thread=False),
    "holder": Provide(provide_holder, sync_to_thread=False),
    "scanner": Provide(provide_scanner),
    "services": Provide(provide_services, sync_to_thread=False),
    "db": Provide(provide_db),
    "resident": Provide(provide_resident),
}
RESIDENT_ACTOR = {"actor": Provide(provide_resident_actor, sync_to_thread=False)}
ANONYMOUS_ACTOR = {"actor": Provide(provide_anonymous_actor, sync_to_thread=False)}
