"""The processes of a backend under test and the CPU they use, read from /proc: shared by `make bench`
(loadtests.bench) and `make loadtest` (loadtests.backend, loadtests.swarm).

`Server` is a running `tzt serve`: its Granian worker, and Redis and PostgreSQL when they are embedded, found
among its descendants; `wait_ready` waits for its /readyz and `stop_server` stops it as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we may read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry.name)] = (int(stat[stat.rfind(")") + 2 :].split()[1]), cmdline)
    return table


def descendants(table: dict[int, tuple[int, str]], root: int) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found += children
        frontier += children
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of `pids` so far (processes gone meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> list[int]:
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal ..., summed over the cores."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_busy_seconds() -> float:
    fields = _machine_ticks()
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def machine_split_seconds() -> dict[str, float]:
    """Busy CPU seconds of the machine and steal apart. Steal is time the hypervisor gave this VM's cores to
    someone else while they had work: no process here used it, so it must not be counted as 'other' load."""
    fields = _machine_ticks()
    tick = os.sysconf("SC_CLK_TCK")
    return {"machine": (sum(fields[:7]) - fields[3] - fields[4]) / tick, "steal": fields[7] / tick}


@dataclass
class Server:
    base: str
    host: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    worker: int = 0
    groups: dict[str, list[int]] = field(default_factory=dict)

    def find_processes(self) -> None:
        """The Granian worker (the process doing the work), and Redis / PostgreSQL when embedded."""
        table = proc_table()
        mine = descendants(table, self.proc.pid)
        granian = [pid for pid in mine if "granian" in table[pid][1]]
        workers = [pid for pid in granian if table[pid][0] in granian]
        self.worker = workers[0] if workers else (granian[0] if granian else 0)
        self.groups = {"server": granian}
        redis = [pid for pid in mine if "redis-server" in table[pid][1]]
        if redis:
            self.groups["redis"] = redis
        postmaster = [
            pid
            for pid, (_, cmd) in table.items()
            if f"-D {self.data_dir / 'pgdata'}" in cmd and "postgres" in cmd
        ]
        if postmaster:
            self.groups["postgres"] = postmaster + descendants(table, postmaster[0])

    def cpu(self) -> dict[str, float]:
        if "postgres" in self.groups:  # backends come and go with the pool
            self.groups["postgres"] = self.groups["postgres"][:1] + descendants(
                proc_table(), self.groups["postgres"][0]
            )
        return {name: cpu_seconds(pids) for name, pids in self.groups.items()}


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float, what: str) -> None:
    """Until GET /readyz answers 200; RuntimeError with the end of the log if `proc` exits or time runs out."""
    import httpx  # here, not above: the bench's load generators import this module and stay light

    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (`tzt serve` stops its children and databases on it), SIGKILL after a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
