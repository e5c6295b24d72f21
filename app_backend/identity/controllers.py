"""HTTP for residents: OTP login, token refresh and logout, the profile, real-name and face verification."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import (
    ANONYMOUS_ACTOR,
    OPS_ADMIN,
    RESIDENT_ACTOR,
    STAFF,
    Staff,
    audited,
    staff_only,
)
from app_backend.identity.registry import DevPopulationRegistry
from app_backend.identity.schemas import (
    DevLivenessOutcome,
    DevLivenessResult,
    DevRegistryPerson,
    DevResidents,
    DevResidentsCreate,
    FaceClaimRequest,
    FaceVerificationRequest,
    LivenessSession,
    LoginRequest,
    OtpRequest,
    OtpSent,
    Outbox,
    Profile,
    RealNameRequest,
    RefreshRequest,
    RegionChoice,
    ResidentPrincipal,
    ResidentRegion,
    ResidentStatusChange,
    RevealRequest,
    StaffGrant,
    TokenPair,
)
from app_backend.identity.service import ReuseDetected, person_of, phone_field
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import DomainError, invalid_field
from app_backend.kernel.http import after_commit, client_ip, problems

if TYPE_CHECKING:
    from app_backend.audit.service import AuditTrail
    from app_backend.enterprises.service import EnterpriseServices
    from app_backend.identity.service import IdentityServices
    from app_backend.kernel.settings import Settings
    from code_service.container import CodeServices


_phone = phone_field


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = ANONYMOUS_ACTOR

    @post(
        "/otp", status_code=HTTP_202_ACCEPTED, summary="Send a one-time login code by SMS", opt=problems(429)
    )
    async def send_otp(
        self,
        request: Request[Any, Any, Any],
        data: OtpRequest,
        identity: IdentityServices,
        settings: Settings,
    ) -> OtpSent:
        await identity.otp.send(_phone(data.phone), client_ip(request))
        return OtpSent(expires_in=settings.otp_ttl, resend_after=settings.otp_cooldown)

    @post(
        "/login",
        status_code=HTTP_200_OK,
        summary="Log in with phone and one-time code",
        opt=problems(401, 403),
    )
    async def login(
        self, data: LoginRequest, identity: IdentityServices, db: Connection, actor: Actor
    ) -> TokenPair:
        phone = _phone(data.phone)
        if not (len(data.otp) == 6 and data.otp.isascii() and data.otp.isdigit()):
            raise invalid_field("otp", "must be 6 digits")
        return await identity.auth.login(db, phone, data.otp, actor)

    @post("/refresh", status_code=HTTP_200_OK, summary="Rotate the refresh token", opt=problems(401))
    async def refresh(self, data: RefreshRequest, identity: IdentityServices, actor: Actor) -> TokenPair:
        # This handler is its own transaction boundary: a detected reuse must commit its revocation and still
        # answer 401.
        async with identity.pool.acquire() as conn, conn.transaction():
            outcome = await identity.auth.refresh(conn, data.refresh_token, actor)
        if isinstance(outcome, ReuseDetected):
            raise DomainError(
                401,
                "refresh-reuse",
                "refresh_token: already used; the session is revoked, log in again",
                extra={"errors": [{"field": "refresh_token", "message": "reused"}]},
            )
        if outcome is None:
            raise DomainError(
                401,
                "refresh-invalid",
                "refresh_token: unknown, expired or revoked",
                extra={"errors": [{"field": "refresh_token", "message": "invalid"}]},
            )
        return outcome

    @post("/logout", status_code=HTTP_200_OK, summary="End this session", dependencies=RESIDENT_ACTOR)
    async def logout(
        self,
        identity: IdentityServices,
        audit: AuditTrail,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> dict[str, str]:
        await identity.auth.revoke_session(db, resident.session_id, "logout")
        await audit.record(
            db, actor, "auth.logout", target_type="session", target_id=str(resident.session_id)
        )
        return {"status": "logged-out"}


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["residents"]
    dependencies = RESIDENT_ACTOR

    @get("", summary="My profile, masked", opt=problems(404))
    async def me(
        self,
        identity: IdentityServices,
        enterprises: EnterpriseServices,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> Profile:
        linked = await enterprises.enterprises.linked(db, resident.resident_id)
        return await identity.residents.profile(db, resident.resident_id, linked)

    @get(
        "/region",
        summary="Where I live: the district I chose, or the city (321200) until I choose",
        opt=problems(404),
    )
    async def region(
        self, identity: IdentityServices, db: Connection, resident: ResidentPrincipal
    ) -> ResidentRegion:
        return await identity.residents.region(db, resident.resident_id)

    @put(
        "/region",
        summary="Choose the district I live in (the city's code: none in particular)",
        description=(
            "The home shows that district's tiles and the city-wide ones; broadcasts to the district reach me. "
            "400 naming `region` for a code that is not one of Taizhou's."
        ),
        opt=problems(404),
    )
    async def choose_region(
        self,
        request: Request[Any, Any, Any],
        data: RegionChoice,
        identity: IdentityServices,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> ResidentRegion:
        chosen = await identity.residents.set_region(db, resident.resident_id, data.region)
        after_commit(request, lambda: identity.events.region_chosen(resident.resident_id))
        return chosen

    @post(
        "/real-name",
        status_code=HTTP_200_OK,
        summary="Verify name and ID number against the registry (L2)",
        opt=problems(404, 409, 422, 429),
    )
    async def real_name(
        self,
        request: Request[Any, Any, Any],
        data: RealNameRequest,
        identity: IdentityServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> dict[str, str]:
        level = await identity.residents.verify_real_name(db, resident, data.name, data.id_number, actor)
        # Scenes have minimum levels, so what other domains cached of this resident is stale once committed.
        after_commit(request, lambda: identity.events.identity_settled(resident.resident_id))
        return {"level": level}

    @post(
        "/reveal",
        status_code=HTTP_200_OK,
        summary="My unmasked name, ID number and phone (needs L3; audited)",
        opt=problems(403, 404),
    )
    async def reveal(
        self, identity: IdentityServices, db: Connection, resident: ResidentPrincipal, actor: Actor
    ) -> dict[str, str | None]:
        return await identity.residents.release_own(db, resident, actor)

    @post(
        "/face-verification/sessions",
        status_code=HTTP_200_OK,
        summary="Start a liveness check (towards L3), of your own identity or of one you claim",
        opt=problems(403, 404, 409, 422, 429),
    )
    async def start_face(
        self,
        identity: IdentityServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
        data: FaceClaimRequest | None = None,
    ) -> LivenessSession:
        claim = data or FaceClaimRequest()
        session_id, ttl = await identity.residents.start_face_verification(
            db, resident, actor, claim.name, claim.id_number, claim.meta_info
        )
        return LivenessSession(session_id=session_id, provider=identity.liveness.name, expires_in=ttl)

    @post(
        "/face-verification",
        status_code=HTTP_200_OK,
        summary="Confirm the liveness result (L3); a claimed identity moves to this account",
        opt=problems(403, 404, 409, 422),
    )
    async def confirm_face(
        self,
        request: Request[Any, Any, Any],
        data: FaceVerificationRequest,
        identity: IdentityServices,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> dict[str, str]:
        verified = await identity.residents.confirm_face_verification(
            db, resident, data.session_id, data.result_token, actor
        )
        # Told and uncached only once committed: a takeover that rolls back must not text anyone.
        after_commit(request, lambda: identity.residents.after_face_verification(verified))
        answer = {"level": verified.level}
        if verified.taken_from is not None:
            answer["identity"] = "taken-over"  # another account held it; it is L1 again and was told
        return answer


class DevController(Controller):
    """Only mounted in dev mode: what a phone and a liveness vendor would hand the resident (while the SMS and
    liveness backends are the dev stand-ins)."""

    path = "/api/v1/dev"
    tags = ["dev"]

    @get("/outbox", summary="SMS messages sent to a phone (dev only)", opt=problems(404))
    async def outbox(
        self, identity: IdentityServices, phone: str = Parameter(query="phone", max_length=32)
    ) -> Outbox:
        if identity.dev_outbox is None:  # dev with a real SMS gateway configured (TZT_SMS_BACKEND)
            raise DomainError(404, "not-found", "the SMS backend is not the dev outbox")
        return Outbox(messages=await identity.dev_outbox.read(_phone(phone)))

    @post(
        "/liveness/{session_id:str}",
        status_code=HTTP_200_OK,
        summary="Finish a liveness check (dev only)",
        opt=problems(404),
    )
    async def liveness(
        self, session_id: str, data: DevLivenessOutcome, identity: IdentityServices
    ) -> DevLivenessResult:
        if identity.dev_liveness is None:  # dev with a real liveness vendor configured (TZT_LIVENESS_BACKEND)
            raise DomainError(404, "not-found", "session_id: the liveness backend is not the dev vendor")
        token = await identity.dev_liveness.complete(session_id, data.outcome)
        if token is None:
            raise DomainError(404, "not-found", "session_id: no open liveness session")
        return DevLivenessResult(result_token=token)

    @post(
        "/registry/people",
        status_code=HTTP_204_NO_CONTENT,
        summary="Enrol a person in the dev population registry (dev only: load tests make their residents L2)",
        opt=problems(404),
    )
    async def enrol_person(self, data: DevRegistryPerson, identity: IdentityServices, db: Connection) -> None:
        registry = identity.population_registry
        if not isinstance(registry, DevPopulationRegistry):  # dev with a real registry (TZT_REGISTRY_BACKEND)
            raise DomainError(404, "not-found", "the population registry is not the dev registry")
        name, id_number = person_of(data.name, data.id_number)
        await registry.enrol(db, name, id_number, [_phone(p) for p in data.phones])

    @post(
        "/residents",
        status_code=HTTP_201_CREATED,
        summary="Make real-named residents, logged in (dev only: a ticket rush's buyers for the load tests)",
    )
    async def residents(
        self, data: DevResidentsCreate, identity: IdentityServices, db: Connection
    ) -> DevResidents:
        return DevResidents(residents=await identity.auth.dev_residents(db, data.count))


class ResidentAdminController(Controller):
    """Operations staff on residents: staff roles, blocking, and the audited reveal of personal data."""

    path = "/api/v1/admin"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN)]
    dependencies = STAFF

    @post(
        "/staff",
        status_code=HTTP_201_CREATED,
        summary="Grant a staff role",
        opt={
            **problems(404),
            **audited("admin.staff_grant", target_type="resident", target="resident_id", detail=("role",)),
        },
    )
    async def grant_role(
        self, data: StaffGrant, identity: IdentityServices, db: Connection, staff: Staff
    ) -> dict[str, str]:
        await identity.residents.grant_role(db, data.resident_id, data.role, staff.actor)
        return {"resident_id": str(data.resident_id), "role": data.role}

    @post(
        "/residents/{resident_id:uuid}/status",
        status_code=HTTP_200_OK,
        summary="Block or unblock a resident",
        opt={
            **problems(404),
            **audited(
                "admin.resident_status",
                target_type="resident",
                target="resident_id",
                detail=("status", "reason"),
            ),
        },
    )
    async def set_status(
        self,
        request: Request[Any, Any, Any],
        resident_id: uuid.UUID,
        data: ResidentStatusChange,
        identity: IdentityServices,
        codes: CodeServices,
        db: Connection,
        staff: Staff,
    ) -> dict[str, str]:
        changed = await identity.residents.set_status(db, resident_id, data.status)
        if data.status == "blocked":
            await identity.auth.revoke_all(db, resident_id, "blocked by operations")
        await codes.account_status_changed(db, resident_id, blocked=data.status == "blocked", changed=changed)
        # Cached facts are dropped again once committed: a verify racing this transaction may have re-cached them.
        after_commit(request, lambda: codes.facts.drop_resident(resident_id))
        return {"resident_id": str(resident_id), "status": data.status}

    @post(
        "/residents/{resident_id:uuid}/reveal",
        status_code=HTTP_200_OK,
        summary="Unmasked personal data of a resident (audited, needs a reason)",
        opt={
            **problems(404),
            **audited(
                "admin.resident_reveal", target_type="resident", target="resident_id", detail=("reason",)
            ),
        },
    )
    async def reveal(
        self,
        resident_id: uuid.UUID,
        data: RevealRequest,
        identity: IdentityServices,
        db: Connection,
        staff: Staff,
    ) -> dict[str, str | None]:
        revealed = await identity.residents.reveal(db, resident_id)
        return revealed
