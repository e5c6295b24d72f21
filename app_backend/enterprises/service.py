"""Rules for enterprises: who may create one, who administers it, and the audited credit-code override."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from app_backend.audit.service import AuditTrail
from app_backend.enterprises.registry import DevLegalEntityRegistry, LegalEntityRegistry
from app_backend.enterprises.repository import (
    EnterpriseRepository,
    EnterpriseRow,
    InvitationRepository,
    InvitationRow,
    MemberRow,
)
from app_backend.enterprises.schemas import (
    Enterprise,
    EnterpriseFacts,
    Invitation,
    InvitationStatus,
    InvitingEnterprise,
    Member,
    MyInvitation,
)
from app_backend.identity.schemas import LinkedEnterprise
from app_backend.identity.service import ResidentDirectory
from app_backend.identity.validators import InvalidIdentifier, normalise_uscc, uscc_checksum_ok
from app_backend.kernel.actors import Actor
from app_backend.kernel.clock import now
from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from app_backend.kernel.settings import Settings

# Long enough for a person to notice and answer; an unanswered invitation then lapses rather than wait forever.
INVITATION_LIFETIME = dt.timedelta(days=7)

_REGISTRY_PROBLEMS = {
    "unknown": ("uscc", "not found in the legal-entity registry", 422),
    "inactive": ("uscc", "the registry lists this entity as deregistered or revoked", 422),
    "name-mismatch": ("name", "does not match the registered name of this credit code", 422),
    "not-representative": ("uscc", "you are not the registered legal representative of this entity", 403),
}


def _enterprise(row: EnterpriseRow, my_role: str) -> Enterprise:
    return Enterprise(
        id=row.id,
        name=row.name,
        uscc=row.uscc,
        standing=row.standing,
        checksum_override=row.checksum_override,
        created_at=row.created_at,
        my_role=my_role,
    )


class EnterpriseService:
    def __init__(
        self,
        settings: Settings,
        cipher: FieldCipher,
        audit: AuditTrail,
        registry: LegalEntityRegistry,
        residents: ResidentDirectory,
    ) -> None:
        self._settings = settings
        self._cipher = cipher
        self._audit = audit
        self._registry = registry
        self._repo = EnterpriseRepository()
        self._invitations = InvitationRepository()
        self._residents = residents
        self.clock: Callable[[], dt.datetime] = now  # invitations expire on this clock (tests move it on)

    async def _checked_uscc(self, conn: Connection, raw: str) -> tuple[str, bool]:
        try:
            uscc = normalise_uscc(raw)
        except InvalidIdentifier as exc:
            raise invalid_field("uscc", str(exc)) from None
        if uscc_checksum_ok(uscc):
            return uscc, False
        if await self._repo.has_override(conn, uscc):
            return uscc, True
        raise invalid_field("uscc", "check character does not match")

    async def create(
        self, conn: Connection, resident_id: uuid.UUID, raw_name: str, raw_uscc: str, actor: Actor
    ) -> Enterprise:
        name = " ".join(raw_name.split())
        if not name:
            raise invalid_field("name", "must not be blank")
        uscc, override = await self._checked_uscc(conn, raw_uscc)
        id_number = await self._residents.verified_id_number(conn, resident_id)
        if id_number is None:
            raise DomainError(
                403, "level-required", "creating an enterprise needs real-name verification (L2)"
            )
        verdict = await self._registry.verify_representative(conn, uscc, name, id_number)
        if verdict != "ok":
            field, message, status = _REGISTRY_PROBLEMS[verdict]
            await self._audit.record_detached(
                actor, "enterprise.create", target_type="uscc", target_id=uscc, outcome=verdict
            )
            raise invalid_field(field, message, status)
        created = await self._repo.create(conn, uscc, name, override, resident_id)
        if created is None:
            raise DomainError(
                409,
                "enterprise-exists",
                "uscc: an enterprise with this credit code is already registered",
                extra={"errors": [{"field": "uscc", "message": "already registered"}]},
            )
        await self._repo.add_member(conn, created.id, resident_id, "admin", None)
        await self._audit.record(
            conn,
            actor,
            "enterprise.create",
            target_type="enterprise",
            target_id=str(created.id),
            detail={"uscc": uscc, "checksum_override": override},
        )
        return _enterprise(created, "admin")

    async def _role_or_404(self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID) -> str:
        role = await self._repo.member_role(conn, enterprise_id, resident_id)
        if role is None:  # outsiders learn nothing, not even that it exists
            raise DomainError(404, "not-found", "enterprise not found")
        return role

    async def _locked_as_admin(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        resident_id: uuid.UUID,
    ) -> dict[uuid.UUID, str]:
        roles = await self._repo.lock_members(conn, enterprise_id)
        if resident_id not in roles:  # outsiders learn nothing, not even that it exists
            raise DomainError(404, "not-found", "enterprise not found")
        if roles[resident_id] != "admin":
            raise DomainError(
                403, "forbidden", "only an administrator of this enterprise may change its members"
            )
        return roles

    async def get(self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID) -> Enterprise:
        role = await self._role_or_404(conn, enterprise_id, resident_id)
        row = await self._repo.get(conn, enterprise_id)
        if row is None:  # a member's enterprise exists (a foreign key); the type cannot say so
            raise DomainError(404, "not-found", "enterprise not found")
        return _enterprise(row, role)

    async def members(
        self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID
    ) -> list[Member]:
        await self._role_or_404(conn, enterprise_id, resident_id)
        return [self._member(r) for r in await self._repo.members(conn, enterprise_id)]

    def _member(self, row: MemberRow) -> Member:
        """A member as their enterprise's members see them: name and phone masked."""
        s = self._settings
        return Member(
            resident_id=row.resident_id,
            role=row.role,
            added_at=row.added_at,
            name=(
                mask(self._cipher.decrypt("resident.name", row.name_enc), s.mask_name.head, s.mask_name.tail)
                if row.name_enc
                else None
            ),
            phone=mask(
                self._cipher.decrypt("resident.phone", row.phone_enc), s.mask_phone.head, s.mask_phone.tail
            ),
        )

    async def invite(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        admin_id: uuid.UUID,
        phone: str,
        role: str,
        actor: Actor,
    ) -> Invitation:
        """Invites whoever uses `phone` (normalised). Nobody is looked up: the answer is the same whether the phone
        has an account, has none yet, or is a member's, so an administrator cannot probe who is registered, and
        the person joins only by accepting from their own account."""
        await self._locked_as_admin(conn, enterprise_id, admin_id)
        now = self.clock()
        rule = self._settings.mask_phone
        row = await self._invitations.invite(
            conn,
            enterprise_id,
            # identity.residents keeps this keyed hash of the phone: the invitee's account finds it by a join.
            self._cipher.lookup_hash("resident.phone", phone),
            mask(phone, rule.head, rule.tail),
            role,
            admin_id,
            now,
            now + INVITATION_LIFETIME,
        )
        await self._audit.record(
            conn,
            actor,
            "enterprise.member_invite",
            target_type="enterprise",
            target_id=str(enterprise_id),
            detail={"invitation": str(row.id), "role": role},
        )
        return self._invitation(row, now)

    def _invitation(self, row: InvitationRow, now: dt.datetime) -> Invitation:
        # The table's CHECK keeps the stored status to these; an open one past its time reads as expired (it is
        # stored so only when the phone is invited again).
        status = cast(
            InvitationStatus, "expired" if row.status == "pending" and row.expires_at <= now else row.status
        )
        return Invitation(
            id=row.id,
            phone=row.phone_masked,
            role=row.role,
            status=status,
            invited_at=row.invited_at,
            expires_at=row.expires_at,
            answered_at=row.answered_at,
        )

    async def invitations(
        self, conn: Connection, enterprise_id: uuid.UUID, admin_id: uuid.UUID
    ) -> list[Invitation]:
        await self._locked_as_admin(conn, enterprise_id, admin_id)
        now = self.clock()
        return [self._invitation(r, now) for r in await self._invitations.of_enterprise(conn, enterprise_id)]

    async def revoke_invitation(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        admin_id: uuid.UUID,
        invitation_id: uuid.UUID,
        actor: Actor,
    ) -> None:
        await self._locked_as_admin(conn, enterprise_id, admin_id)
        if not await self._invitations.revoke(conn, enterprise_id, invitation_id, self.clock()):
            raise not_found("invitation_id: no open invitation with this id in this enterprise")
        await self._audit.record(
            conn,
            actor,
            "enterprise.invitation_revoke",
            target_type="enterprise",
            target_id=str(enterprise_id),
            detail={"invitation": str(invitation_id)},
        )

    async def my_invitations(self, conn: Connection, resident_id: uuid.UUID) -> list[MyInvitation]:
        return [
            MyInvitation(
                id=r.id,
                enterprise=InvitingEnterprise(id=r.enterprise_id, name=r.enterprise_name, uscc=r.uscc),
                role=r.role,
                invited_at=r.invited_at,
                expires_at=r.expires_at,
            )
            for r in await self._invitations.open_for(conn, resident_id, self.clock())
        ]

    async def _open_invitation(
        self, conn: Connection, invitation_id: uuid.UUID, resident_id: uuid.UUID, now: dt.datetime
    ) -> InvitationRow:
        row = await self._invitations.addressed_to(conn, invitation_id, resident_id)
        if row is None:  # someone else's and one that does not exist look the same
            raise not_found("invitation_id: no invitation with this id for you")
        if row.status != "pending":
            raise DomainError(
                409,
                "invitation-answered",
                f"invitation_id: this invitation is closed ({row.status})",
            )
        if row.expires_at <= now:
            raise DomainError(
                410,
                "invitation-expired",
                "invitation_id: this invitation has expired; ask the enterprise to invite you again",
            )
        return row

    async def accept(
        self, conn: Connection, invitation_id: uuid.UUID, resident_id: uuid.UUID, actor: Actor
    ) -> Enterprise:
        now = self.clock()
        found = await self._open_invitation(conn, invitation_id, resident_id, now)
        # The members first, as every membership change takes them (an administrator renewing this invitation
        # holds them too), then the invitation itself.
        roles = await self._repo.lock_members(conn, found.enterprise_id)
        if resident_id in roles:
            raise DomainError(
                409,
                "already-member",
                "invitation_id: you are already a member of this enterprise",
            )
        accepted = await self._invitations.answer(conn, invitation_id, "accepted", now)
        if accepted is None:
            raise DomainError(409, "invitation-answered", "invitation_id: this invitation is closed")
        await self._repo.add_member(
            conn, accepted.enterprise_id, resident_id, accepted.role, accepted.invited_by
        )
        await self._audit.record(
            conn,
            actor,
            "enterprise.member_join",
            target_type="enterprise",
            target_id=str(accepted.enterprise_id),
            detail={"invitation": str(invitation_id), "member": str(resident_id), "role": accepted.role},
        )
        return await self.get(conn, accepted.enterprise_id, resident_id)

    async def decline(
        self, conn: Connection, invitation_id: uuid.UUID, resident_id: uuid.UUID, actor: Actor
    ) -> None:
        now = self.clock()
        found = await self._open_invitation(conn, invitation_id, resident_id, now)
        if await self._invitations.answer(conn, invitation_id, "declined", now) is None:
            raise DomainError(409, "invitation-answered", "invitation_id: this invitation is closed")
        await self._audit.record(
            conn,
            actor,
            "enterprise.invitation_decline",
            target_type="enterprise",
            target_id=str(found.enterprise_id),
            detail={"invitation": str(invitation_id)},
        )

    async def remove_member(
        self,
        conn: Connection,
        enterprise_id: uuid.UUID,
        admin_id: uuid.UUID,
        member_id: uuid.UUID,
        actor: Actor,
    ) -> None:
        roles = await self._locked_as_admin(conn, enterprise_id, admin_id)
        outcome = roles.get(member_id)
        if outcome is None:
            raise DomainError(404, "not-found", "member_id: not a member of this enterprise")
        if outcome == "admin" and sum(1 for r in roles.values() if r == "admin") == 1:
            raise DomainError(
                409,
                "last-admin",
                "member_id: the last administrator cannot be removed; appoint another first",
            )
        await self._repo.remove_member(conn, enterprise_id, member_id)
        await self._audit.record(
            conn,
            actor,
            "enterprise.member_remove",
            target_type="enterprise",
            target_id=str(enterprise_id),
            detail={"member": str(member_id), "role": outcome},
        )

    async def linked(self, conn: Connection, resident_id: uuid.UUID) -> list[LinkedEnterprise]:
        return [
            LinkedEnterprise(id=r.id, name=r.name, uscc=r.uscc, role=r.role)
            for r in await self._repo.linked(conn, resident_id)
        ]

    async def grant_override(self, conn: Connection, raw_uscc: str, reason: str, actor: Actor) -> str:
        try:
            uscc = normalise_uscc(raw_uscc)
        except InvalidIdentifier as exc:
            raise invalid_field("uscc", str(exc)) from None
        if uscc_checksum_ok(uscc):
            raise invalid_field("uscc", "passes the checksum; no override is needed", 409)
        if not await self._repo.add_override(conn, uscc, reason, f"{actor.type}:{actor.id}"):
            raise invalid_field("uscc", "an override for this code exists already", 409)
        await self._audit.record(
            conn, actor, "admin.uscc_override", target_type="uscc", target_id=uscc, detail={"reason": reason}
        )
        return uscc


