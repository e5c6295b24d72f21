"""`make loadtest`: a Locust load test of one scenario, sized from an event's numbers, judged by its objectives.

    python -m loadtests.run --scenario NAME [--target URL --credentials FILE [--channels FILE]
                            [--mini-programs FILE]]
                            [--distributed N] [--attendees N] [--window-minutes M] [--gates G]
                            [--surge-factor F] [--test-minutes M | --test-seconds S] [--redis-outage SECONDS]

1. Prints the plan (app_backend/composition/sizing.py) for the scenario's event numbers and the overrides given.
2. Without --target, starts the whole backend (`tzt serve`: Granian with TZT_WORKERS=2, the SAQ job worker, the
   payment sandboxes; embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set) in a temporary data
   folder on a free port, and stops all of it afterwards.
3. Makes the fixtures through the API (residents, withholding agreements, device credentials, linked
   mini-program users).
4. Runs Locust headless (one process, or a master and N workers with --distributed N) with the plan's load shape;
   refreshes access tokens when the run outlives them; runs the Redis outage drill if asked.
5. Checks that acknowledged taps are stored and that fares follow (where it can reach the database and queue).
6. Writes Locust's CSV and HTML reports and summary.json under reports/<scenario>-<UTC timestamp>/, prints the
   summary table, exits 1 when an objective is missed and 2 when the run could not be made."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from app_backend.composition.sizing import Event, Plan
from app_backend.composition.sizing import render as render_plan
from loadtests import rush, swarm
from loadtests.backend import Backend, embedded_backend, given_backend
from loadtests.checks import Outage, check_fares, check_outage, check_taps
from loadtests.fixtures import (
    Resident,
    create_residents,
    link_mini_programs,
    mini_programs_of,
    one_login_client,
    payee_of,
    pick_org,
    real_name_residents,
    register_devices,
    sign_agreements,
    write_fixtures,
    write_tokens,
)
from loadtests.report import peak_throughputs, read_rows, render, task_errors
from loadtests.scenarios import RUSH_LEAD_S, SCENARIOS, Scenario, resident_pool_size
from loadtests.shapes import peak_window
from loadtests.slo import Verdict, evaluate
from loadtests.tally import merge

EVENT_OPTIONS = (
    "attendees",
    "window_minutes",
    "gates",
    "surge_factor",
    "seconds_in_system",
    "device_share",
    "ticket_quota",
    "admit_rate",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument(
        "--target", help="base URL of a running backend in dev mode (default: start one here)"
    )
    parser.add_argument(
        "--credentials", type=Path, help="--target's machine credentials (demo-credentials.json)"
    )
    parser.add_argument("--channels", type=Path, help="--target's payment-channels.json (its sandboxes)")
    parser.add_argument(
        "--mini-programs",
        type=Path,
        help="--target's mini-programs.json (its mini-program apps and sandboxes; .data/ for `make run`)",
    )
    parser.add_argument(
        "--distributed", type=int, default=0, metavar="N", help="a Locust master and N workers"
    )
    event = parser.add_argument_group("event numbers (overrides of the scenario's)")
    event.add_argument("--attendees", type=int)
    event.add_argument("--window-minutes", "--window", dest="window_minutes", type=float)
    event.add_argument("--gates", type=int)
    event.add_argument("--surge-factor", type=float)
    event.add_argument("--seconds-in-system", type=float, help="seconds between one user's arrivals")
    event.add_argument("--device-share", type=float, help="share of residents with a device key (0..1)")
    event.add_argument("--tap-batch-seconds", type=float, help="seconds between a gate's tap uploads")
    event.add_argument("--ticket-quota", type=int, help="ticket_rush: tickets on sale (buyers: --attendees)")
    event.add_argument(
        "--admit-rate", type=float, help="ticket_rush: buyers a second the sale's queue admits"
    )
    length = event.add_mutually_exclusive_group()
    length.add_argument("--test-minutes", type=float, default=3.0, help="the compressed test's length (3)")
    length.add_argument("--test-seconds", type=float)
    run = parser.add_argument_group("run")
    run.add_argument("--residents", type=int, help="residents shared by the users (default: from the plan)")
    run.add_argument("--timeout", type=float, default=5.0, help="client timeout per request, seconds (5)")
    run.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="most connections the users of a class open per Locust process, as a load balancer's upstream"
        " pool (1000, opened as needed: more than the server admits at once, so that an overload reaches its"
        " overload protection); 0: every user holds its own, as phones connecting straight to the server",
    )
    run.add_argument("--latency-scale", type=float, default=1.0, help="multiply the latency objectives (1)")
    run.add_argument(
        "--redis-outage", type=float, metavar="SECONDS", help="stop the embedded Redis meanwhile"
    )
    run.add_argument("--refresh-every", type=float, default=600.0, help="seconds between token refreshes")
    run.add_argument("--reports", type=Path, default=swarm.ROOT / "reports", help="where run folders go")
    run.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if args.target and not args.credentials:
        parser.error("--target needs --credentials (its gate and checkpoint operators' machine credentials)")
    if args.redis_outage and args.target:
        parser.error("--redis-outage stops the embedded Redis: it refuses to run against --target")
    if args.distributed < 0:
        parser.error("--distributed takes a number of workers")
    return args


def make_event(scenario: Scenario, args: argparse.Namespace) -> Event:
    minutes = args.test_seconds / 60 if args.test_seconds else args.test_minutes
    overrides = {name: getattr(args, name) for name in EVENT_OPTIONS}
    return scenario.make_event(
        {**overrides, "tap_batch_seconds": args.tap_batch_seconds, "test_minutes": minutes}
    )


@contextlib.contextmanager
def backend_for(args: argparse.Namespace, run_dir: Path) -> Iterator[Backend]:
    if args.target:
        yield given_backend(args.target, args.credentials, args.channels, args.mini_programs)
        return
    print(
        "Starting the backend (tzt serve: 2 Granian workers, job worker, payment sandboxes) ...", flush=True
    )
    with embedded_backend(workers=2, log_dir=run_dir) as backend:
        print(f"  {backend.base} ready", flush=True)
        yield backend


async def _make_people(backend: Backend, scenario: Scenario, event: Event, count: int) -> list[Resident]:
    async with (
        httpx.AsyncClient(base_url=backend.base, timeout=30) as client,
        httpx.AsyncClient(timeout=30) as sandbox,
    ):
        residents = await create_residents(client, count)
        await real_name_residents(client, residents)
        if scenario.has_riders:
            await sign_agreements(client, sandbox, residents)
        share = event.device_share  # spread evenly over the pool: every 1/share-th resident has a device key
        with_devices = [r for i, r in enumerate(residents) if int((i + 1) * share) > int(i * share)]
        if with_devices:
            await register_devices(client, with_devices)
        if scenario.has_mini_programs:
            await link_mini_programs(client, sandbox, residents, mini_programs_of(backend.mini_programs))
    return residents


def give_tickets(backend: Backend, residents: list[Resident]) -> dict[str, Any]:
    """event_entry's attendees hold real tickets: the organiser publishes a session starting within the hour
    (its gates are open) whose gates are the venue operator's, with re-entry after a minute (the residents come
    round again in the run), and every resident buys one ticket through the API and the channel's sandbox."""
    sandboxes = backend.sandbox_urls()
    if not sandboxes:
        raise RuntimeError(
            "the attendees' tickets are paid in the sandboxes: give --channels payment-channels.json"
        )
    organiser = pick_org(backend.credentials, ["events:publish", "payments:refund"], "department")
    gate = pick_org(backend.credentials, ["verify:event"], "verifier_operator")
    sale = asyncio.run(
        rush.open_sale(
            backend.base,
            organiser,
            gate,
            len(residents),
            lead_s=-60,
            admit_rate=0,
            starts_in=dt.timedelta(hours=1),
            re_entry_minutes=1,
        )
    )
    entrances = asyncio.run(rush.buy_tickets(backend.base, sandboxes, sale, residents))
    print(f"  {len(entrances):,} attendees hold a paid ticket for session {sale.session_id}", flush=True)
    return {"session_id": sale.session_id, "entrances": entrances}


