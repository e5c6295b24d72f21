"""HTTP for holders: server codes (JSON, SVG, PNG), enterprise codes, device credentials."""

from __future__ import annotations

import io
import uuid
from typing import TYPE_CHECKING, Any

import segno
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.kernel.db import Connection
from app_backend.kernel.http import RESIDENT_SECURITY, problems
from code_service.auth import Holder, codes_from, display_holder_of
from code_service.codes.schemas import (
    DeviceCredential,
    DeviceCredentialRequest,
    DeviceCredentials,
    IssuedCode,
)

if TYPE_CHECKING:
    from code_service.container import CodeServices

_NO_STORE = {"Cache-Control": "no-store"}


def render(text: str, kind: str) -> bytes:
    qr = segno.make(text, error="m", micro=False)
    out = io.BytesIO()
    qr.save(out, kind=kind, scale=6, border=2)
    return out.getvalue()


class CodeController(Controller):
    path = "/api/v1/codes"
    tags = ["codes"]
    # Declared, not inferred: the display handlers take their caller from the state (docs/decisions/0001).
    security = RESIDENT_SECURITY
    opt = problems(403)

    @post("/personal", status_code=HTTP_200_OK, summary="A server-signed personal code (valid at most 60 s)")
    async def personal(self, request: Request[Any, Any, Any], state: State) -> Response[IssuedCode]:
        # The caller and the services come from the state, not as dependencies (display_holder_of, codes_from).
        holder = display_holder_of(request)
        return Response(await codes_from(state).issuing.personal_code(holder), headers=_NO_STORE)

    @get("/personal.svg", summary="A fresh personal code as an SVG QR image", media_type="image/svg+xml")
    async def personal_svg(self, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
        issued = await codes_from(state).issuing.personal_code(display_holder_of(request))
        return Response(
            render(issued.code, "svg"),
            media_type="image/svg+xml",
            headers={**_NO_STORE, "X-Code-Expires-At": str(issued.expires_at)},
        )

    @get("/personal.png", summary="A fresh personal code as a PNG QR image", media_type="image/png")
    async def personal_png(self, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
        issued = await codes_from(state).issuing.personal_code(display_holder_of(request))
        return Response(
            render(issued.code, "png"),
            media_type="image/png",
            headers={**_NO_STORE, "X-Code-Expires-At": str(issued.expires_at)},
        )

    @post(
        "/device-credentials",
        status_code=HTTP_201_CREATED,
        summary="Register this phone's P-256 key; returns a credential (at most 24 h) to sign codes offline",
    )
    async def register_device(
        self, data: DeviceCredentialRequest, codes: CodeServices, holder: Holder, db: Connection
    ) -> DeviceCredential:
        return await codes.issuing.device_credential(db, holder, data.public_key)

    @get("/device-credentials", summary="My device credentials of the last day")
    async def list_devices(self, codes: CodeServices, holder: Holder, db: Connection) -> DeviceCredentials:
        return DeviceCredentials(credentials=await codes.issuing.credentials(db, holder))

    @delete(
        "/device-credentials/{credential_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke a lost phone's credential (online at once, gates at their next deny-list sync)",
        opt=problems(404),
    )
    async def revoke_device(
        self, credential_id: str, codes: CodeServices, holder: Holder, db: Connection
    ) -> None:
        await codes.issuing.revoke_device(db, holder, credential_id)


class EnterpriseCodeController(Controller):
    path = "/api/v1/enterprises"
    tags = ["codes"]
    opt = problems(403, 404)

    @post(
        "/{enterprise_id:uuid}/code",
        status_code=HTTP_200_OK,
        summary="The enterprise's code, for its members (valid at most 60 s)",
    )
    async def enterprise_code(
        self, enterprise_id: uuid.UUID, codes: CodeServices, holder: Holder, db: Connection
    ) -> Response[IssuedCode]:
        return Response(await codes.issuing.enterprise_code(db, holder, enterprise_id), headers=_NO_STORE)
