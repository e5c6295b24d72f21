"""Running Locust for the runner: one headless process, or a master and N workers on this machine; meanwhile the
Redis outage drill and the access-token refresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.checks import Outage
from loadtests.fixtures import Resident, refresh_tokens, write_tokens
from loadtests.processes import cpu_seconds, free_port, machine_busy_seconds

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
ROOT = LOCUSTFILE.resolve().parent.parent
TOKEN_LIFE_S = 900.0


@dataclass(frozen=True)
class Swarm:
    """What Locust is asked to run."""

    spec: Path  # the run spec the locustfile reads (TZT_LOADTEST_RUN)
    classes: list[str]
    base: str
    run_dir: Path
    duration_s: int
    workers: int = 0


def commands(swarm: Swarm) -> tuple[list[str], list[list[str]]]:
    """The command line of the master (or of the only process) and those of the workers."""
    common = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--host",
        swarm.base,
        "--loglevel",
        "WARNING",
    ]
    port = free_port()
    master = []
    if swarm.workers:
        master = ["--master", "--expect-workers", str(swarm.workers), "--expect-workers-max-wait", "120"]
        master += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
    reports = [
        "--csv",
        str(swarm.run_dir / "locust"),
        "--csv-full-history",
        "--html",
        str(swarm.run_dir / "report.html"),
    ]
    # The objectives decide pass or fail, not Locust's "any failure" exit code.
    quiet = ["--exit-code-on-error", "0", "--stop-timeout", "15", "--only-summary"]
    main = [*common, *master, "--headless", *reports, *quiet, *swarm.classes]
    worker = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *swarm.classes]
    return main, [worker] * swarm.workers


class TokenRefresher(threading.Thread):
    """Refreshes every resident's access token every `every_s` seconds into the tokens file the Locust processes
    re-read (the runner alone refreshes: refresh tokens are single use)."""

    def __init__(self, base: str, residents: list[Resident], path: Path, every_s: float) -> None:
        super().__init__(daemon=True)
        self.base, self.residents, self.path, self.every_s = base, residents, path, every_s
        self.done = threading.Event()
        self.failed = 0
        self.rounds = 0

    async def _refresh(self) -> int:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            return await refresh_tokens(client, self.residents)

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.failed += asyncio.run(self._refresh())
            write_tokens(self.path, self.residents)
            self.rounds += 1


@dataclass
class CpuMeter:
    """CPU time over the load, in % of one core: Locust, the backend (when it runs here), everything else."""

    locust_pids: list[int]
    backend_seconds: Callable[[], float] | None = None
    first: tuple[float, ...] = ()
    last: tuple[float, ...] = ()
    samples: list[float] = field(default_factory=list)

    def sample(self) -> None:
        if not all(Path(f"/proc/{pid}").exists() for pid in self.locust_pids):
            return  # Locust is ending: keep the last complete sample
        backend = self.backend_seconds() if self.backend_seconds else 0.0
        now = (time.monotonic(), machine_busy_seconds(), cpu_seconds(self.locust_pids), backend)
        self.first = self.first or now
        self.last = now

    def shares(self) -> dict[str, float]:
        if not self.first or self.last[0] <= self.first[0]:
            return {}
        wall, machine, locust, backend = (b - a for a, b in zip(self.first, self.last, strict=True))
        shares = {"locust": 100 * locust / wall, "backend": 100 * backend / wall}
        shares["other"] = max(0.0, 100 * machine / wall - shares["locust"] - shares["backend"])
        return {**shares, "cores": float(os.cpu_count() or 1)}


def _wait_started(run_dir: Path, main: subprocess.Popen[bytes], within_s: float = 180.0) -> float:
    """When the shape's clock started (the locustfile's test_start hook writes it)."""
    path = run_dir / "started.json"
    deadline = time.monotonic() + within_s
    while not path.exists():
        if main.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Locust did not start; see {run_dir}/locust-main.log")
        time.sleep(0.2)
    return float(json.loads(path.read_text())["started_at"])


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(
    swarm: Swarm,
    residents: list[Resident],
    outage: Outage | None,
    refresh_every_s: float,
    backend_seconds: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Runs Locust to the end of the shape; returns when it started, its exit code, the drill's and the
    refresher's record."""
    main, workers = commands(swarm)
    env = {**os.environ, "TZT_LOADTEST_RUN": str(swarm.spec)}
    refresher = None
    if swarm.duration_s + 60 > min(refresh_every_s, TOKEN_LIFE_S):
        refresher = TokenRefresher(swarm.base, residents, swarm.run_dir / "tokens.json", refresh_every_s)
    procs: list[subprocess.Popen[bytes]] = []
    info: dict[str, Any] = {"locust_workers": len(workers)}
    with contextlib.ExitStack() as logs:
        try:
            for i, command in enumerate([main, *workers]):
                name = "locust-main.log" if i == 0 else f"locust-worker-{i}.log"
                log = logs.enter_context((swarm.run_dir / name).open("wb"))
                procs.append(
                    subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
                )
            info["started_at"] = started_at = _wait_started(swarm.run_dir, procs[0])
            if refresher:
                refresher.start()
            deadline = started_at + swarm.duration_s + 180
            meter, sampled = CpuMeter([p.pid for p in procs], backend_seconds), 0.0
            while procs[0].poll() is None:
                if outage:
                    outage.poll(started_at)
                if time.monotonic() - sampled >= 2:
                    meter.sample()
                    sampled = time.monotonic()
                if time.time() > deadline:
                    raise RuntimeError("Locust did not finish in time")
                time.sleep(0.2)
            info["locust_exit_code"] = procs[0].returncode
            info["cpu_pct_of_a_core"] = meter.shares()
        finally:
            if outage:
                outage.resume()  # never leave Redis frozen
            if refresher:
                refresher.done.set()
            _stop_all(procs)
    if outage:
        info["outage"] = {
            "stopped_at": outage.stopped_at,
            "resumed_at": outage.resumed_at,
            "errors": outage.errors,
        }
    if refresher:
        info["token_refreshes"] = {"rounds": refresher.rounds, "failed": refresher.failed}
    return info
