"""What a department's system and an operations reviewer do in the tile tests, over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import bearer, machine_credential, signed, staff

MANAGE = "/api/v1/tiles/manage"
ADMIN = "/api/v1/admin/tiles"
NOTICES = "/api/v1/tiles/notices"


def unique(prefix: str = "") -> str:
    """A name fragment no other test's tile has (the catalogue is shared by the session)."""
    return prefix + uuid.uuid4().hex[:6]


def content(**fields: Any) -> dict[str, Any]:
    """A valid tile version, changed by `fields`."""
    body: dict[str, Any] = {
        "name": "公积金查询",
        "icon": "https://static.example.cn/icons/gjj.png",
        "category": "housing_fund",
        "description": "查询住房公积金缴存和提取记录",
        "keywords": ["住房公积金"],
        "entry": {
            "h5_url": "https://gjj.example.cn/h5",
            "wechat": {"app_id": "wx0123456789abcdef", "path": "pages/index/index"},
        },
        "regions": ["321202"],
        "min_level": "L1",
    }
    body.update(fields)
    return body


async def department(
    client: Any, services: Any, scopes: tuple[str, ...] = ("tiles:manage",)
) -> dict[str, Any]:
    """A new department with a credential holding `scopes`."""
    return await machine_credential(client, services, list(scopes), kind="department")


async def reviewer(client: Any, services: Any) -> dict[str, Any]:
    return await staff(client, services, role="ops_reviewer")


async def create(client: Any, dept: dict[str, Any], **fields: Any) -> dict[str, Any]:
    answer = await signed(client, dept, "POST", MANAGE, content(**fields))
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def manage(client: Any, dept: dict[str, Any], method: str, tail: str, body: Any = None) -> Any:
    """A signed request of the department on its tiles: `tail` after /api/v1/tiles/manage."""
    return await signed(client, dept, method, MANAGE + tail, body)


async def review(client: Any, who: dict[str, Any], tail: str, body: Any = None) -> Any:
    """A reviewer's call: `tail` after /api/v1/admin/tiles."""
    return await client.post(ADMIN + tail, json=body if body is not None else {}, headers=bearer(who))


def ok(answer: Any) -> dict[str, Any]:
    assert answer.status_code in (200, 201), answer.text
    return answer.json()  # type: ignore[no-any-return]


async def live(
    client: Any, dept: dict[str, Any], reviewer_tokens: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """A tile of `dept` with version 1 live: created, submitted, approved, published."""
    tile = await create(client, dept, **fields)
    tid = tile["id"]
    ok(await manage(client, dept, "POST", f"/{tid}/versions/1/submit"))
    ok(await review(client, reviewer_tokens, f"/{tid}/versions/1/approve", {"note": "符合要求"}))
    return ok(await manage(client, dept, "POST", f"/{tid}/versions/1/publish"))


def statuses(tile: dict[str, Any]) -> dict[int, str]:
    return {v["number"]: v["status"] for v in tile["versions"]}


class DepartmentSite:
    """A department's service on loopback (a real HTTP server in the tests' event loop) whose answers the test
    switches: every path answers `status` (200 while up), and each request is counted by path."""

    def __init__(self) -> None:
        self.status = 200
        self.hits: dict[str, int] = {}
        self.base = ""
        self._runner: Any = None

    def url(self, path: str) -> str:
        return self.base + path

    def up(self) -> None:
        self.status = 200

    def down(self, status: int = 503) -> None:
        self.status = status

    async def start(self) -> DepartmentSite:
        from aiohttp import web

        async def answer(request: web.Request) -> web.Response:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            return web.Response(status=self.status, text="ok" if self.status < 400 else "down")

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
