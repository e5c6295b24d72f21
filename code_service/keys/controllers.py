"""The published platform keys, for verifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get

from code_service.keys.service import JWKS_MAX_AGE

if TYPE_CHECKING:
    from code_service.container import CodeServices


class JwksController(Controller):
    tags = ["codes"]

    @get(
        "/.well-known/jwks.json",
        summary="Platform keys: the signing key, a staged successor, and keys whose codes may still be alive "
        "(refresh at least daily)",
    )
    async def jwks(self, codes: CodeServices) -> Response[dict[str, Any]]:
        # Cacheable for minutes: a new key is published a day and an hour before it signs (KeySchedule).
        return Response(await codes.keys.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})
