"""HTTP for verifiers (signed) and for holders (their scan history)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK

from app_backend.kernel.http import MACHINE_SECURITY, problems
from code_service.auth import Holder, Scanner, codes_from, signed_verifier_of
from code_service.verification.schemas import (
    ScanHistory,
    VerifyAnswer,
    VerifyRequest,
    VoucherRedeem,
    VoucherRedeemed,
)

if TYPE_CHECKING:
    from code_service.container import CodeServices


class VerifyController(Controller):
    path = "/api/v1/verify"
    tags = ["verification"]
    opt = problems(403)

    @post(
        "",
        opt=problems(400, 403),
        status_code=HTTP_200_OK,
        summary="Verify a scanned code for one scene (signed, verify:<scene>)",
        security=MACHINE_SECURITY,  # the caller comes from the state (docs/decisions/0001)
    )
    async def verify(
        self, data: VerifyRequest, request: Request[Any, Any, Any], state: State
    ) -> VerifyAnswer:
        # The signed caller, whose nonce, revoked mark and rate limit the verification's own Redis round trip
        # settles, and the services come from the state, not as dependencies (signed_verifier_of, codes_from).
        verifier = await signed_verifier_of(request)
        return await codes_from(state).verification.verify(
            verifier, data.code, data.scene, occasion_id=data.occasion_id, entrance=data.entrance
        )

    @post(
        "/vouchers/redeem",
        status_code=HTTP_200_OK,
        summary="Settle a medical-insurance voucher once (the hospital that scanned it)",
        opt=problems(404, 409),
    )
    async def redeem(self, data: VoucherRedeem, codes: CodeServices, scanner: Scanner) -> VoucherRedeemed:
        return await codes.verification.redeem_voucher(scanner, data.voucher)


class ScanHistoryController(Controller):
    path = "/api/v1/me/scans"
    tags = ["verification"]

    @get("", summary="Who scanned my code, when, and for what")
    async def history(self, codes: CodeServices, holder: Holder) -> ScanHistory:
        return ScanHistory(scans=await codes.recorder.history(holder.resident_id))