def prepare_rush(backend: Backend, event: Event, made: Plan, run_dir: Path) -> list[Resident]:
    """The sale and its buyers (loadtests/rush.py): buyers first, then the sale, so it opens `RUSH_LEAD_S` plus
    half the window after the fixtures are ready, whatever they took."""
    assert made.sale is not None
    started = time.monotonic()
    print(f"Fixtures: {made.sale.buyers:,} real-named buyers (dev route, 2,000 a call) ...", flush=True)
    buyers = asyncio.run(rush.make_buyers(backend.base, made.sale.buyers))
    organiser = pick_org(backend.credentials, ["events:publish", "payments:refund"], "department")
    gate = pick_org(backend.credentials, ["verify:event"], "verifier_operator")
    lead = RUSH_LEAD_S + event.window_minutes * 30
    sale = asyncio.run(
        rush.open_sale(
            backend.base, organiser, gate, event.ticket_quota, lead_s=lead, admit_rate=event.admit_rate
        )
    )
    data: dict[str, Any] = {
        "orgs": {},
        "sandboxes": backend.sandbox_urls(),
        "rush": {
            "session_id": sale.session_id,
            "classes": sale.classes,
            "opens_at": sale.opens_at,
            "window_s": event.window_minutes * 60,
            "drivers": made.users,
        },
    }
    if not data["sandboxes"]:
        raise RuntimeError(
            "ticket payments need the channel sandboxes: give --channels payment-channels.json"
        )
    write_fixtures(run_dir / "fixtures.json", data, buyers)
    write_tokens(run_dir / "tokens.json", buyers)
    print(
        f"  {len(buyers):,} buyers; session {sale.session_id}: "
        + ", ".join(f"{c['name']} {c['quota']:,}" for c in sale.classes)
        + f", opening in {sale.opens_at - time.time():.0f} s ({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    return buyers


def prepare(
    backend: Backend, scenario: Scenario, event: Event, made: Plan, run_dir: Path, count: int | None
) -> list[Resident]:
    """Residents and the rest of the fixtures, written to the run's folder for the Locust processes."""
    if made.sale is not None:
        return prepare_rush(backend, event, made, run_dir)
    count = count or resident_pool_size(made, scenario.rider_share() * made.users)
    started = time.monotonic()
    print(f"Fixtures: {count} residents through the API ...", flush=True)
    data: dict[str, Any] = {"orgs": {}}
    if scenario.has_riders:
        data["orgs"]["transit"] = pick_org(backend.credentials, ["verify:transit", "gates:taps"])
    if "CheckpointUser" in scenario.classes:
        data["orgs"]["checkpoint"] = pick_org(backend.credentials, ["verify:health"], "verifier_operator")
    if "AttendeeUser" in scenario.classes:
        data["orgs"]["gate"] = pick_org(backend.credentials, ["verify:event"], "verifier_operator")
    data["orgs"] = {role: dataclasses.asdict(org) for role, org in data["orgs"].items()}
    if scenario.has_payments:
        data["payee_id"] = payee_of(backend.credentials)
        data["sandboxes"] = backend.sandbox_urls()
        if not data["sandboxes"]:
            raise RuntimeError("payments need the channel sandboxes: give --channels payment-channels.json")
    if scenario.has_mini_programs:
        apps = mini_programs_of(backend.mini_programs)
        if not apps:
            raise RuntimeError(
                "mini-program logins need their sandboxes: give --mini-programs mini-programs.json"
            )
        data["mini_programs"] = {channel: dataclasses.asdict(app) for channel, app in apps.items()}
    if scenario.has_one_login:
        data["one_login"] = one_login_client(backend.credentials)
    residents = asyncio.run(_make_people(backend, scenario, event, count))
    if "AttendeeUser" in scenario.classes:
        data["entry"] = give_tickets(backend, residents)
    write_fixtures(run_dir / "fixtures.json", data, residents)
    write_tokens(run_dir / "tokens.json", residents)
    print(
        f"  {len(residents)} residents, {sum(r.rider for r in residents)} with an active withholding agreement,"
        f" {sum(1 for r in residents if r.wallet)} with a device credential,"
        f" {sum(1 for r in residents if r.wechat_openid or r.alipay_user_id)} with linked mini-program users"
        f" ({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    return residents


def write_spec(run_dir: Path, scenario: Scenario, event: Event, made: Plan, args: argparse.Namespace) -> Path:
    """The run spec the locustfile reads (every Locust process, master and workers)."""
    spec = {
        "scenario": scenario.name,
        "visits": [dataclasses.asdict(v) for v in scenario.visits],
        "stages": [dataclasses.asdict(s) for s in made.stages],
        "gates": scenario.gate_users(event),
        "seconds_in_system": event.seconds_in_system,
        "ride_seconds": event.seconds_in_system / 3,
        "tap_batch_seconds": event.tap_batch_seconds,
        "timeout_s": args.timeout,
        "connections": args.connections,
        "fixtures": str(run_dir / "fixtures.json"),
        "tokens": str(run_dir / "tokens.json"),
        "out_dir": str(run_dir),
    }
    path = run_dir / "run.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def load(
    backend: Backend,
    scenario: Scenario,
    event: Event,
    made: Plan,
    run_dir: Path,
    args: argparse.Namespace,
    residents: list[Resident],
) -> dict[str, Any]:
    outage = None
    if args.redis_outage:
        pids = backend.redis_pids()
        if not pids:
            raise RuntimeError("--redis-outage: no embedded redis-server to stop (is REDIS_URL set?)")
        outage = Outage(pids, made.duration_s / 3, args.redis_outage)
    classes = scenario.classes + (["GateUser"] if scenario.gate_users(event) else [])
    spec = write_spec(run_dir, scenario, event, made, args)
    job = swarm.Swarm(spec, classes, backend.base, run_dir, made.duration_s, args.distributed)
    mode = f"a master and {args.distributed} workers" if args.distributed else "one process"
    print(f"Locust ({mode}): {made.duration_s} s, {made.users:,} users at the peak ...", flush=True)
    return swarm.run(
        job,
        residents,
        outage,
        # A rush's buyers are made just before it and their tokens outlive it: refreshing 100,000 of them
        # mid-run would be load of the test's own making.
        float("inf") if made.sale is not None else args.refresh_every,
        backend.cpu_seconds if backend.embedded else None,
    )


def after_run(
    backend: Backend,
    scenario: Scenario,
    residents: list[Resident],
    run_dir: Path,
    info: dict[str, Any],
    drill: bool,
) -> tuple[list[Verdict], dict[str, Any]]:
    print("Checks after the run ...", flush=True)
    tally = merge(run_dir)
    verdicts: list[Verdict] = []
    notes: dict[str, Any] = {}
    rush_fixtures = json.loads((run_dir / "fixtures.json").read_text()).get("rush")
    if rush_fixtures:
        if not backend.database_url:
            notes["sale"] = "not checked: no database URL for --target (run against the embedded backend)"
        else:
            figures = asyncio.run(rush.sale_figures(backend.database_url, rush_fixtures["session_id"]))
            found, notes["sale"] = rush.check_sale(figures, dict(tally["counters"]), len(residents))
            verdicts += found
    verdict, notes["taps"] = check_taps(backend, tally["taps"], drill)
    verdicts += [verdict] if verdict else []
    if scenario.has_riders:
        verdict, notes["fares"] = check_fares(backend, residents, len(tally["taps"]))
        verdicts += [verdict] if verdict else []
    if drill:
        verdicts.append(check_outage(tally, info.get("outage", {})))
    return verdicts, notes


def summarise(
    run_dir: Path,
    scenario: Scenario,
    event: Event,
    made: Plan,
    args: argparse.Namespace,
    info: dict[str, Any],
    checks: tuple[list[Verdict], dict[str, Any]],
) -> tuple[dict[str, Any], str]:
    tally = merge(run_dir)
    rows = read_rows(run_dir / "locust_stats.csv")
    start, end = peak_window(made.stages)
    at = info["started_at"]
    throughputs = peak_throughputs(tally["requests"], made.rps, at + start, at + end)
    evaluation = evaluate(rows, throughputs, scenario.slo.scaled(args.latency_scale))
    if args.redis_outage:  # the drill is judged on answers and taps; latency and rate are expected to suffer
        evaluation.verdicts = [
            dataclasses.replace(v, passed=None, note="reported, not judged in the outage drill")
            if v.check.endswith(" ms") or v.check == "throughput share"
            else v
            for v in evaluation.verdicts
        ]
    errors, first = task_errors(run_dir / "locust_exceptions.csv")
    evaluation.verdicts.append(
        Verdict("task errors", "locust_exceptions.csv", float(errors), 0.0, errors == 0, first)
    )
    evaluation.verdicts += checks[0]
    summary = {
        "scenario": scenario.name,
        "passed": evaluation.passed,
        "event": dataclasses.asdict(event),
        "plan": {**dataclasses.asdict(made), "peak_window_s": [start, end]},
        "run": {
            **info,
            "locust": f"master + {args.distributed} workers" if args.distributed else "one process",
        },
        "endpoints": [{**dataclasses.asdict(r), "group": r.group} for r in rows],
        "throughput_at_peak": [dataclasses.asdict(t) for t in throughputs],
        "objectives": evaluation.as_dicts(),
        "verify_verdicts": [
            {"scene": s, "reason": r, "count": n} for (s, r), n in sorted(tally["verdicts"].items())
        ],
        "counters": dict(tally["counters"]),
        "checks": checks[1],
        "reports": {"csv": str(run_dir / "locust_stats.csv"), "html": str(run_dir / "report.html")},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    return summary, render(rows, evaluation, tally["verdicts"], tally["counters"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    event = make_event(scenario, args)
    made = scenario.plan(event)
    print(f"Scenario {scenario.name}: {scenario.summary}.")
    print(render_plan(event, made), flush=True)
    if args.plan_only:
        return 0
    run_dir = args.reports / f"{scenario.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    run_dir.mkdir(parents=True)
    try:
        with backend_for(args, run_dir) as backend:
            residents = prepare(backend, scenario, event, made, run_dir, args.residents)
            info = load(backend, scenario, event, made, run_dir, args, residents)
            checks = after_run(backend, scenario, residents, run_dir, info, bool(args.redis_outage))
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"The load test could not be run: {exc}", file=sys.stderr)
        return 2
    summary, table = summarise(run_dir, scenario, event, made, args, info, checks)
    print(
        f"\n{scenario.name}: {made.duration_s} s, peak window {summary['plan']['peak_window_s']} s, Locust "
        f"{summary['run']['locust']}"
    )
    print(table)
    cpu = info.get("cpu_pct_of_a_core")
    if cpu:
        print(
            f"\nCPU over the run (% of one core; {cpu['cores']:.0f} cores): Locust {cpu['locust']:.0f}%, backend"
            f" (tzt serve and all it started, PostgreSQL) {cpu['backend']:.0f}%, everything else {cpu['other']:.0f}%"
        )
        if cpu["other"] > 25:
            print(
                "  WARNING: other work on this machine took CPU meanwhile: latencies are worse than on a quiet one"
            )
    if "fares" in checks[1]:
        print(f"\nFares: {checks[1]['fares']}")
    if "sale" in checks[1]:
        print(f"\nSale: {checks[1]['sale']}")
    print(f"\nReports: {run_dir}/ (report.html, locust_stats.csv, summary.json)")
    print(
        "PASSED: every objective met" if summary["passed"] else "FAILED: an objective was missed (see above)"
    )
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
