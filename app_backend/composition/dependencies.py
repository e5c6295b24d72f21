"""Litestar dependencies shared by the controllers: services, the request transaction, principals, actors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.schemas import Actor
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.http import client_ip, provide_db, request_id, signed_path
from code_service.ports import Holder, Scanner
from payments.ports import ClientOrganisation, Payer

if TYPE_CHECKING:
    from app_backend.composition.wiring import Services
    from code_service.container import CodeServices
    from payments.container import PaymentServices


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_resident(request: Request[Any, Any, Any], services: Services) -> ResidentPrincipal:
    return await services.auth.authenticate(request.headers.get("authorization"))


def provide_resident_actor(request: Request[Any, Any, Any], resident: ResidentPrincipal) -> Actor:
    return Actor("resident", str(resident.resident_id), request_id(request), client_ip(request))


def provide_anonymous_actor(request: Request[Any, Any, Any]) -> Actor:
    return Actor("anonymous", "", request_id(request), client_ip(request))


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
