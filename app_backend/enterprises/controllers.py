"""HTTP for enterprises and their members."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from litestar import Controller, delete, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.enterprises.schemas import (
    Enterprise,
    EnterpriseCreate,
    Invitation,
    InvitationCreate,
    Invitations,
    Members,
    MyInvitations,
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
        "/{enterprise_id:uuid}/invitations",
        status_code=HTTP_201_CREATED,
        summary="Invite whoever uses a phone to join (administrators); they accept from their own account",
        opt=problems(403, 404),
    )
    async def invite(
        self,
        enterprise_id: uuid.UUID,
        data: InvitationCreate,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> Invitation:
        return await enterprises.enterprises.invite(
            db, enterprise_id, resident.resident_id, phone_field(data.phone), data.role, actor
        )

    @get(
        "/{enterprise_id:uuid}/invitations",
        summary="The enterprise's invitations, latest first, phones masked (administrators)",
        opt=problems(403, 404),
    )
    async def invitations(
        self,
        enterprise_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Invitations:
        return Invitations(
            invitations=await enterprises.enterprises.invitations(db, enterprise_id, resident.resident_id)
        )

    @delete(
        "/{enterprise_id:uuid}/invitations/{invitation_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Withdraw an open invitation (administrators)",
        opt=problems(403, 404),
    )
    async def revoke_invitation(
        self,
        enterprise_id: uuid.UUID,
        invitation_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> None:
        await enterprises.enterprises.revoke_invitation(
            db, enterprise_id, resident.resident_id, invitation_id, actor
        )

    @get("/invitations", summary="Open invitations to my phone", opt=problems())
    async def my_invitations(
        self, enterprises: EnterpriseServices, db: Connection, resident: ResidentPrincipal
    ) -> MyInvitations:
        return MyInvitations(
            invitations=await enterprises.enterprises.my_invitations(db, resident.resident_id)
        )

    @post(
        "/invitations/{invitation_id:uuid}/accept",
        status_code=HTTP_200_OK,
        summary="Accept an invitation to my phone: I become a member",
        opt=problems(404, 409, 410),
    )
    async def accept(
        self,
        invitation_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> Enterprise:
        return await enterprises.enterprises.accept(db, invitation_id, resident.resident_id, actor)

    @post(
        "/invitations/{invitation_id:uuid}/decline",
        status_code=HTTP_204_NO_CONTENT,
        summary="Decline an invitation to my phone",
        opt=problems(404, 409, 410),
    )
    async def decline(
        self,
        invitation_id: uuid.UUID,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> None:
        await enterprises.enterprises.decline(db, invitation_id, resident.resident_id, actor)

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
