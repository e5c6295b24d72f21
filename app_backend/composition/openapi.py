"""The OpenAPI document declares every answer an operation may give, problems included, so a client (and
schemathesis) finds no undocumented status.

A handler's security requirement follows from the caller it takes: a handler that depends (directly or through
another dependency) on `resident` or is guarded by staff roles needs a bearer token; one that depends on
`machine`, `scanner` or `payee_client` a signed request. The two hot handlers that resolve their caller from the
app state (docs/decisions/0001) declare theirs with `security=`.

A handler's problems are the union of what its layers declare with `problems(...)` (app_backend/kernel/http.py)
and what the platform's own layers answer for it:

- 400: every operation: a body, query, path or header parameter that does not validate, and the input screen
  (app_backend/kernel/screening.py) refuses control characters in any header, query or path parameter;
- 401 and 429: any operation with a security requirement (a bad or missing token or signature; a caller's rate);
- 403: any guarded operation (staff roles);
- 413: any operation with a body (the body limit);
- 503: every operation (load shedding, an exhausted database pool, an unreachable Redis).
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from app_backend.kernel.http import MACHINE_SECURITY, PROBLEMS_OPT, RESIDENT_SECURITY
from app_backend.kernel.problems import PROBLEM_MEDIA_TYPE

_DESCRIPTIONS = {
    400: "The request does not validate: `errors` names each field at fault",
    401: "No valid credential: a missing, expired or revoked token, or a bad signature",
    403: "The caller may not do this (a role, a scope, a level, or a blocked account)",
    404: "Not found (or not yours)",
    409: "The state does not allow it (already done, a conflicting record)",
    410: "Gone",
    413: "The body is larger than allowed",
    422: "Understood but refused by a rule (a registry check, a reused idempotency key)",
    429: "Too many requests from this caller: retry after the Retry-After header",
    503: "Busy or a backing service is briefly unavailable: retry after the Retry-After header",
}


class FieldProblem(msgspec.Struct):
    field: str
    message: str
    source: str | None = None


class Problem(msgspec.Struct):
    """An RFC 9457 problem: `type` is stable and what clients switch on; `errors` names the fields at fault."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


_BEARER_CALLERS = frozenset({"resident", "staff"})
_SIGNED_CALLERS = frozenset({"machine", "scanner", "payee_client"})


def _names_used(handler: HTTPRouteHandler) -> set[str]:
    """Every parameter the handler takes, and those of the dependencies it takes, transitively."""
    dependencies = handler.resolve_dependencies()
    used: set[str] = set()
    todo = list(handler.parsed_fn_signature.parameters)
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        if name in dependencies:
            todo += list(inspect.signature(dependencies[name].dependency).parameters)
    return used


def _infer_security(handler: HTTPRouteHandler) -> None:
    if handler.security is not None:
        return
    used = _names_used(handler)
    if used & _SIGNED_CALLERS:
        handler.security = MACHINE_SECURITY
    elif used & _BEARER_CALLERS or handler.resolve_guards():
        handler.security = RESIDENT_SECURITY


def _declared(handler: HTTPRouteHandler) -> set[int]:
    statuses: set[int] = set()
    for layer in handler.ownership_layers:
        statuses |= set((layer.opt or {}).get(PROBLEMS_OPT, ()))
    return statuses


def _implied(handler: HTTPRouteHandler) -> set[int]:
    # Documented here even where Litestar documents a 400 of its own: that one says application/json, and every
    # problem is application/problem+json.
    statuses = {400, 503}
    if handler.resolve_security():
        statuses |= {401, 429}
    if handler.resolve_guards():
        statuses |= {401, 403}
    if "data" in handler.parsed_fn_signature.parameters:
        statuses |= {413}
    return statuses


def document_problems(app: Litestar) -> None:
    """Adds a problem+json response for each status a handler may answer that it does not document already."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not handler.include_in_schema:
                continue
            _infer_security(handler)
            responses: dict[int, Any] = dict(handler.responses or {})
            for status in sorted(_declared(handler) | _implied(handler)):
                responses.setdefault(
                    status,
                    ResponseSpec(
                        data_container=Problem,
                        description=_DESCRIPTIONS.get(status, "A problem"),
                        media_type=PROBLEM_MEDIA_TYPE,
                    ),
                )
            handler.responses = responses
