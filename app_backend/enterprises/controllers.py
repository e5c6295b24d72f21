"""HTTP for enterprises and their members."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, delete, get, post
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.audit.schemas import Actor
from app_backend.composition.dependencies import RESIDENT_ACTOR
from app_backend.enterprises.schemas import Enterprise, EnterpriseCreate, Member, MemberAdd, Members
from app_backend.identity.controllers import _phone
from app_backend.identity.schemas import ResidentPrincipal

if TYPE_CHECKING:
    from app_backend.composition.wiring import Services


class EnterpriseController(Controller):
    path = "/api/v1/enterprises"
    tags = ["enterprises"]
    dependencies = RESIDENT_ACTOR

    @post("", status_code=HTTP_201_CREATED, summary="Register an enterprise as its legal representative")
    async def create(
        self, data: EnterpriseCreate, services: Services, db: Any, resident: ResidentPrincipal, actor: Actor
    ) -> Enterprise:
        return await services.enterprises.create(db, resident.resident_id, data.name, data.uscc, actor)

    @get("/{enterprise_id:uuid}", summary="An enterprise I belong to")
    async def get_one(
        self, enterprise_id: uuid.UUID, services: Services, db: Any, resident: ResidentPrincipal
    ) -> Enterprise:
        return await services.enterprises.get(db, enterprise_id, resident.resident_id)

    @get("/{enterprise_id:uuid}/members", summary="Members, masked")
    async def members(
        self, enterprise_id: uuid.UUID, services: Services, db: Any, resident: ResidentPrincipal
    ) -> Members:
        return Members(members=await services.enterprises.members(db, enterprise_id, resident.resident_id))

    @post(
        "/{enterprise_id:uuid}/members", status_code=HTTP_201_CREATED, summary="Add a member (administrators)"
    )
    async def add_member(
        self,
        enterprise_id: uuid.UUID,
        data: MemberAdd,
        services: Services,
        db: Any,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> Member:
        return await services.enterprises.add_member(
            db, enterprise_id, resident.resident_id, _phone(data.phone), data.role, actor
        )

    @delete(
        "/{enterprise_id:uuid}/members/{member_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a member (administrators)",
    )
    async def remove_member(
        self,
        enterprise_id: uuid.UUID,
        member_id: uuid.UUID,
        services: Services,
        db: Any,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> None:
        await services.enterprises.remove_member(db, enterprise_id, resident.resident_id, member_id, actor)
