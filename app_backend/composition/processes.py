"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import contextlib
import signal
import sys
from dataclasses import dataclass, field

from app_backend.kernel.settings import Settings


def die_with_parent() -> None:
    """A `preexec_fn`: on Linux the child gets SIGTERM when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class Listener:
    """One Granian process group: the public API, or the internal listener for docs and metrics
    (app_backend/composition/surface.py)."""

    name: str
    host: str
    port: int
    workers: int
    env: dict[str, str] = field(default_factory=dict)


def listeners(settings: Settings, host: str, port: int, workers: int) -> list[Listener]:
    public = Listener("public", host, port, workers)
    if not settings.internal_port:
        return [public]
    # One worker is plenty for Prometheus and the odd operator; with PROMETHEUS_MULTIPROC_DIR it reports the
    # public workers' figures too.
    internal = Listener(
        "internal", settings.internal_host, settings.internal_port, 1, {"TZT_LISTENER": "internal"}
    )
    return [public, internal]


def granian_command(listener: Listener, settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        listener.host,
        "--port",
        str(listener.port),
        "--workers",
        str(listener.workers),
        # Granian's defaults (backlog 1024, backpressure = backlog / workers) leave a node silent, neither
        # serving nor shedding, past about 1,250 open keep-alive connections. Granian may hold many; the
        # app bounds the requests it works on (TZT_MAX_IN_FLIGHT) and sheds the rest with 503.
        "--backlog",
        str(settings.backlog),
        "--backpressure",
        str(settings.backpressure),
        "--no-access-log",
        "--log-level",
        "warning",
        "app_backend.composition.asgi:app",
    ]
