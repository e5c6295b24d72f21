"""Load shedding: past a bound on requests in flight, a worker answers 503 at once instead of queueing.

A queue that grows without bound turns a surge into timeouts for everybody (the clients give up while the server
still works on their requests, and then on their retries). A bound on the requests one worker holds caps the
latency of the ones it accepts at about bound / throughput, and every other caller gets an immediate answer with
`Retry-After`, which the apps and gates honour. Health, readiness and metrics are never shed: operations must
see the surge."""

from __future__ import annotations

import msgspec
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from app_backend.kernel.errors import PROBLEM_BASE
from app_backend.kernel.metrics import SHED
from app_backend.kernel.problems import PROBLEM_MEDIA_TYPE

_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
_RETRY_AFTER = b"1"


def _shed_body(path: str) -> bytes:
    return msgspec.json.encode(
        {
            "type": PROBLEM_BASE + "overloaded",
            "title": "Service unavailable",
            "status": 503,
            "detail": "the service is at capacity; retry shortly",
            "instance": path,
        }
    )


class LoadShedder:
    """Counts the HTTP requests this worker is handling; beyond `limit` it answers 503 without running them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def shed_or_pass(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] in _EXEMPT:
                await app(scope, receive, send)
                return
            if self.in_flight >= self.limit:
                SHED.labels("in-flight").inc()
                body = _shed_body(scope["path"])
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", _RETRY_AFTER),
                    ],
                }
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            self.in_flight += 1
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1

        return shed_or_pass
