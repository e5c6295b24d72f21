"""HTTP for enterprises and their members."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from litestar import Controller, delete, get, post
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.enterprises.schemas import (
    Enterprise,
    EnterpriseCreate,
    Member,
    MemberAdd,
    Members,
    UsccOverride,
)
from app_backend.identity.auth import OPS_ADMIN, RESIDENT_ACTOR, STAFF, Staff, staff_only
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.identity.service import phone_field
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from app_backend.kernel.http import problems

if TYPE_CHECKING:
    from app_backend.enterprises.service import EnterpriseServices


class EnterpriseController(Controller):
    path = "/api/v1/enterprises"
    tags = ["enterprises"]
    dependencies = RESIDENT_ACTOR

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Register an enterprise as its legal representative",
        opt=problems(403, 409, 422),
    )
    async def create(
        self,
        data: EnterpriseCreate,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> Enterprise:
        return await enterprises.enterprises.create(db, resident.resident_id, data.name, data.uscc, actor)

    @get("/{enterprise_id:uuid}", summary="An enterprise I belong to", opt=problems(404))
    async def get_one(
        self,
        enterprise_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Enterprise:
        return await enterprises.enterprises.get(db, enterprise_id, resident.resident_id)

    @get("/{enterprise_id:uuid}/members", summary="Members, masked", opt=problems(404))
    async def members(
        self,
        enterprise_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Members:
        return Members(members=await enterprises.enterprises.members(db, enterprise_id, resident.resident_id))

    @post(
        "/{enterprise_id:uuid}/members",
        status_code=HTTP_201_CREATED,
        summary="Add a member (administrators)",
        opt=problems(403, 404, 409),
    )
    async def add_member(
        self,
        enterprise_id: uuid.UUID,
        data: MemberAdd,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> Member:
        return await enterprises.enterprises.add_member(
            db, enterprise_id, resident.resident_id, phone_field(data.phone), data.role, actor
        )

    @delete(
        "/{enterprise_id:uuid}/members/{member_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a member (administrators)",
        opt=problems(403, 404, 409),
    )
    async def remove_member(
        self,
        enterprise_id: uuid.UUID,
        member_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> None:
        await enterprises.enterprises.remove_member(db, enterprise_id, resident.resident_id, member_id, actor)


class EnterpriseAdminController(Controller):
    path = "/api/v1/admin"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN)]
    dependencies = STAFF

    @post(
        "/uscc-overrides",
        status_code=HTTP_201_CREATED,
        summary="Admit a registry credit code that fails the checksum (audited)",
        opt=problems(409),
    )
    async def uscc_override(
        self, data: UsccOverride, enterprises: EnterpriseServices, db: Connection, staff: Staff
    ) -> dict[str, str]:
        uscc = await enterprises.enterprises.grant_override(db, data.uscc, data.reason, staff.actor)
        return {"uscc": uscc, "status": "admitted"}
