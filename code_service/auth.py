"""Who is calling code_service: the resident showing a code (`Holder`), the organisation scanning one
(`Scanner`), their dependencies, and how the hot handlers reach their caller and services from the app state
(docs/decisions/0001-hot-handlers-read-app-state.md)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.http import signed_path
from app_backend.kernel.redis_batch import CallerChecks

if TYPE_CHECKING:
    from litestar import Request
    from litestar.datastructures import State

    from code_service.container import CodeServices


class Holder(msgspec.Struct, frozen=True):
    """The resident calling (from their access token)."""

    resident_id: uuid.UUID
    # The session and rate checks (a CallerChecks) still to be settled when the holder came from the deferring
    # `display_holder` dependency (the code display folds them into its own Redis round trip); None otherwise.
    checks: CallerChecks | None = None


class Scanner(msgspec.Struct, frozen=True):
    """The organisation behind a signed machine request (a gate, a hospital, a department's feed)."""

    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    key_id: str
    scopes: frozenset[str]
    # The request's Redis checks (a CallerChecks), still to be settled when the scanner came from the deferring
    # `verifier` dependency; already settled (and to be ignored) otherwise.
    checks: CallerChecks | None = None


def codes_from(state: State) -> CodeServices:
    """The hot handlers (code display, verification) take their services from the app state rather than as a
    dependency: Litestar resolves sibling dependencies in an anyio task group, about a tenth of a verification's
    cost (docs/decisions/0001-hot-handlers-read-app-state.md). The composition puts every module's services there
    under the module's name."""
    codes: CodeServices = state.codes
    return codes


def display_holder_of(request: Request[Any, Any, Any]) -> Holder:
    """The resident showing their code, with the session and rate checks (`Holder.checks`) that the display's
    own Redis round trip settles; resolved here rather than as a dependency, like `codes_from`."""
    principal, checks = request.app.state.identity.auth.check_token(request.headers.get("authorization"))
    return Holder(resident_id=principal.resident_id, checks=checks)


async def signed_verifier_of(request: Request[Any, Any, Any]) -> Scanner:
    """The signed caller of a verification (signature, time window and credential checked), with the Redis
    checks (nonce, revoked mark, rate limit) that the verification's own round trip settles; resolved here
    rather than as a dependency, like `codes_from`."""
    state = request.app.state
    machine, checks = await state.organisations.machine_auth.check_signature(
        state.platform.side_pool, request.method, signed_path(request), request.headers, await request.body()
    )
    return Scanner(
        organisation_id=machine.organisation_id,
        organisation_name=machine.organisation_name,
        organisation_kind=machine.organisation_kind,
        key_id=machine.key_id,
        scopes=machine.scopes,
        checks=checks,
    )


async def provide_scanner(request: Request[Any, Any, Any]) -> Scanner:
    """code_service's view of a signed machine request, fully checked (the dependency of its cold handlers)."""
    scanner = await signed_verifier_of(request)
    assert scanner.checks is not None  # signed_verifier_of always hands them over
    await scanner.checks.run()
    return msgspec.structs.replace(scanner, checks=None)


def provide_holder(resident: ResidentPrincipal) -> Holder:
    return Holder(resident_id=resident.resident_id)
