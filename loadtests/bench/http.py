"""Part `http`: rounds of ping, issue, the three verify rows, the mini-program login, the token exchange and the
tiles' open and impressions against one server; ratios to the pings either side of each row."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.bench.endpoints import (
    DEVICE_ROW,
    EVENT_ROW,
    HEALTH_ROW,
    HOLD_PATH,
    HOLD_ROW,
    HOME_PATH,
    HOME_ROW,
    HOSPITAL,
    IMPRESSIONS_PATH,
    IMPRESSIONS_ROW,
    ISSUE_ROW,
    METRO,
    MINI_ROW,
    OPEN_ROW,
    OPENED_TILE,
    PING_PATH,
    PING_ROW,
    ROWS,
    TOKEN_ROW,
    TRANSIT_ROW,
    VENUE,
)
from loadtests.bench.load import HttpResult, HttpRow, cpu_shares, run_load, server_pids, split, wait_for_quiet
from loadtests.bench.profiling import profile_seconds, profile_server
from loadtests.bench.report import pct
from loadtests.bench.residents import (
    authorization_codes,
    create_residents,
    demo_tiles,
    device_wallets,
    give_agreements,
    hold_requests,
    issue_codes,
    login_codes,
    mini_program_users,
    real_name,
    sample_answer,
    ticket_sales,
)
from loadtests.bench.server import running_server


def _planned(ping_rate: float, seconds: float, generators: int) -> int:
    """Single-use requests to sign up front per generator: enough for the baseline's rate over `seconds`."""
    return int(ping_rate * seconds * 1.3 / generators) + 500


def _round_line(number: int, rounds: int, results: Sequence[HttpResult], topped: int) -> str:
    """One compact line per round: every row's rate and ratio to this round's ping, the round's steal and other
    (mean over its windows / the busiest window)."""
    ping = results[0].rate
    cells = [f"ping {ping:,.0f}"]
    for result in results[1:]:
        cell = f"{ROWS[result.name]} {result.rate:,.0f} {pct(result.rate / max(ping, 1e-9))}"
        if result.name == TRANSIT_ROW and topped:
            cell += f" (+{topped:,} codes)"
        if result.errors:
            cell += f" ({sum(result.errors.values())} errors)"
        if result.exhausted:
            cell += " (ran out)"
        cells.append(cell)
    shares = cpu_shares(results)
    steal = max(r.cpu.get("steal", 0.0) for r in results)
    other = max(r.cpu.get("other", 0.0) for r in results)
    return (
        f"  round {number}/{rounds}: " + " | ".join(cells) + f" req/s | steal {shares.get('steal', 0):.0f}%"
        f" (max {steal:.0f}%), other {shares.get('other', 0):.0f}% (max {other:.0f}%)"
    )


