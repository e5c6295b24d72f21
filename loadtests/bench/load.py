"""One measured window: generator processes started together, CPU of the server, Redis, PostgreSQL, the generators,
steal and everything else sampled over it; the rows' results over the rounds; waiting for a quiet machine."""

from __future__ import annotations

import collections
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.processes import Server, cpu_seconds, machine_busy_seconds, machine_split_seconds


@dataclass
class HttpResult:
    """One row of one round."""

    name: str
    rate: float
    ok: int
    seconds: float
    errors: dict[str, int]
    reasons: dict[str, int]
    latencies: list[float] = field(repr=False)  # seconds, of the responses counted
    cpu_seconds: dict[str, float] = field(repr=False)  # used over the window: by group, steal, other
    window: float  # wall seconds between the two CPU samples
    prepared: int
    exhausted: bool
    codes: list[str] = field(default_factory=list, repr=False)

    @property
    def cpu(self) -> dict[str, float]:
        return cpu_shares([self])


@dataclass
class HttpRow:
    """One row over all the rounds. Its ratio is the median of the rounds' ratios, each its rate over the mean
    of the ping rates measured seconds before and after it (its round's ping and the next): a burst of steal or
    other work skews the round it falls in, not the median (a ratio of medians would pair a ping from one round
    with a row from another)."""

    name: str
    rate: float  # req/s, median over the rounds
    ratio: float  # median over the rounds of rate / the mean of the pings either side
    low: float  # lowest and highest of the rounds' ratios
    high: float
    p50_ms: float  # over the responses of all the rounds
    p99_ms: float
    errors: dict[str, int]  # summed over the rounds
    reasons: dict[str, int]
    cpu: dict[str, float]  # % of one core over the row's windows in all rounds
    exhausted: int  # rounds in which the prepared requests ran out

    @classmethod
    def combined(cls, results: Sequence[HttpResult], baselines: Sequence[float]) -> HttpRow:
        ratios = [r.rate / max(b, 1e-9) for r, b in zip(results, baselines, strict=True)]
        latencies = [t for r in results for t in r.latencies]
        errors: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        for result in results:
            errors.update(result.errors)
            reasons.update(result.reasons)
        return cls(
            name=results[0].name,
            rate=statistics.median(r.rate for r in results),
            ratio=statistics.median(ratios),
            low=min(ratios),
            high=max(ratios),
            p50_ms=_percentile(latencies, 0.5),
            p99_ms=_percentile(latencies, 0.99),
            errors=dict(errors),
            reasons=dict(reasons),
            cpu=cpu_shares(results),
            exhausted=sum(r.exhausted for r in results),
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


QUIET = {"limit": 25.0, "wait": 30.0}


def other_load(pids: Sequence[int], seconds: float = 1.0) -> float:
    """CPU used by processes other than `pids` and this one over `seconds`, in % of one core."""
    ours = [*pids, os.getpid()]
    mine0, box0 = cpu_seconds(ours), machine_busy_seconds()
    time.sleep(seconds)
    return 100 * ((machine_busy_seconds() - box0) - (cpu_seconds(ours) - mine0)) / seconds


def wait_for_quiet(pids: Sequence[int], what: str) -> float:
    """Other work on this small machine (a test run, a build) distorts every number: wait for it to pass, up
    to QUIET['wait'] seconds, and say so."""
    deadline = time.monotonic() + QUIET["wait"]
    other = other_load(pids)
    if other > QUIET["limit"]:
        print(
            f"  other processes use {other:.0f}% of a core; waiting up to {QUIET['wait']:.0f} s before {what}"
        )
        while other > QUIET["limit"] and time.monotonic() < deadline:
            other = other_load(pids, 2.0)
        if other > QUIET["limit"]:
            print(f"  still {other:.0f}% of a core busy elsewhere; measuring anyway (see the 'other' column)")
    return other


def server_pids(server: Server) -> list[int]:
    return [pid for pids in server.groups.values() for pid in pids]


def _cpu_sample(server: Server, procs: Sequence[subprocess.Popen[str]]) -> dict[str, float]:
    return {
        **server.cpu(),
        "generators": cpu_seconds([p.pid for p in procs]),
        "self": cpu_seconds([os.getpid()]),
        **machine_split_seconds(),
        "wall": time.monotonic(),
    }


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two samples: per group, steal, and 'other' = the machine's busy time (steal apart)
    not used by any process we know of."""
    used = {k: after[k] - before[k] for k in after if k not in ("machine", "wall")}
    ours = sum(v for k, v in used.items() if k != "steal")
    used["other"] = max(0.0, (after["machine"] - before["machine"]) - ours)
    return used


def cpu_shares(results: Sequence[HttpResult]) -> dict[str, float]:
    """% of one core over the windows of `results` together: their CPU seconds over their wall seconds."""
    window = sum(r.window for r in results)
    keys = {k for r in results for k in r.cpu_seconds}
    return {k: 100 * sum(r.cpu_seconds.get(k, 0.0) for r in results) / window for k in keys}


def run_load(
    server: Server,
    name: str,
    specs: list[dict[str, Any]],
    warmup: float,
    duration: float,
    work: Path,
    at_window: Callable[[], None] | None = None,
    *,
    wait: bool = True,
) -> HttpResult:
    """Starts one generator process per spec, lets them all build their requests and connect, then starts
    them together; samples CPU time of the server, Redis, PostgreSQL and the generators over the window.
    With `wait`, first waits for other work on the machine to pass (the rounds wait once, before their ping)."""
    if wait:
        wait_for_quiet(server_pids(server), name)
    procs = []
    results = []
    for i, spec in enumerate(specs):
        spec_path, result_path = work / f"spec-{i}.pkl", work / f"result-{i}.pkl"
        spec_path.write_bytes(
            pickle.dumps(
                {**spec, "host": server.host, "port": server.port, "warmup": warmup, "duration": duration}
            )
        )
        result_path.unlink(missing_ok=True)
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "loadtests.bench", "--generator", str(spec_path), str(result_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        results.append(result_path)
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            for p in procs:
                p.kill()
            raise RuntimeError(f"load generator for {name} failed to start")
    start = time.monotonic() + 0.3
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    time.sleep(max(0.0, start + warmup - time.monotonic()))
    cpu0 = _cpu_sample(server, procs)
    if at_window is not None:
        at_window()
    time.sleep(max(0.0, start + warmup + duration - time.monotonic()))
    cpu1 = _cpu_sample(server, procs)
    for proc in procs:
        proc.wait(120)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator for {name} exited with {proc.returncode}")
    parts = [pickle.loads(p.read_bytes()) for p in results]  # noqa: S301 (written by our generators)
    errors: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    for part in parts:
        errors.update(part["errors"])
        reasons.update(part["reasons"])
        latencies += part["latencies"]
    return HttpResult(
        name=name,
        rate=sum(part["ok"] / part["seconds"] for part in parts),
        ok=sum(part["ok"] for part in parts),
        seconds=max(part["seconds"] for part in parts),
        errors=dict(errors),
        reasons=dict(reasons),
        latencies=latencies,
        cpu_seconds=_cpu_used(cpu0, cpu1),
        window=max(1e-9, cpu1["wall"] - cpu0["wall"]),
        prepared=sum(part["prepared"] for part in parts),
        exhausted=any(part["exhausted"] for part in parts),
        codes=[code for part in parts for code in part["codes"]],
    )


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(items[i::parts]) for i in range(parts)]
