"""Who is calling: the resident behind a bearer token (the `resident` and `actor` dependencies), and operations
staff, whose roles are Litestar guards.

A guard authenticates the resident behind the bearer token, loads their staff roles, and refuses (403, audited on
a connection of its own so the refusal is kept) anyone without one of the roles the route asks for. The `staff`
dependency then hands the checked staff member to the handler and records the call in the audit trail when the
route declares it (`opt=audited(...)`): every staff call is audited here, in one place."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from app_backend.identity.schemas import ResidentPrincipal
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from app_backend.kernel.errors import forbidden
from app_backend.kernel.http import client_ip, request_id

_STATE_KEY = "staff"


async def provide_resident(request: Request[Any, Any, Any]) -> ResidentPrincipal:
    principal: ResidentPrincipal = await request.app.state.identity.auth.authenticate(
        request.headers.get("authorization")
    )
    return principal


def provide_resident_actor(request: Request[Any, Any, Any], resident: ResidentPrincipal) -> Actor:
    return Actor("resident", str(resident.resident_id), request_id(request), client_ip(request))


def provide_anonymous_actor(request: Request[Any, Any, Any]) -> Actor:
    return Actor("anonymous", "", request_id(request), client_ip(request))


RESIDENT = {"resident": Provide(provide_resident)}
# The actor a handler records: set per controller (or handler) as the resident or an anonymous caller.
RESIDENT_ACTOR = {"actor": Provide(provide_resident_actor, sync_to_thread=False)}
ANONYMOUS_ACTOR = {"actor": Provide(provide_anonymous_actor, sync_to_thread=False)}
OPS_ADMIN = "ops_admin"
OPS_REVIEWER = "ops_reviewer"
AUDITOR = "auditor"


class Staff(msgspec.Struct, frozen=True):
    actor: Actor
    roles: frozenset[str]


async def _staff_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Staff:
    state = connection.scope.setdefault("state", {})
    known: Staff | None = state.get(_STATE_KEY)
    if known is not None:
        return known
    identity = connection.app.state.identity
    principal = await identity.auth.authenticate(connection.headers.get("authorization"))
    actor = Actor("staff", str(principal.resident_id), request_id(connection), client_ip(connection))
    roles = await identity.staff_roles(principal.resident_id)
    staff = Staff(actor=actor, roles=roles)
    state[_STATE_KEY] = staff
    return staff


async def _refuse(
    connection: ASGIConnection[Any, Any, Any, Any], staff: Staff, detail: str, **extra: Any
) -> None:
    await connection.app.state.audit.record_detached(
        staff.actor,
        "admin.access",
        target_type="path",
        target_id=connection.url.path,
        outcome="denied",
        detail=extra or None,
    )
    raise forbidden(detail)


def staff_only(*roles: str) -> Guard:
    """Operations staff holding one of `roles` (any staff role when none is named)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        staff = await _staff_of(connection)
        if not staff.roles:
            await _refuse(connection, staff, "this endpoint is for operations staff")
        if roles and staff.roles.isdisjoint(roles):
            await _refuse(
                connection,
                staff,
                f"this action needs one of the roles: {', '.join(roles)}",
                needs=list(roles),
            )

    return guard


class AuditedCall(msgspec.Struct, frozen=True):
    """What the audit trail keeps of a staff call: the action, its target (a path parameter, a query parameter
    or a body field holding the target's id) and the request fields kept as its detail."""

    action: str
    target_type: str = ""
    target: str = ""
    detail: tuple[str, ...] = ()


_AUDIT_OPT = "audit"


def audited(
    action: str, *, target_type: str = "", target: str = "", detail: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A route `opt`: the `staff` dependency records this call in the audit trail, inside the request's
    transaction, so the record commits with the action and goes with it when the action is refused."""
    return {_AUDIT_OPT: AuditedCall(action, target_type, target, detail)}


async def _request_fields(request: Request[Any, Any, Any]) -> dict[str, object]:
    fields: dict[str, object] = dict(request.query_params)
    if await request.body():
        body = await request.json()
        if isinstance(body, dict):
            fields.update(body)
    fields.update(request.path_params)
    return fields


def _text(value: object) -> str:
    return "" if value is None else str(value)


async def provide_staff(request: Request[Any, Any, Any], db: Connection) -> Staff:
    """The staff member the guards let through; their call is audited here when the route asks (`audited`)."""
    staff: Staff = request.scope["state"][_STATE_KEY]
    call: AuditedCall | None = request.route_handler.opt.get(_AUDIT_OPT)
    if call is not None:
        fields = await _request_fields(request)
        await request.app.state.audit.record(
            db,
            staff.actor,
            call.action,
            target_type=call.target_type,
            target_id=_text(fields.get(call.target)) if call.target else "",
            detail={name: fields.get(name) for name in call.detail} or None,
        )
    return staff


STAFF = {"staff": Provide(provide_staff)}
