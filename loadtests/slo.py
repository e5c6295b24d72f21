"""Pass or fail for a load test: what counts as shed, what as a failure, and the service-level objectives.

An answer is one of three outcomes:
- `ok`: a 2xx answer;
- `shed`: 429 or 503 WITH a `Retry-After` header, the server's clear "not now" (rate limits, overload
  protection); counted apart from failures and never in the latency percentiles;
- `failure`: everything else: a 429/503 without `Retry-After`, any other 5xx, an unexpected 4xx, a timeout, a
  refused or reset connection.

Objectives per scenario: p95 and p99 latency per endpoint group (checked for every endpoint of the group), the
failure ratio per group, and the throughput reached at the peak as a share of the plan's target rate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

Outcome = Literal["ok", "shed", "failure"]
SHED_SUFFIX = " [shed]"
RETRY_MARK = " [retry"  # a request sent again (same Idempotency-Key): not new work in the plan

# (request-name prefix, group); the first match wins. Request names are "METHOD /path [detail]".
GROUPS: tuple[tuple[str, str], ...] = (
    ("POST /api/v1/codes/", "codes"),
    ("POST /api/v1/verify", "verify"),
    ("POST /api/v1/gates/taps", "taps"),
    ("POST /api/v1/payments/notify", "notify"),
    ("POST /api/v1/payments/orders", "orders"),
    ("GET /api/v1/payments/orders", "orders"),
    ("POST /api/v1/mini-programs/wechat/login", "wechat-login"),
    ("POST /api/v1/mini-programs/alipay/login", "alipay-login"),
    ("GET /oidc/authorize", "authorize"),
    ("POST /oidc/token", "token"),
    ("GET /oidc/userinfo", "userinfo"),
    ("POST /_sandbox", "sandbox"),
    ("POST /api/v1/tickets/sessions/", "queue"),
    ("GET /api/v1/tickets/sessions/", "queue"),
    ("POST /api/v1/tickets/holds/{id}/pay", "orders"),
    ("POST /api/v1/tickets/holds", "holds"),
    ("GET /api/v1/tickets", "tickets"),
)


def classify(status: int, retry_after: str | None, error: BaseException | None = None) -> Outcome:
    if error is not None and not status:
        return "failure"  # timeout, connection refused or reset: no answer at all
    if status in (429, 503):
        return "shed" if retry_after else "failure"
    if 200 <= status < 300:
        return "ok"
    return "failure"


def group_of(name: str) -> str:
    base = name.removesuffix(SHED_SUFFIX)
    return next((group for prefix, group in GROUPS if base.startswith(prefix)), "other")


def matches(name: str, endpoint: str) -> bool:
    """Does a request name belong to a plan endpoint ("POST /api/v1/verify" covers "... [transit]", and
    "POST /api/v1/payments/notify" covers ".../notify/wechat")?"""
    base = name.removesuffix(SHED_SUFFIX)
    if RETRY_MARK in base:
        return False
    if base.startswith(endpoint + "/{"):  # a resource under it (holds/{id}/pay) is an endpoint of its own
        return False
    return base == endpoint or base.startswith((endpoint + " ", endpoint + "/"))


@dataclass(frozen=True)
class Latency:
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Slo:
    latency: Mapping[str, Latency]
    max_failure_ratio: float = 0.005
    min_throughput_share: float = 0.9
    # Percentiles of a handful of requests say nothing: p95 needs this many answers, p99 five times as many.
    min_requests_p95: int = 20
    # A target rate whose peak window holds fewer requests than this is reported, not judged.
    min_planned_requests: float = 30.0

    def scaled(self, latency_scale: float) -> Slo:
        latency = {
            g: Latency(t.p95_ms * latency_scale, t.p99_ms * latency_scale) for g, t in self.latency.items()
        }
        return Slo(
            latency,
            self.max_failure_ratio,
            self.min_throughput_share,
            self.min_requests_p95,
            self.min_planned_requests,
        )


@dataclass
class EndpointRow:
    """One endpoint over the whole run: answers not shed give the percentiles."""

    name: str
    requests: int = 0
    shed: int = 0
    failures: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    rps: float = 0.0

    @property
    def group(self) -> str:
        return group_of(self.name)

    @property
    def answered(self) -> int:
        """Requests that were neither shed nor failed."""
        return self.requests - self.shed - self.failures


@dataclass(frozen=True)
class Throughput:
    endpoint: str
    target_rps: float
    achieved_rps: float
    window_s: float


@dataclass(frozen=True)
class Verdict:
    check: str
    subject: str
    measured: float | None
    limit: float
    passed: bool | None  # None: not judged (too few requests)
    note: str = ""
    at_least: bool = False  # the limit is a floor (throughput), not a ceiling
    percent: bool = False  # measured and limit are shares

    @property
    def bound(self) -> str:
        return ">=" if self.at_least else "<="

    @property
    def label(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Evaluation:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed is not False for v in self.verdicts)

    def as_dicts(self) -> list[dict[str, object]]:
        return [{**asdict(v), "verdict": v.label} for v in self.verdicts]


def _latency_verdicts(row: EndpointRow, limits: Latency, slo: Slo) -> list[Verdict]:
    out = []
    for label, value, limit, needed in (
        ("p95", row.p95_ms, limits.p95_ms, slo.min_requests_p95),
        ("p99", row.p99_ms, limits.p99_ms, 5 * slo.min_requests_p95),
    ):
        counted = row.requests - row.shed
        if value is None or counted < needed:
            out.append(Verdict(f"{label} ms", row.name, value, limit, None, f"{counted} answers < {needed}"))
        else:
            out.append(Verdict(f"{label} ms", row.name, value, limit, value <= limit))
    return out


def _failure_verdicts(rows: Iterable[EndpointRow], slo: Slo) -> list[Verdict]:
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for row in rows:
        requests[row.group] += row.requests
        failures[row.group] += row.failures
    out = []
    for group in sorted(g for g, n in requests.items() if n):
        ratio = failures[group] / requests[group]
        limit = slo.max_failure_ratio
        out.append(Verdict("failure ratio", group, ratio, limit, ratio <= limit, percent=True))
    return out


def _throughput_verdicts(throughputs: Iterable[Throughput], slo: Slo) -> list[Verdict]:
    out = []
    for t in throughputs:
        if t.target_rps <= 0:
            continue
        share = t.achieved_rps / t.target_rps
        passed: bool | None = share >= slo.min_throughput_share
        note = f"{t.achieved_rps:.1f} of {t.target_rps:.1f} req/s answered at the peak"
        if t.target_rps * t.window_s < slo.min_planned_requests:
            passed, note = (
                None,
                f"target {t.target_rps:.2f}/s over {t.window_s:.0f} s: too few requests to judge",
            )
        limit = slo.min_throughput_share
        out.append(
            Verdict("throughput share", t.endpoint, share, limit, passed, note, at_least=True, percent=True)
        )
    return out


def evaluate(rows: Iterable[EndpointRow], throughputs: Iterable[Throughput], slo: Slo) -> Evaluation:
    rows = list(rows)
    verdicts: list[Verdict] = []
    for row in rows:
        limits = slo.latency.get(row.group)
        if limits is not None:
            verdicts += _latency_verdicts(row, limits, slo)
    verdicts += _failure_verdicts(rows, slo)
    verdicts += _throughput_verdicts(throughputs, slo)
    return Evaluation(verdicts)
