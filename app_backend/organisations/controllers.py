"""HTTP for operations staff on organisations and their credentials, and for machine clients (signed requests)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, delete, get, post, put
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import AUDITOR, OPS_ADMIN, OPS_REVIEWER, STAFF, Staff, audited, staff_only
from app_backend.kernel.db import Connection
from app_backend.kernel.http import problems
from app_backend.organisations.auth import MACHINE
from app_backend.organisations.schemas import (
    CredentialCreate,
    CredentialIssued,
    Credentials,
    MachinePrincipal,
    Organisation,
    OrganisationCreate,
    Organisations,
    RateLimitChange,
    WhoAmI,
)

if TYPE_CHECKING:
    from app_backend.organisations.service import OrganisationServices


class OrganisationAdminController(Controller):
    path = "/api/v1/admin/organisations"
    tags = ["admin"]
    guards = [staff_only()]
    dependencies = STAFF

    @get(
        "",
        summary="All organisations",
        guards=[staff_only(OPS_ADMIN, OPS_REVIEWER, AUDITOR)],
        opt=audited("admin.organisation_list"),
    )
    async def list_organisations(
        self, organisations: OrganisationServices, db: Connection, staff: Staff
    ) -> Organisations:
        return Organisations(organisations=await organisations.organisations.list_all(db))

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Register an organisation",
        guards=[staff_only(OPS_ADMIN)],
        opt=problems(409),
    )
    async def create_organisation(
        self, data: OrganisationCreate, organisations: OrganisationServices, db: Connection, staff: Staff
    ) -> Organisation:
        return await organisations.organisations.create(
            db, data.name, data.kind, data.location, staff.actor, data.rate_limit_per_second
        )

    @put(
        "/{organisation_id:uuid}/rate-limit",
        summary="Set an organisation's requests per second (null: the platform default), e.g. before an event",
        guards=[staff_only(OPS_ADMIN)],
        opt=problems(404),
    )
    async def set_rate_limit(
        self,
        organisation_id: uuid.UUID,
        data: RateLimitChange,
        organisations: OrganisationServices,
        db: Connection,
        staff: Staff,
    ) -> Organisation:
        return await organisations.organisations.set_rate_limit(
            db, organisation_id, data.rate_limit_per_second, staff.actor
        )

    @get(
        "/{organisation_id:uuid}/credentials",
        summary="An organisation's credentials",
        guards=[staff_only(OPS_ADMIN, AUDITOR)],
        opt={
            **problems(404),
            **audited("admin.credential_list", target_type="organisation", target="organisation_id"),
        },
    )
    async def list_credentials(
        self,
        organisation_id: uuid.UUID,
        organisations: OrganisationServices,
        db: Connection,
        staff: Staff,
    ) -> Credentials:
        return Credentials(credentials=await organisations.organisations.credentials(db, organisation_id))

    @post(
        "/{organisation_id:uuid}/credentials",
        status_code=HTTP_201_CREATED,
        summary="Issue an API credential (the secret is shown once)",
        guards=[staff_only(OPS_ADMIN)],
        opt=problems(404),
    )
    async def issue_credential(
        self,
        organisation_id: uuid.UUID,
        data: CredentialCreate,
        organisations: OrganisationServices,
        db: Connection,
        staff: Staff,
    ) -> CredentialIssued:
        return await organisations.organisations.issue_credential(
            db, organisation_id, data.scopes, data.label, staff.actor
        )

    @delete(
        "/{organisation_id:uuid}/credentials/{key_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke an API credential",
        guards=[staff_only(OPS_ADMIN)],
        opt=problems(404),
    )
    async def revoke_credential(
        self,
        organisation_id: uuid.UUID,
        key_id: str,
        organisations: OrganisationServices,
        db: Connection,
        staff: Staff,
    ) -> None:
        await organisations.organisations.revoke_credential(db, organisation_id, key_id, staff.actor)
        await organisations.machine_auth.revoke(key_id)


class MachineController(Controller):
    path = "/api/v1/machine"
    tags = ["machine"]
    dependencies = MACHINE

    @get("/whoami", summary="Which organisation and scopes this signed request speaks for")
    async def whoami(self, machine: MachinePrincipal) -> WhoAmI:
        return WhoAmI(
            key_id=machine.key_id,
            organisation_id=machine.organisation_id,
            organisation_name=machine.organisation_name,
            organisation_kind=machine.organisation_kind,
            scopes=sorted(machine.scopes),
        )

    @post("/echo", status_code=HTTP_200_OK, summary="Echo a signed JSON body (integration check for clients)")
    async def echo(self, machine: MachinePrincipal, data: dict[str, Any]) -> dict[str, Any]:
        return {"key_id": machine.key_id, "received": data}
