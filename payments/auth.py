"""Who is calling payments: the resident paying (`Payer`) and a payee's system (`ClientOrganisation`, a signed
machine request), and their dependencies."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request

from app_backend.identity.schemas import ResidentPrincipal
from app_backend.organisations.auth import provide_machine


class Payer(msgspec.Struct, frozen=True):
    resident_id: uuid.UUID


class ClientOrganisation(msgspec.Struct, frozen=True):
    """A payee's system calling us with a signed machine request."""

    organisation_id: uuid.UUID
    organisation_name: str
    scopes: frozenset[str]


def provide_payer(resident: ResidentPrincipal) -> Payer:
    return Payer(resident_id=resident.resident_id)


async def provide_payee_client(request: Request[Any, Any, Any]) -> ClientOrganisation:
    machine = await provide_machine(request)
    return ClientOrganisation(
        organisation_id=machine.organisation_id,
        organisation_name=machine.organisation_name,
        scopes=machine.scopes,
    )
