"""HTTP for departments: signed status feeds."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from litestar import Controller, put
from litestar.status_codes import HTTP_200_OK

from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import problems
from code_service.auth import Scanner
from code_service.feeds.schemas import FeedReceipt, HealthBatch, HealthStatus, InsuranceBatch, InsuranceStatus

if TYPE_CHECKING:
    from code_service.container import CodeServices


# Up to 1000 items (an insurance item with a scheme name runs to a few hundred bytes): more than the app's
# default body limit.
BULK_MAX_BODY = 512 * 1024


async def _apply(
    codes: CodeServices,
    scanner: Scanner,
    scope: str,
    write: Callable[[Connection], Awaitable[tuple[FeedReceipt, list[uuid.UUID]]]],
) -> FeedReceipt:
    if scope not in scanner.scopes:
        raise forbidden(f"this credential lacks the scope {scope}")
    # The handler owns the transaction: cached facts may only be dropped once the new status is committed,
    # or a concurrent verify could cache the old one again.
    async with codes.pool.acquire() as conn:
        async with conn.transaction():
            receipt, touched = await write(conn)
        await codes.feeds.after_commit(conn, touched)
    return receipt


class FeedController(Controller):
    path = "/api/v1/feeds"
    tags = ["feeds"]
    opt = problems(403)

    @put("/health", status_code=HTTP_200_OK, summary="Set one person's health colour (signed, feeds:health)")
    async def health(self, data: HealthStatus, codes: CodeServices, scanner: Scanner) -> FeedReceipt:
        return await _apply(
            codes,
            scanner,
            "feeds:health",
            lambda conn: codes.feeds.put_health(conn, scanner, [data], many=False),
        )

    @put(
        "/health/bulk",
        status_code=HTTP_200_OK,
        summary="Set up to 1000 health colours in one transaction",
        request_max_body_size=BULK_MAX_BODY,
    )
    async def health_bulk(self, data: HealthBatch, codes: CodeServices, scanner: Scanner) -> FeedReceipt:
        return await _apply(
            codes,
            scanner,
            "feeds:health",
            lambda conn: codes.feeds.put_health(conn, scanner, data.items, many=True),
        )

    @put(
        "/insurance", status_code=HTTP_200_OK, summary="Set one person's insurance (signed, feeds:insurance)"
    )
    async def insurance(self, data: InsuranceStatus, codes: CodeServices, scanner: Scanner) -> FeedReceipt:
        return await _apply(
            codes,
            scanner,
            "feeds:insurance",
            lambda conn: codes.feeds.put_insurance(conn, scanner, [data], many=False),
        )

    @put(
        "/insurance/bulk",
        status_code=HTTP_200_OK,
        summary="Set up to 1000 insurance records in one transaction",
        request_max_body_size=BULK_MAX_BODY,
    )
    async def insurance_bulk(
        self, data: InsuranceBatch, codes: CodeServices, scanner: Scanner
    ) -> FeedReceipt:
        return await _apply(
            codes,
            scanner,
            "feeds:insurance",
            lambda conn: codes.feeds.put_insurance(conn, scanner, data.items, many=True),
        )
