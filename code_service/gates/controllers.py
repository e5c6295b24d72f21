"""HTTP for gates: the signed deny list and tap uploads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import problems
from code_service.auth import Scanner
from code_service.gates.schemas import DenyListDocument, RefusedTaps, TapBatch, TapReceipt

if TYPE_CHECKING:
    from code_service.container import CodeServices


TAPS_MAX_BODY = 4 * 1024 * 1024


def _require(scanner: Scanner, scope: str) -> None:
    if scope not in scanner.scopes:
        raise forbidden(f"this credential lacks the scope {scope}")


class GateController(Controller):
    path = "/api/v1/gates"
    tags = ["gates"]
    opt = problems(403)

    @get(
        "/deny-list",
        summary="Deny-list changes after `since` (a full snapshot for since=0), signed ES256 JWS",
    )
    async def deny_list(
        self,
        codes: CodeServices,
        scanner: Scanner,
        db: Connection,
        since: int = Parameter(query="since", default=0, ge=0, le=2**63 - 1),
    ) -> DenyListDocument:
        _require(scanner, "gates:sync")
        version, full, jws = await codes.deny.document(db, since)
        return DenyListDocument(version=version, full=full, jws=jws)

    @post(
        "/taps",
        status_code=HTTP_200_OK,
        summary="Upload a batch of taps, each proven by its scanned code or verification_id (idempotent per tap_id)",
        # Up to 5000 taps of a few hundred bytes each: more than the app's default body limit.
        request_max_body_size=TAPS_MAX_BODY,
    )
    async def taps(self, data: TapBatch, codes: CodeServices, scanner: Scanner, db: Connection) -> TapReceipt:
        _require(scanner, "gates:taps")
        # A tap is a transit verification made offline: only an operator that may verify transit may claim one.
        _require(scanner, "verify:transit")
        return await codes.taps.upload(db, scanner, data.taps)

    @get("/taps/refused", summary="This operator's refused taps after `since` (a seq), oldest first")
    async def refused_taps(
        self,
        codes: CodeServices,
        scanner: Scanner,
        db: Connection,
        since: int = Parameter(query="since", default=0, ge=0, le=2**63 - 1),
        limit: int = Parameter(query="limit", default=500, ge=1, le=5000),
    ) -> RefusedTaps:
        _require(scanner, "gates:taps")
        return await codes.taps.refused(db, scanner, since, limit)