class EnterpriseDirectory:
    """Facts about enterprises other domains ask for (the code side: an enterprise's code and its members)."""

    def __init__(self) -> None:
        self._enterprises = EnterpriseRepository()

    async def enterprise_of_member(
        self, conn: Connection, enterprise_id: uuid.UUID, resident_id: uuid.UUID
    ) -> EnterpriseFacts | None:
        if await self._enterprises.member_role(conn, enterprise_id, resident_id) is None:
            return None
        return await self.enterprise(conn, enterprise_id)

    async def enterprise(self, conn: Connection, enterprise_id: uuid.UUID) -> EnterpriseFacts | None:
        row = await self._enterprises.get(conn, enterprise_id)
        if row is None:
            return None
        return EnterpriseFacts(id=row.id, name=row.name, uscc=row.uscc, standing=row.standing)


@dataclass
class EnterpriseServices:
    """The enterprises domain's public services."""

    enterprises: EnterpriseService
    directory: EnterpriseDirectory
    legal_entities: LegalEntityRegistry

    @classmethod
    def create(
        cls, settings: Settings, cipher: FieldCipher, audit: AuditTrail, residents: ResidentDirectory
    ) -> EnterpriseServices:
        legal = DevLegalEntityRegistry(cipher)
        return cls(
            enterprises=EnterpriseService(settings, cipher, audit, legal, residents),
            directory=EnterpriseDirectory(),
            legal_entities=legal,
        )
