"""Every error leaves as RFC 9457 problem+json; validation problems name the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import structlog
from asyncpg.exceptions import CharacterNotInRepertoireError, UntranslatableCharacterError
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app_backend.kernel.db import PoolExhausted
from app_backend.kernel.errors import PROBLEM_BASE, DomainError
from app_backend.kernel.metrics import SHED
from app_backend.kernel.screening import malformed_path_parameter

PROBLEM_MEDIA_TYPE = "application/problem+json"
_log = structlog.get_logger("errors")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    instance: str = "",
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


# Litestar reports a missing parameter in its detail alone: "Missing required query parameter 'date' for path …".
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']*)'")


def _validation_errors(exc: ValidationException) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    if not extra and (missing := _MISSING_PARAMETER.match(exc.detail or "")):
        source, name = missing.groups()
        return [{"field": name, "message": f"the {source} parameter is required", "source": source}]
    for item in extra:
        if not isinstance(item, Mapping):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        # "data" is Litestar's name for the whole body, not a field the client sent.
        field = _field_from_message(message, "" if key in ("", "data") else key) or "body"
        if field == "body" and message == "'data'":  # no body at all
            message = "a JSON object is required"
        source = item.get("source", "body")
        # Litestar names a parameter's source with its ParamType enum ("query", "path", "header", "cookie").
        errors.append({"field": field, "message": message, "source": str(getattr(source, "value", source))})
    if not errors:
        errors.append({"field": "body", "message": exc.detail, "source": "body"})
    return errors


def _field_from_message(message: str, path: str = "") -> str:
    # msgspec says "... - at `$.phone`", "Object missing required field `phone`", or, inside a nested object,
    # "Object missing required field `gate_id` - at `$.taps[0]`" (the field is taps[0].gate_id); Litestar may
    # hand over that path as the error's key instead.
    if not path and "`$." in message:
        path = message.rsplit("`$.", 1)[1].split("`", 1)[0]
    for marker in ("required field `", "unknown field `"):
        if marker in message:
            name = message.split(marker, 1)[1].split("`", 1)[0]
            return f"{path}.{name}" if path else name
    return path


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    instance = request.url.path
    # A body that does not decode (malformed, truncated) comes as a 400 caused by a SerializationException.
    undecodable = status == 400 and (
        "JSON" in (exc.detail or "") or isinstance(exc.__cause__, SerializationException)
    )
    if isinstance(exc, ValidationException) or undecodable:
        errors = (
            _validation_errors(exc)
            if isinstance(exc, ValidationException)
            else [{"field": "body", "message": exc.detail, "source": "body"}]
        )
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(400, "validation", detail, extra={"errors": errors}, instance=instance)
    if status == 404 and isinstance(exc.__cause__, ValueError):
        # Routing found no route because a path parameter did not parse (an id that is not a UUID): name it.
        malformed = malformed_path_parameter(request.app, request.url.path)
        if malformed is not None:
            name, expected = malformed
            message = f"is not {expected}"
            return problem_response(
                400,
                "validation",
                f"{name}: {message}",
                extra={"errors": [{"field": name, "message": message, "source": "path"}]},
                instance=instance,
            )
    detail = exc.detail or _TITLES.get(status, "Error")
    if status == 413:
        return problem_response(
            413,
            "body-too-large",
            "body: the request body is larger than allowed",
            extra={"errors": [{"field": "body", "message": "too large"}]},
            instance=instance,
        )
    # Domain packages raise Litestar's exceptions with field errors in `extra`; name the fields here too.
    fields = [
        {"field": str(item["key"]), "message": str(item.get("message", ""))}
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, Mapping) and item.get("key")
    ]
    return problem_response(
        status,
        _TITLES.get(status, "error").lower().replace(" ", "-"),
        detail,
        extra={"errors": fields} if fields else None,
        headers=exc.headers,
        instance=instance,
    )


def handle_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    extra = dict(exc.extra)
    if exc.field is not None and "errors" not in extra:
        extra["errors"] = [{"field": exc.field, "message": exc.detail}]
    return problem_response(
        exc.status, exc.type, exc.detail, headers=exc.headers or None, extra=extra, instance=request.url.path
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    _log.error("unhandled error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        "an unexpected error occurred; it is logged",
        instance=request.url.path,
    )


def handle_overload(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    SHED.labels("database-pool").inc()
    return problem_response(
        503,
        "overloaded",
        "the service is busy; retry shortly",
        headers={"Retry-After": "1"},
        instance=request.url.path,
    )


def handle_redis_down(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Paths without a degraded mode (log-in, sessions, payments' idempotency) refuse cleanly, never 500."""
    SHED.labels("redis-unavailable").inc()
    _log.warning("redis unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        503,
        "dependency-unavailable",
        "a backing service is briefly unavailable; retry shortly",
        headers={"Retry-After": "2"},
        instance=request.url.path,
    )


def handle_unstorable_text(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """PostgreSQL stores no NUL character in text: a request carrying one is refused, not a 500. (Requests are
    screened for control characters before any handler runs, naming the field: app_backend/kernel/screening.py;
    this is the net for text that reaches the database some other way.)"""
    return problem_response(
        400,
        "validation",
        "body: a text value holds a character that cannot be stored (NUL)",
        extra={"errors": [{"field": "body", "message": "contains a NUL character"}]},
        instance=request.url.path,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    CharacterNotInRepertoireError: handle_unstorable_text,
    UntranslatableCharacterError: handle_unstorable_text,
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    PoolExhausted: handle_overload,
    RedisConnectionError: handle_redis_down,
    RedisTimeoutError: handle_redis_down,
    BusyLoadingError: handle_redis_down,
    Exception: handle_unexpected,
}
