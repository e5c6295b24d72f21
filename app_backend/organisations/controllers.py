"""HTTP for operations staff (admin, every action audited) and for machine clients (signed requests)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.audit.schemas import Actor, AuditPage
from app_backend.identity.repository import ResidentRepository
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.errors import DomainError
from app_backend.kernel.http import after_commit, client_ip, request_id, signed_path
from app_backend.organisations.schemas import (
    CredentialCreate,
    CredentialIssued,
    Credentials,
    MachinePrincipal,
    Organisation,
    OrganisationCreate,
    Organisations,
    RateLimitChange,
    ResidentStatusChange,
    RevealRequest,
    StaffGrant,
    UsccOverride,
    WhoAmI,
)
from payments.reconciliation.schemas import ReconciliationReport
from payments.settlement.schemas import PayoutRecord, Settlements, SettlementView

if TYPE_CHECKING:
    from app_backend.composition.wiring import Services


class Staff(msgspec.Struct, frozen=True):
    actor: Actor
    roles: frozenset[str]


async def provide_staff(
    request: Request[Any, Any, Any], services: Services, db: Any, resident: ResidentPrincipal
) -> Staff:
    actor = Actor("staff", str(resident.resident_id), request_id(request), client_ip(request))
    roles = frozenset(await ResidentRepository().staff_roles(db, resident.resident_id))
    if not roles:
        await services.audit.record_detached(
            actor, "admin.access", target_type="path", target_id=request.url.path, outcome="denied"
        )
        raise DomainError(403, "forbidden", "this endpoint is for operations staff")
    return Staff(actor=actor, roles=roles)


async def _require(services: Services, staff: Staff, path: str, *allowed: str) -> None:
    if staff.roles.isdisjoint(allowed):
        await services.audit.record_detached(
            staff.actor,
            "admin.access",
            target_type="path",
            target_id=path,
            outcome="denied",
            detail={"needs": list(allowed)},
        )
        raise DomainError(403, "forbidden", f"this action needs one of the roles: {', '.join(allowed)}")


class AdminController(Controller):
    path = "/api/v1/admin"
    tags = ["admin"]
    dependencies = {"staff": Provide(provide_staff)}

    @get("/organisations", summary="All organisations")
    async def list_organisations(
        self, request: Request[Any, Any, Any], services: Services, db: Any, staff: Staff
    ) -> Organisations:
        await _require(services, staff, request.url.path, "ops_admin", "ops_reviewer", "auditor")
        await services.audit.record(db, staff.actor, "admin.organisation_list")
        return Organisations(organisations=await services.organisations.list_all(db))

    @post("/organisations", status_code=HTTP_201_CREATED, summary="Register an organisation")
    async def create_organisation(
        self,
        request: Request[Any, Any, Any],
        data: OrganisationCreate,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> Organisation:
        await _require(services, staff, request.url.path, "ops_admin")
        return await services.organisations.create(
            db, data.name, data.kind, data.location, staff.actor, data.rate_limit_per_second
        )

    @put(
        "/organisations/{organisation_id:uuid}/rate-limit",
        summary="Set an organisation's requests per second (null: the platform default), e.g. before an event",
    )
    async def set_rate_limit(
        self,
        request: Request[Any, Any, Any],
        organisation_id: uuid.UUID,
        data: RateLimitChange,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> Organisation:
        await _require(services, staff, request.url.path, "ops_admin")
        return await services.organisations.set_rate_limit(
            db, organisation_id, data.rate_limit_per_second, staff.actor
        )

    @get("/organisations/{organisation_id:uuid}/credentials", summary="An organisation's credentials")
    async def list_credentials(
        self,
        request: Request[Any, Any, Any],
        organisation_id: uuid.UUID,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> Credentials:
        await _require(services, staff, request.url.path, "ops_admin", "auditor")
        await services.audit.record(
            db,
            staff.actor,
            "admin.credential_list",
            target_type="organisation",
            target_id=str(organisation_id),
        )
        return Credentials(credentials=await services.organisations.credentials(db, organisation_id))

    @post(
        "/organisations/{organisation_id:uuid}/credentials",
        status_code=HTTP_201_CREATED,
        summary="Issue an API credential (the secret is shown once)",
    )
    async def issue_credential(
        self,
        request: Request[Any, Any, Any],
        organisation_id: uuid.UUID,
        data: CredentialCreate,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> CredentialIssued:
        await _require(services, staff, request.url.path, "ops_admin")
        return await services.organisations.issue_credential(
            db, organisation_id, data.scopes, data.label, staff.actor
        )

    @delete(
        "/organisations/{organisation_id:uuid}/credentials/{key_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke an API credential",
    )
    async def revoke_credential(
        self,
        request: Request[Any, Any, Any],
        organisation_id: uuid.UUID,
        key_id: str,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> None:
        await _require(services, staff, request.url.path, "ops_admin")
        await services.organisations.revoke_credential(db, organisation_id, key_id, staff.actor)
        await services.machine_auth.revoke(key_id)

    @post("/staff", status_code=HTTP_201_CREATED, summary="Grant a staff role")
    async def grant_role(
        self, request: Request[Any, Any, Any], data: StaffGrant, services: Services, db: Any, staff: Staff
    ) -> dict[str, str]:
        await _require(services, staff, request.url.path, "ops_admin")
        repo = ResidentRepository()
        if await repo.get(db, data.resident_id) is None:
            raise DomainError(404, "not-found", "resident_id: no such resident")
        await repo.grant_role(db, data.resident_id, data.role, f"staff:{staff.actor.id}")
        await services.audit.record(
            db,
            staff.actor,
            "admin.staff_grant",
            target_type="resident",
            target_id=str(data.resident_id),
            detail={"role": data.role},
        )
        return {"resident_id": str(data.resident_id), "role": data.role}

    @post(
        "/residents/{resident_id:uuid}/status", status_code=HTTP_200_OK, summary="Block or unblock a resident"
    )
    async def set_status(
        self,
        request: Request[Any, Any, Any],
        resident_id: uuid.UUID,
        data: ResidentStatusChange,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> dict[str, str]:
        await _require(services, staff, request.url.path, "ops_admin")
        if not await ResidentRepository().set_status(db, resident_id, data.status):
            raise DomainError(404, "not-found", "resident_id: no such resident")
        if data.status == "blocked":
            await services.auth.revoke_all(db, resident_id, "blocked by operations")
        await services.codes.account_status_changed(db, resident_id, blocked=data.status == "blocked")
        # Cached facts are dropped again once committed: a verify racing this transaction may have re-cached them.
        after_commit(request, lambda: services.codes.facts.drop_resident(resident_id))
        await services.audit.record(
            db,
            staff.actor,
            "admin.resident_status",
            target_type="resident",
            target_id=str(resident_id),
            detail={"status": data.status, "reason": data.reason},
        )
        return {"resident_id": str(resident_id), "status": data.status}

    @post(
        "/residents/{resident_id:uuid}/reveal",
        status_code=HTTP_200_OK,
        summary="Unmasked personal data of a resident (audited, needs a reason)",
    )
    async def reveal(
        self,
        request: Request[Any, Any, Any],
        resident_id: uuid.UUID,
        data: RevealRequest,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> dict[str, str | None]:
        await _require(services, staff, request.url.path, "ops_admin")
        revealed = await services.residents.reveal(db, resident_id)
        await services.audit.record(
            db,
            staff.actor,
            "admin.resident_reveal",
            target_type="resident",
            target_id=str(resident_id),
            detail={"reason": data.reason},
        )
        return revealed

    @post(
        "/uscc-overrides",
        status_code=HTTP_201_CREATED,
        summary="Admit a registry credit code that fails the checksum (audited)",
    )
    async def uscc_override(
        self, request: Request[Any, Any, Any], data: UsccOverride, services: Services, db: Any, staff: Staff
    ) -> dict[str, str]:
        await _require(services, staff, request.url.path, "ops_admin")
        uscc = await services.enterprises.grant_override(db, data.uscc, data.reason, staff.actor)
        return {"uscc": uscc, "status": "admitted"}

    @get("/audit", summary="Search the audit trail")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        db: Any,
        staff: Staff,
        actor_id: str | None = Parameter(query="actor_id", default=None, max_length=64),
        target_id: str | None = Parameter(query="target_id", default=None, max_length=64),
        action: str | None = Parameter(query="action", default=None, max_length=64),
        before_id: int | None = Parameter(query="before_id", default=None, ge=1, le=2**63 - 1),
        limit: int = Parameter(query="limit", default=100, ge=1, le=500),
    ) -> AuditPage:
        await _require(services, staff, request.url.path, "auditor", "ops_admin")
        events = await services.audit.search(
            db, actor_id=actor_id, target_id=target_id, action=action, before_id=before_id, limit=limit
        )
        await services.audit.record(
            db,
            staff.actor,
            "admin.audit_search",
            detail={"actor_id": actor_id, "target_id": target_id, "action": action},
        )
        return AuditPage(events=events)

    @get("/reconciliation", summary="The stored reconciliation report of a business day (Asia/Shanghai)")
    async def reconciliation(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        db: Any,
        staff: Staff,
        day: dt.date | None = Parameter(query="date", default=None, description="YYYY-MM-DD"),
    ) -> ReconciliationReport:
        await _require(services, staff, request.url.path, "ops_admin", "auditor")
        if day is None:
            raise DomainError(400, "bad-request", "date is required (YYYY-MM-DD)")
        report = await services.payments.reconciliation.report(db, day)
        if not report.channels:
            await services.audit.record_detached(
                staff.actor,
                "admin.reconciliation_view",
                target_type="reconciliation",
                target_id=day.isoformat(),
            )
            raise DomainError(404, "not-found", f"no reconciliation has run for {day.isoformat()}")
        await services.audit.record(
            db,
            staff.actor,
            "admin.reconciliation_view",
            target_type="reconciliation",
            target_id=day.isoformat(),
        )
        return report

    @get("/settlements", summary="Settlements of a business day (settled on first view if not yet)")
    async def settlements(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        db: Any,
        staff: Staff,
        day: dt.date | None = Parameter(query="date", default=None, description="YYYY-MM-DD"),
    ) -> Settlements:
        await _require(services, staff, request.url.path, "ops_admin", "auditor")
        if day is None:
            raise DomainError(
                400,
                "bad-request",
                "date: required (YYYY-MM-DD)",
                extra={"errors": [{"field": "date", "message": "required"}]},
            )
        found = await services.payments.settlement.for_day(db, day)
        await services.audit.record(
            db, staff.actor, "admin.settlement_view", target_type="settlement_day", target_id=day.isoformat()
        )
        return Settlements(settlements=found)

    @post(
        "/settlements/{settlement_id:uuid}/paid",
        status_code=HTTP_200_OK,
        summary="Record the bank transfer that paid a settlement (posts the payout to the ledger once)",
    )
    async def settlement_paid(
        self,
        request: Request[Any, Any, Any],
        settlement_id: uuid.UUID,
        data: PayoutRecord,
        services: Services,
        db: Any,
        staff: Staff,
    ) -> SettlementView:
        await _require(services, staff, request.url.path, "ops_admin")
        paid = await services.payments.settlement.mark_paid(db, settlement_id, data.payout_ref)
        await services.audit.record(
            db,
            staff.actor,
            "admin.settlement_paid",
            target_type="settlement",
            target_id=str(settlement_id),
            detail={"payout_ref": data.payout_ref, "net_fen": paid.net_fen},
        )
        return paid


async def provide_machine(request: Request[Any, Any, Any], services: Services) -> MachinePrincipal:
    """A Litestar dependency for machine endpoints: the request must carry a valid, fresh, unused signature."""
    return await services.machine_auth.authenticate(
        services.side_pool, request.method, signed_path(request), request.headers, await request.body()
    )


MACHINE = {"machine": Provide(provide_machine)}


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
