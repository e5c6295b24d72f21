"""The resident's home and their pins (bearer token: the app's, H5's and the mini-programs' alike)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.home.schemas import Home, Notice, NoticeBody, Notices
from app_backend.home.service import HomeService
from app_backend.identity.auth import AUDITOR, OPS_ADMIN, STAFF, Staff, audited, staff_only
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.db import Connection
from app_backend.kernel.http import AnyRequest, after_commit, problems


class HomeController(Controller):
    path = "/api/v1/home"
    tags = ["home"]

    @get(
        "",
        summary="The resident's home: tiles for their region and level, pinned, recently used, unread messages",
        description=(
            "At most one PostgreSQL statement when cold, none when warm (docs/decisions/0026-one-home.md). "
            "Counts one impression of each tile shown."
        ),
    )
    async def home(self, home: HomeService, resident: ResidentPrincipal) -> Home:
        return await home.home(resident.resident_id)


class PinsController(Controller):
    path = "/api/v1/me/home/pins"
    tags = ["home"]

    @put(
        "/{tile_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Pin a live tile at the end of my pins (again: it stays where it was)",
        description=f"404 unless the tile is live; 409 `home-pins-full` beyond the most pins ({12}).",
        opt=problems(404, 409),
    )
    async def pin(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        home: HomeService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await home.pin(db, resident.resident_id, tile_id)
        after_commit(request, lambda: home.forget(resident.resident_id))

    @delete("/{tile_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Unpin a tile", opt=problems(404))
    async def unpin(
        self,
        request: AnyRequest,
        tile_id: uuid.UUID,
        home: HomeService,
        db: Connection,
        resident: ResidentPrincipal,
    ) -> None:
        await home.unpin(db, resident.resident_id, tile_id)
        after_commit(request, lambda: home.forget(resident.resident_id))


class NoticeAdminController(Controller):
    """Notices and banners on the home (events, outages), by operations: written and withdrawn by ops_admin, read
    by ops_admin and auditors; every call audited in the request's transaction."""

    path = "/api/v1/admin/home/notices"
    tags = ["admin"]
    dependencies = STAFF

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Put a notice or banner on the homes of regions for a time window",
        guards=[staff_only(OPS_ADMIN)],
        opt={**problems(400), **audited("admin.home_notice_create", detail=("kind", "regions", "title"))},
    )
    async def create(
        self, request: AnyRequest, data: NoticeBody, home: HomeService, db: Connection, staff: Staff
    ) -> Notice:
        notice = await home.create_notice(db, data, f"{staff.actor.type}:{staff.actor.id}")
        after_commit(request, home.notices_changed)
        return notice

    @delete(
        "/{notice_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Withdraw a notice",
        guards=[staff_only(OPS_ADMIN)],
        opt={
            **problems(404),
            **audited("admin.home_notice_withdraw", target_type="home_notice", target="notice_id"),
        },
    )
    async def withdraw(
        self, request: AnyRequest, notice_id: uuid.UUID, home: HomeService, db: Connection, staff: Staff
    ) -> None:
        await home.withdraw_notice(db, notice_id)
        after_commit(request, home.notices_changed)

    @get(
        "",
        summary="Notices, latest first (current: neither withdrawn nor ended)",
        guards=[staff_only(OPS_ADMIN, AUDITOR)],
        opt=audited("admin.home_notice_list"),
    )
    async def listed(
        self,
        home: HomeService,
        db: Connection,
        staff: Staff,
        current: bool = False,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 100,
    ) -> Notices:
        return Notices(notices=await home.notices(db, current_only=current, limit=limit))
