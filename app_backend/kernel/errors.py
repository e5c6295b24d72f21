"""The one error vocabulary of every domain: a service raises a `DomainError` (an HTTP status, a stable problem
type clients can switch on, a detail, and the field at fault when there is one); the HTTP layer turns it into
RFC 9457 problem+json (app_backend/kernel/problems.py). Nothing here imports Litestar, so services stay free of
HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROBLEM_BASE = "https://taizhoutong.cn/problems/"


class DomainError(Exception):
    """A refusal a client can act on.

    `type` is the problem type's slug (the problem+json `type` is PROBLEM_BASE + slug): stable, documented, and
    what clients switch on; `detail` is for people. A `field` names the request field at fault (it becomes the
    problem's `errors` list)."""

    def __init__(
        self,
        status: int,
        type: str,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.type!r}, {self.detail!r})"


def invalid_field(field: str, message: str, status: int = 400) -> DomainError:
    """A request field that breaks a rule: `field: message`, with the field named for the client."""
    return DomainError(
        status, "validation", f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]}
    )


def not_found(detail: str) -> DomainError:
    return DomainError(404, "not-found", detail)


def conflict(detail: str, type: str = "conflict") -> DomainError:
    return DomainError(409, type, detail)


def forbidden(detail: str, type: str = "forbidden") -> DomainError:
    return DomainError(403, type, detail)


def unauthorized(detail: str, type: str = "unauthorized") -> DomainError:
    return DomainError(401, type, detail, headers={"WWW-Authenticate": "Bearer"})
