"""The published platform keys, for verifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get

if TYPE_CHECKING:
    from code_service.container import CodeServices


class JwksController(Controller):
    tags = ["codes"]

    @get(
        "/.well-known/jwks.json",
        summary="Platform keys whose codes may still be alive (refresh at least daily)",
    )
    async def jwks(self, codes: CodeServices) -> Response[dict[str, Any]]:
        return Response(await codes.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})
