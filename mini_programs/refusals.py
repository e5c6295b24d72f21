"""How both channels' refusals reach a resident: a channel that cannot be asked (down, slow, rate limiting us,
answering what we cannot trust) is a 503 with Retry-After, never a 500; a code the channel refuses is a 401
naming the request field it came in."""

from __future__ import annotations

from app_backend.kernel.errors import DomainError


def unavailable(what: str, *, rate_limited: bool = False) -> DomainError:
    if rate_limited:
        return DomainError(
            503,
            "dependency-rate-limited",
            f"{what} is refusing calls for a minute (its rate limit); nothing was changed, retry shortly",
            headers={"Retry-After": "60"},
        )
    return DomainError(
        503,
        "dependency-unavailable",
        f"{what} cannot be reached right now; nothing was changed, retry shortly",
        headers={"Retry-After": "5"},
    )


def code_refused(kind: str, field: str, message: str) -> DomainError:
    return DomainError(
        401, kind, f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]}
    )
