"""What each Locust process counts beyond Locust's own statistics, written to files the runner merges:
every request's outcome by the second it started and ended (the peak window's throughput, the Redis outage
window), the verdicts the verifiers returned, degraded answers, flow counters (orders paid, idempotent replays),
and the ids of taps the platform took in a 2xx answer (accepted or duplicate; a line per batch, flushed at once)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from loadtests.slo import Outcome


class Tally:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.requests: Counter[tuple[str, int, int, str]] = Counter()
        self.verdicts: Counter[tuple[str, str]] = Counter()
        self.counters: Counter[str] = Counter()
        self._taps: Any = None

    def request(self, name: str, started: float, ended: float, outcome: Outcome) -> None:
        self.requests[(name, int(started), int(ended), outcome)] += 1

    def verdict(self, scene: str, answer: dict[str, Any]) -> None:
        self.verdicts[(scene, str(answer.get("reason")))] += 1
        if answer.get("degraded"):
            self.counters[f"degraded {scene} answers"] += 1

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] += n

    def taps_accepted(self, tap_ids: list[str]) -> None:
        if self._taps is None:
            self._taps = (self.out_dir / f"taps-accepted-{os.getpid()}.jsonl").open("a")
        self._taps.write(json.dumps(tap_ids) + "\n")
        self._taps.flush()
        self.counters["taps acknowledged"] += len(tap_ids)

    def dump(self) -> None:
        if not (self.requests or self.counters):
            return  # a Locust master runs no users
        data = {
            "requests": [[*key, n] for key, n in self.requests.items()],
            "verdicts": [[*key, n] for key, n in self.verdicts.items()],
            "counters": dict(self.counters),
        }
        path = self.out_dir / f"tally-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def merge(out_dir: Path) -> dict[str, Any]:
    """Every process's tally and acknowledged taps, added up."""
    requests: Counter[tuple[str, int, int, str]] = Counter()
    verdicts: Counter[tuple[str, str]] = Counter()
    counters: Counter[str] = Counter()
    for path in sorted(out_dir.glob("tally-*.json")):
        data = json.loads(path.read_text())
        for name, started, ended, outcome, n in data["requests"]:
            requests[(name, started, ended, outcome)] += n
        for scene, reason, n in data["verdicts"]:
            verdicts[(scene, reason)] += n
        counters.update(data["counters"])
    taps: list[str] = []
    for path in sorted(out_dir.glob("taps-accepted-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                taps += json.loads(line)
    return {"requests": requests, "verdicts": verdicts, "counters": counters, "taps": taps}
