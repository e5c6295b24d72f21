"""The backend a load test runs against: the whole of it started here (embedded), or a given target.

Embedded, it is `tzt serve` as an operator runs it, with the payment sandboxes and the SAQ job worker (fares come
from the worker's jobs), `TZT_WORKERS` Granian workers, a temporary data folder and a free port. PostgreSQL and
Redis are embedded unless DATABASE_URL / REDIS_URL are set, as for `make run`. Everything it starts is stopped
afterwards: `tzt serve` stops its children and databases on SIGTERM, and whatever is still alive in its process
group after that is killed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.processes import (
    Server,
    cpu_seconds,
    descendants,
    free_port,
    proc_table,
    stop_server,
    wait_ready,
)

READY_TIMEOUT_S = 180.0


@dataclass
class Backend:
    """Where the load goes, and what the runner may know about it."""

    base: str
    credentials: dict[str, Any]
    channels: dict[str, Any] = field(default_factory=dict)
    mini_programs: dict[str, Any] = field(default_factory=dict)  # mini-programs.json: the apps and sandboxes
    server: Server | None = None
    database_url: str = ""
    redis_url: str = ""

    @property
    def embedded(self) -> bool:
        return self.server is not None

    def redis_pids(self) -> list[int]:
        """The embedded redis-server, found as `make bench` finds it (a descendant of `tzt serve`)."""
        if self.server is None:
            return []
        self.server.find_processes()
        return list(self.server.groups.get("redis", []))

    def cpu_seconds(self) -> float:
        """CPU time of everything `tzt serve` runs here (Granian, the job worker, the payment sandboxes, Redis)
        and of the embedded PostgreSQL; 0 for a target."""
        if self.server is None:
            return 0.0
        table = proc_table()
        pids = descendants(table, self.server.proc.pid)
        postgres = self.server.groups.get("postgres", [])[:1]
        return cpu_seconds(pids + postgres + (descendants(table, postgres[0]) if postgres else []))

    def sandbox_urls(self) -> dict[str, str]:
        """The payment sandboxes' base URLs (their test controls live under /_sandbox/)."""
        urls = {}
        if "wechat" in self.channels:
            urls["wechat"] = self.channels["wechat"]["api_base_url"].rstrip("/")
        if "alipay" in self.channels:
            urls["alipay"] = self.channels["alipay"]["gateway_url"].removesuffix("/gateway.do")
        return urls


def _environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_server(proc)
    # Anything of its session still alive (a child that ignored the signal) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def embedded_backend(workers: int = 2, log_dir: Path | None = None) -> Iterator[Backend]:
    external = bool(os.environ.get("DATABASE_URL"))
    given = os.environ.get("TZT_DATA_DIR")
    # With an external database its data key must match: keep the operator's data folder if one is given.
    data_dir = Path(given) if external and given else Path(tempfile.mkdtemp(prefix="tzt-loadtest-"))
    owned = not (external and given)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "dev",
        "TZT_PORT": str(port),
        "TZT_PUBLIC_BASE_URL": base,  # where the sandboxes send their notifications
        "TZT_WORKERS": str(workers),
        "TZT_OTP_DAILY_PER_IP": "1000000",
        "TZT_LOG_LEVEL": "WARNING",
    }
    env.pop("TZT_PAYMENT_CONFIG", None)  # the sandboxes `tzt serve` starts, never a real channel
    log = (log_dir or data_dir) / "backend.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "app_backend.composition.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(base, proc, log, READY_TIMEOUT_S, "the backend")
        server = Server(base, "127.0.0.1", port, data_dir, proc, log)
        server.find_processes()
        child = _environment_of(server.groups["server"][0]) if server.groups.get("server") else {}
        # The mini-program sandboxes `tzt serve` started, or the config it was given.
        mini = Path(child.get("TZT_MINI_PROGRAM_CONFIG") or data_dir / "mini-programs.json")
        yield Backend(
            base=base,
            credentials=json.loads((data_dir / "demo-credentials.json").read_text()),
            channels=json.loads((data_dir / "payment-channels.json").read_text()),
            mini_programs=json.loads(mini.read_text()) if mini.exists() else {},
            server=server,
            database_url=child.get("DATABASE_URL", os.environ.get("DATABASE_URL", "")),
            redis_url=child.get("REDIS_URL", os.environ.get("REDIS_URL", "")),
        )
    finally:
        _stop(proc)
        if owned:
            shutil.rmtree(data_dir, ignore_errors=True)


def given_backend(
    target: str, credentials: Path, channels: Path | None, mini_programs: Path | None = None
) -> Backend:
    """A backend someone else runs: its machine credentials (and channel config, for payments; mini-program
    config, for logins) come as files."""
    if httpx.get(f"{target.rstrip('/')}/readyz", timeout=10).status_code != 200:
        raise RuntimeError(f"{target} is not ready (GET /readyz)")
    return Backend(
        base=target.rstrip("/"),
        credentials=json.loads(credentials.read_text()),
        channels=json.loads(channels.read_text()) if channels else {},
        mini_programs=json.loads(mini_programs.read_text()) if mini_programs else {},
        database_url=os.environ.get("DATABASE_URL", ""),
        redis_url=os.environ.get("REDIS_URL", ""),
    )
