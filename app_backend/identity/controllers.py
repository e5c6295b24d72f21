"""HTTP for residents: OTP login, token refresh and logout, the profile, real-name and face verification."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app_backend.audit.schemas import Actor
from app_backend.composition.dependencies import ANONYMOUS_ACTOR, RESIDENT_ACTOR
from app_backend.identity.schemas import (
    DevLivenessOutcome,
    DevLivenessResult,
    FaceVerificationRequest,
    LivenessSession,
    LoginRequest,
    OtpRequest,
    OtpSent,
    Outbox,
    Profile,
    RealNameRequest,
    RefreshRequest,
    ResidentPrincipal,
    TokenPair,
)
from app_backend.identity.service import ReuseDetected
from app_backend.identity.validators import InvalidIdentifier, normalise_phone
from app_backend.kernel.errors import DomainError, invalid_field
from app_backend.kernel.http import client_ip

if TYPE_CHECKING:
    from app_backend.composition.wiring import Services


def _phone(raw: str) -> str:
    try:
        return normalise_phone(raw)
    except InvalidIdentifier as exc:
        raise invalid_field("phone", str(exc)) from None


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = ANONYMOUS_ACTOR

    @post("/otp", status_code=HTTP_202_ACCEPTED, summary="Send a one-time login code by SMS")
    async def send_otp(
        self, request: Request[Any, Any, Any], data: OtpRequest, services: Services
    ) -> OtpSent:
        await services.otp.send(_phone(data.phone), client_ip(request))
        return OtpSent(expires_in=services.settings.otp_ttl, resend_after=services.settings.otp_cooldown)

    @post("/login", status_code=HTTP_200_OK, summary="Log in with phone and one-time code")
    async def login(self, data: LoginRequest, services: Services, db: Any, actor: Actor) -> TokenPair:
        phone = _phone(data.phone)
        if not (len(data.otp) == 6 and data.otp.isascii() and data.otp.isdigit()):
            raise invalid_field("otp", "must be 6 digits")
        return await services.auth.login(db, phone, data.otp, actor)

    @post("/refresh", status_code=HTTP_200_OK, summary="Rotate the refresh token")
    async def refresh(self, data: RefreshRequest, services: Services, actor: Actor) -> TokenPair:
        # This handler is its own transaction boundary: a detected reuse must commit its revocation and still
        # answer 401.
        async with services.pool.acquire() as conn, conn.transaction():
            outcome = await services.auth.refresh(conn, data.refresh_token, actor)
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
        self, services: Services, db: Any, resident: ResidentPrincipal, actor: Actor
    ) -> dict[str, str]:
        await services.auth.revoke_session(db, resident.session_id, "logout")
        await services.audit.record(
            db, actor, "auth.logout", target_type="session", target_id=str(resident.session_id)
        )
        return {"status": "logged-out"}


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["residents"]
    dependencies = RESIDENT_ACTOR

    @get("", summary="My profile, masked")
    async def me(self, services: Services, db: Any, resident: ResidentPrincipal) -> Profile:
        enterprises = await services.enterprises.linked(db, resident.resident_id)
        return await services.residents.profile(db, resident.resident_id, enterprises)

    @post(
        "/real-name", status_code=HTTP_200_OK, summary="Verify name and ID number against the registry (L2)"
    )
    async def real_name(
        self, data: RealNameRequest, services: Services, db: Any, resident: ResidentPrincipal, actor: Actor
    ) -> dict[str, str]:
        level = await services.residents.verify_real_name(db, resident, data.name, data.id_number, actor)
        return {"level": level}

    @post(
        "/face-verification/sessions", status_code=HTTP_200_OK, summary="Start a liveness check (towards L3)"
    )
    async def start_face(self, services: Services, db: Any, resident: ResidentPrincipal) -> LivenessSession:
        session_id, ttl = await services.residents.start_face_verification(db, resident)
        return LivenessSession(session_id=session_id, provider=services.liveness.name, expires_in=ttl)

    @post("/face-verification", status_code=HTTP_200_OK, summary="Confirm the liveness result (L3)")
    async def confirm_face(
        self,
        data: FaceVerificationRequest,
        services: Services,
        db: Any,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> dict[str, str]:
        level = await services.residents.confirm_face_verification(
            db, resident, data.session_id, data.result_token, actor
        )
        return {"level": level}


class DevController(Controller):
    """Only mounted in dev mode: what a phone and a liveness vendor would hand the resident."""

    path = "/api/v1/dev"
    tags = ["dev"]

    @get("/outbox", summary="SMS messages sent to a phone (dev only)")
    async def outbox(
        self, services: Services, phone: str = Parameter(query="phone", max_length=32)
    ) -> Outbox:
        return Outbox(messages=await services.dev_outbox.read(_phone(phone)))

    @post("/liveness/{session_id:str}", status_code=HTTP_200_OK, summary="Finish a liveness check (dev only)")
    async def liveness(
        self, session_id: str, data: DevLivenessOutcome, services: Services
    ) -> DevLivenessResult:
        token = await services.dev_liveness.complete(session_id, data.outcome)
        if token is None:
            raise DomainError(404, "not-found", "session_id: no open liveness session")
        return DevLivenessResult(result_token=token)
