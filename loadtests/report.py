"""From Locust's CSV and the processes' tallies to endpoint rows, throughput at the peak, and the printed table."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loadtests.slo import SHED_SUFFIX, EndpointRow, Evaluation, Throughput, Verdict, matches


def _ms(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "N/A": no answers to take a percentile of


def read_rows(stats_csv: Path) -> list[EndpointRow]:
    """Locust's per-endpoint rows, shed rows (" [shed]") folded into their endpoint's `shed` column; the
    endpoint's percentiles come from its answers that were not shed."""
    rows: dict[str, EndpointRow] = {}
    with stats_csv.open(newline="") as fh:
        for line in csv.DictReader(fh):
            if not line["Type"] or line["Name"] == "Aggregated":
                continue
            name = f"{line['Type']} {line['Name']}"
            base = name.removesuffix(SHED_SUFFIX)
            row = rows.setdefault(base, EndpointRow(base))
            count = int(line["Request Count"])
            row.requests += count
            row.rps += float(line["Requests/s"])
            if name.endswith(SHED_SUFFIX):
                row.shed += count
            else:
                row.failures += int(line["Failure Count"])
                row.p50_ms, row.p95_ms, row.p99_ms = _ms(line["50%"]), _ms(line["95%"]), _ms(line["99%"])
    return sorted(rows.values(), key=lambda r: (r.group, r.name))


def peak_throughputs(
    requests: Mapping[tuple[str, int, int, str], int], targets: Mapping[str, float], start: float, end: float
) -> list[Throughput]:
    """Answers (ok) completed inside [start, end) per second, for every planned endpoint."""
    window = max(1.0, end - start)
    out = []
    for endpoint, target in targets.items():
        done = sum(
            n
            for (name, _, ended, outcome), n in requests.items()
            if outcome == "ok" and start <= ended < end and matches(name, endpoint)
        )
        out.append(Throughput(endpoint, target, done / window, window))
    return out


def outcomes_started_between(
    requests: Mapping[tuple[str, int, int, str], int], prefix: str, start: float, end: float
) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, started, _, outcome), n in requests.items():
        if name.startswith(prefix) and start <= started < end:
            counts[outcome] += n
    return counts


def task_errors(exceptions_csv: Path) -> tuple[int, str]:
    """Python errors inside Locust tasks (a harness bug or an answer it could not read): how many, the first."""
    if not exceptions_csv.exists():
        return 0, ""
    with exceptions_csv.open(newline="") as fh:
        found = [(int(line["Count"]), line["Message"]) for line in csv.DictReader(fh)]
    return sum(n for n, _ in found), (found[0][1] if found else "")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _value(verdict: Verdict, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if verdict.percent else f"{value:,.0f}"


def endpoint_table(rows: list[EndpointRow], evaluation: Evaluation) -> list[str]:
    columns = (
        ("requests", 9),
        ("shed", 7),
        ("fail", 6),
        ("p50 ms", 8),
        ("p95 ms", 8),
        ("p99 ms", 8),
        ("req/s", 8),
    )
    name = max([52, *(len(r.name) + 1 for r in rows)])  # the logins' names are long; nothing cut
    header = f"{'endpoint':<{name}}" + "".join(f"{title:>{width}}" for title, width in columns) + "  SLO"
    latency: dict[str, list[str]] = {}
    for v in evaluation.verdicts:
        if v.check.endswith(" ms"):
            latency.setdefault(v.subject, []).append(f"{v.check.removesuffix(' ms')} {v.label}")
    lines = [header, "-" * (len(header) + 10)]
    for r in rows:
        lines.append(
            f"{r.name:<{name}}{r.requests:>9,}{r.shed:>7,}{r.failures:>6,}{_num(r.p50_ms):>8}{_num(r.p95_ms):>8}"
            f"{_num(r.p99_ms):>8}{r.rps:>8.1f}  {', '.join(latency.get(r.name, []))}"
        )
    totals = [sum(r.requests for r in rows), sum(r.shed for r in rows), sum(r.failures for r in rows)]
    lines.append(f"{'all':<{name}}{totals[0]:>9,}{totals[1]:>7,}{totals[2]:>6,}")
    return lines


def objective_lines(evaluation: Evaluation) -> list[str]:
    """Every objective but the latency ones that passed (those are in the table)."""
    return [
        f"  {v.label:<5} {v.check:<20} {v.subject:<42} {_value(v, v.measured):>9} {v.bound} "
        f"{_value(v, v.limit):<9} {v.note}".rstrip()
        for v in evaluation.verdicts
        if not (v.check.endswith(" ms") and v.passed is not False)
    ]


def verdict_lines(verdicts: Mapping[tuple[str, str], int]) -> list[str]:
    lines = []
    for scene in sorted({scene for scene, _ in verdicts}):
        found = sorted(((r, n) for (s, r), n in verdicts.items() if s == scene), key=lambda item: -item[1])
        lines.append(f"  {scene:<8} " + ", ".join(f"{reason} {n:,}" for reason, n in found))
    return lines


def render(
    rows: Iterable[EndpointRow],
    evaluation: Evaluation,
    verdicts: Mapping[tuple[str, str], int],
    counters: Mapping[str, Any],
) -> str:
    lines = [*endpoint_table(list(rows), evaluation), "", "Objectives:", *objective_lines(evaluation)]
    if verdicts:
        lines += ["", "Verdicts returned by /api/v1/verify:", *verdict_lines(verdicts)]
    if counters:
        lines += ["", "Counted:", *(f"  {k}: {v:,}" for k, v in sorted(counters.items()))]
    return "\n".join(lines)