def http_benchmarks(args: argparse.Namespace) -> tuple[list[HttpRow], dict[str, Any]]:
    gens, per_gen = args.generators, max(1, args.connections // args.generators)
    common = {"connections": per_gen}
    ping_specs = [{**common, "kind": "get", "path": PING_PATH, "cycle": True}] * gens
    info: dict[str, Any] = {}
    # The rows asked for (--rows; default all); transit shows the codes the issue row produced.
    chosen = set(args.rows or ROWS.values())
    if "transit" in chosen:
        chosen.add("issue")
    with running_server() as server, tempfile.TemporaryDirectory(prefix="tzt-bench-load-") as tmp:
        work = Path(tmp)
        info["worker_pid"] = server.worker
        info["backing"] = "embedded" if "postgres" in server.groups else "external (DATABASE_URL/REDIS_URL)"
        creds = json.loads((server.data_dir / "demo-credentials.json").read_text())
        hospital = {k: creds[HOSPITAL][k] for k in ("key_id", "secret")}
        metro = {k: creds[METRO][k] for k in ("key_id", "secret")}
        venue = {k: creds[VENUE][k] for k in ("key_id", "secret")}
        # The occasion the event row's gate names: no seller knows it here (no-ticket), so the row measures the
        # scene's whole path but the seller's own statement (docs/performance.md; a ticketed occasion comes with
        # the tickets domain's fixtures).
        occasion = {"occasion_id": "6f1c2a3e-0000-4000-8000-000000000017", "entrance": "东门"}
        one_login = {k: creds["one_login"][k] for k in ("client_id", "client_secret", "redirect_uri")}
        t0 = time.monotonic()
        residents = asyncio.run(create_residents(server.base, args.residents))
        asyncio.run(real_name(server.base, residents))
        asyncio.run(give_agreements(server.base, residents))
        wallets = asyncio.run(
            device_wallets(server.base, residents[: args.devices if "device" in chosen else 0])
        )
        print(
            f"  setup: {len(residents)} residents logged in, real-named, with withholding agreements,"
            f" {len(wallets)} device credentials "
            f"({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
        tokens = [r.token for r in residents]
        tiles = demo_tiles(server.base)
        open_path = f"/api/v1/tiles/{tiles[OPENED_TILE]}/open"
        shown = json.dumps({"tile_ids": sorted(tiles.values())[:4]})
        mini = asyncio.run(
            mini_program_users(
                server.base, json.loads((server.data_dir / "mini-programs.json").read_text()), 50
            )
        )
        mini_rates: list[float] = []
        # Sessions for the hold row: a few per round (each resident holds at most 20 per session).
        sales = asyncio.run(ticket_sales(server.base, 4 * (args.http_rounds + 1))) if "hold" in chosen else []
        hold_rates: list[float] = []

        def load(name: str, specs: list[dict[str, Any]]) -> HttpResult:
            # No quiet wait between the rows of a round: the round waits once, so its rows stay close together.
            return run_load(server, name, specs, args.warmup, args.duration, work, wait=False)

        def issue_specs() -> list[dict[str, Any]]:
            return [
                {**common, "kind": "issue", "tokens": shard, "cycle": True, "keep_bodies": True}
                for shard in split(tokens, gens)
            ]

        def top_up(codes: list[str], wanted: int, rate: float) -> int:
            """Adds fresh codes, issued by the same residents the same way as in the issue row, until `codes`
            has `wanted`; returns how many it added."""
            before = len(codes)
            for _ in range(3):
                if len(codes) >= wanted:
                    break
                seconds = max(0.5, 1.2 * (wanted - len(codes)) / max(rate, 100.0))
                codes += run_load(server, "top-up", issue_specs(), 0.0, seconds, work, wait=False).codes
            return len(codes) - before

        transit_rates: list[float] = []
        token_rates: list[float] = []
        topped: list[int] = []  # codes added to each round's transit row beyond its issue row's

        def one_round(number: int) -> list[HttpResult]:
            # Reusable server codes for health, issued afresh every round: a server code lives 60 s, and the
            # rounds together last longer (an expired code would be refused early, skipping the work measured).
            codes = asyncio.run(issue_codes(server.base, residents)) if {"health", "event"} & chosen else []
            if number == 1 and codes:
                status, text = sample_answer(server.base, hospital, codes[0], "health")
                print(f"  sample health answer: {status} {text}", flush=True)
            wait_for_quiet(server_pids(server), f"round {number}")
            ping = load(PING_ROW, ping_specs)
            results = [ping]
            # Single-use requests are signed up front: enough for this round's baseline rate over a row.
            planned = _planned(ping.rate, args.warmup + args.duration, gens)
            if "issue" in chosen:
                issue = load(ISSUE_ROW, issue_specs())
                results.append(issue)
            if "transit" in chosen:
                fresh = issue.codes
                if number == 1:
                    status, text = sample_answer(server.base, metro, fresh.pop(), "transit")
                    print(f"  sample transit answer: {status} {text}", flush=True)
                # Transit shows every code once, warm-up included, and may run as fast as issue or faster (or a
                # burst may have slowed this round's issue row): top up, outside any window, so that it never runs
                # dry.
                expected = max(transit_rates, default=issue.rate) * (args.warmup + args.duration) * 1.3 + 200
                topped.append(top_up(fresh, int(expected), issue.rate))
                transit = load(
                    TRANSIT_ROW,
                    [
                        {
                            **common,
                            "kind": "verify",
                            "scene": "transit",
                            **metro,
                            "codes": shard,
                            "cycle": False,
                        }
                        for shard in split(fresh, gens)
                    ],
                )
                transit_rates.append(transit.rate)
                results.append(transit)
            else:
                topped.append(0)
            if "health" in chosen:
                results.append(
                    load(
                        HEALTH_ROW,
                        [
                            {
                                **common,
                                "kind": "verify",
                                "scene": "health",
                                **hospital,
                                "codes": codes,
                                "count": planned,
                                "cycle": False,
                                "tally_reasons": True,
                            }
                        ]
                        * gens,
                    )
                )
            if "event" in chosen:
                if number == 1 and codes:
                    status, text = sample_answer(server.base, venue, codes[0], "event", occasion)
                    print(f"  sample event answer: {status} {text}", flush=True)
                results.append(
                    load(
                        EVENT_ROW,
                        [
                            {
                                **common,
                                "kind": "verify",
                                "scene": "event",
                                "extra": occasion,
                                **venue,
                                "codes": codes,
                                "count": planned,
                                "cycle": False,
                                "tally_reasons": True,
                            }
                        ]
                        * gens,
                    )
                )
            if "device" in chosen:
                results.append(
                    load(
                        DEVICE_ROW,
                        [
                            {
                                **common,
                                "kind": "verify-device",
                                "scene": "health",
                                **hospital,
                                "wallets": shard,
                                "count": planned,
                                "cycle": False,
                                "tally_reasons": True,
                            }
                            for shard in split(wallets, gens)
                        ],
                    )
                )
            if "mini-login" in chosen:
                # Returning residents logging in from the mini-program: each request exchanges a fresh wx.login
                # code with the WeChat sandbox and opens a session; codes are single use, so they are asked for up
                # front, for somewhat more than the fastest round so far could take.
                wanted = int(max(mini_rates, default=1000.0) * (args.warmup + args.duration) * 1.5) + 300
                codes_for_mini = asyncio.run(login_codes(mini, wanted))
                mini_login = load(
                    MINI_ROW,
                    [
                        {
                            **common,
                            "kind": "mini-login",
                            "app_id": mini.app_id,
                            "codes": shard,
                            "cycle": False,
                        }
                        for shard in split(codes_for_mini, gens)
                    ],
                )
                mini_rates.append(mini_login.rate)
                results.append(mini_login)
            if "token" in chosen:
                # Codes are single use and live two minutes: minted now, enough for the row at the best rate seen.
                wanted = int(max(token_rates, default=1500.0) * (args.warmup + args.duration) * 1.5) + 300
                exchanges = asyncio.run(authorization_codes(server.base, residents, one_login, wanted))
                token = load(
                    TOKEN_ROW,
                    [
                        {**common, "kind": "token", **one_login, "exchanges": shard, "cycle": False}
                        for shard in split(exchanges, gens)
                    ],
                )
                token_rates.append(token.rate)
                results.append(token)
            if "tile-open" in chosen:
                results.append(
                    load(
                        OPEN_ROW,
                        [
                            {
                                **common,
                                "kind": "bearer-post",
                                "path": open_path,
                                "tokens": shard,
                                "cycle": True,
                            }
                            for shard in split(tokens, gens)
                        ],
                    )
                )
            if "impressions" in chosen:
                results.append(
                    load(
                        IMPRESSIONS_ROW,
                        [
                            {
                                **common,
                                "kind": "bearer-post",
                                "path": IMPRESSIONS_PATH,
                                "body": shown,
                                "tokens": shard,
                                "cycle": True,
                            }
                            for shard in split(tokens, gens)
                        ],
                    )
                )
            if "home" in chosen:
                results.append(
                    load(
                        HOME_ROW,
                        [
                            {
                                **common,
                                "kind": "bearer-get",
                                "path": HOME_PATH,
                                "tokens": shard,
                                "cycle": True,
                            }
                            for shard in split(tokens, gens)
                        ],
                    )
                )
            if "hold" in chosen:
                # Each hold takes a ticket: requests for somewhat more than the fastest round so far could send,
                # made before the clock starts, in this round's own sessions.
                wanted = int(max(hold_rates, default=1500.0) * (args.warmup + args.duration) * 1.5) + 300
                requests = hold_requests(sales[4 * (number - 1) : 4 * number], tokens, wanted)
                held = load(
                    HOLD_ROW,
                    [
                        {
                            **common,
                            "kind": "bearer-post-bodies",
                            "path": HOLD_PATH,
                            "requests": shard,
                            "cycle": False,
                        }
                        for shard in split(requests, gens)
                    ],
                )
                hold_rates.append(held.rate)
                results.append(held)
            return results

        rounds: list[list[HttpResult]] = []
        for number in range(1, args.http_rounds + 1):
            rounds.append(one_round(number))
            print(_round_line(number, args.http_rounds, rounds[-1], topped[-1]), flush=True)
        # One more ping closes the last round: every round's rows are measured against the mean of the pings on
        # either side of them (its own and the next round's), so a drift of the machine's speed over the seconds
        # of a round (seen here: ping 4,800 to 7,100 req/s in consecutive windows) cancels to first order.
        closing = load(PING_ROW, ping_specs)
        info["rounds"] = rounds
        pings = [results[0] for results in rounds]
        after = [*pings[1:], closing]
        baselines = [(before.rate + later.rate) / 2 for before, later in zip(pings, after, strict=True)]
        rows = [
            HttpRow.combined([results[i] for results in rounds], baselines) for i in range(len(rounds[0]))
        ]
        if args.profile:
            ping_rate = statistics.median(p.rate for p in pings)
            planned = _planned(ping_rate, 1.0 + profile_seconds(args) + 1.0, gens)
            # The login rows spend single-use codes: minted for the profile's run at the best rate measured.
            seconds = 1.0 + profile_seconds(args) + 1.0
            extra: dict[str, list[dict[str, Any]]] = {}
            if "mini-login" in chosen:
                fresh_mini = asyncio.run(login_codes(mini, int(max(mini_rates) * seconds * 1.5) + 300))
                extra["mini-login"] = [
                    {**common, "kind": "mini-login", "app_id": mini.app_id, "codes": shard, "cycle": False}
                    for shard in split(fresh_mini, gens)
                ]
            if "token" in chosen:
                count = int(max(token_rates) * seconds * 1.5) + 300
                exchanges = asyncio.run(authorization_codes(server.base, residents, one_login, count))
                extra["token"] = [
                    {**common, "kind": "token", **one_login, "exchanges": shard, "cycle": False}
                    for shard in split(exchanges, gens)
                ]
            if "hold" in chosen:
                count = int(max(hold_rates) * seconds * 1.5) + 300
                requests = hold_requests(sales[-4:], tokens, count)
                extra["hold"] = [
                    {
                        **common,
                        "kind": "bearer-post-bodies",
                        "path": HOLD_PATH,
                        "requests": shard,
                        "cycle": False,
                    }
                    for shard in split(requests, gens)
                ]
            info["profile"] = profile_server(
                server, args, residents, hospital, planned, work, wallets, chosen, extra
            )
    return rows, info
