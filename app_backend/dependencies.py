"""Litestar dependencies shared by the controllers: services, the request transaction, principals, actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.schemas import Actor
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.infra.db import transaction_connection
from code_service.ports import Holder, Scanner
from payments.ports import ClientOrganisation, Payer

if TYPE_CHECKING:
    from app_backend.services import Services
    from code_service.container import CodeServices
    from payments.container import PaymentServices


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_db(services: Services) -> AsyncIterator[Any]:
    async for conn in transaction_connection(services.pool):
        yield conn


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


async def provide_scanner(request: Request[Any, Any, Any], services: Services) -> Scanner:
    """code_service's view of a signed machine request."""
    from app_backend.organisations.controllers import provide_machine

    machine = await provide_machine(request, services)
    return Scanner(
        organisation_id=machine.organisation_id,
        organisation_name=machine.organisation_name,
        organisation_kind=machine.organisation_kind,
        key_id=machine.key_id,
        scopes=machine.scopes,
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
