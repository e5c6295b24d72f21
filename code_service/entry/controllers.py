"""HTTP for venue gates (signed, verify:event): the attendee list of an occasion, and uploads of the admissions they
made offline."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from litestar import Controller, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from app_backend.kernel.db import Connection
from app_backend.kernel.http import problems
from code_service.auth import Scanner
from code_service.entry.schemas import AdmissionBatch, AdmissionReceipt, AttendeeListDocument

if TYPE_CHECKING:
    from code_service.container import CodeServices

ADMISSIONS_MAX_BODY = 4 * 1024 * 1024


class EntryGateController(Controller):
    path = "/api/v1/gates"
    tags = ["gates"]
    opt = problems(403)

    @get(
        "/attendees",
        summary="The attendee list of an occasion for offline admission (signed ES256 JWS; verify:event)",
        opt=problems(403, 404),
    )
    async def attendees(
        self,
        codes: CodeServices,
        scanner: Scanner,
        db: Connection,
        occasion: uuid.UUID = Parameter(query="occasion"),
    ) -> AttendeeListDocument:
        return await codes.attendee_lists.document(db, scanner, occasion)

    @post(
        "/admissions",
        status_code=HTTP_200_OK,
        summary="Upload admissions made offline, each proven by its scanned code (idempotent per admission_id)",
        request_max_body_size=ADMISSIONS_MAX_BODY,
    )
    async def admissions(
        self, data: AdmissionBatch, codes: CodeServices, scanner: Scanner, db: Connection
    ) -> AdmissionReceipt:
        return await codes.admission_uploads.upload(db, scanner, data.admissions)
