"""The published platform keys, and the scene keys each registered verifier receives (docs/code-format.md 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, get

from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import problems
from code_service.auth import Scanner
from code_service.keys.schemas import SceneKeysDocument
from code_service.keys.service import JWKS_MAX_AGE, scenes_for_scopes

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


class SceneKeyController(Controller):
    path = "/api/v1/gates/scene-keys"
    tags = ["gates"]
    opt = problems(403)

    @get(
        "",
        summary="Scene keys this verifier may hold (by its scopes), current and still-valid epochs; keep secret",
    )
    async def scene_keys(self, codes: CodeServices, scanner: Scanner) -> Response[SceneKeysDocument]:
        scenes = scenes_for_scopes(scanner.scopes)
        if not scenes:
            raise forbidden(
                "this credential lacks every verifier scope (verify:transit, verify:health, verify:medical, "
                "verify:enterprise, gates:sync)"
            )
        return Response(await codes.scene_keys.document(scenes), headers={"Cache-Control": "no-store"})
