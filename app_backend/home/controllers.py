"""The resident's home and their pins (bearer token: the app's, H5's and the mini-programs' alike)."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, put
from litestar.status_codes import HTTP_204_NO_CONTENT

from app_backend.home.schemas import Home
from app_backend.home.service import HomeService
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
